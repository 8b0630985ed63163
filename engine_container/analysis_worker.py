"""One analysis worker process: ``python -m engine_container.analysis_worker``.

Started by ``engine_container.analysis_pool``. It reads jobs from its stdin and writes their
analyses to its stdout, one frame each (a 4-byte big-endian length, then a pickle), in the
order the jobs came; the first frame it writes says it is ready (the parsing libraries
imported). A job that raises is answered with the exception. User code run here (handlers)
cannot write into the protocol: the frames use copies of the two descriptors, and fd 0 / fd 1
are pointed at ``/dev/null`` and stderr.

It exits when its stdin ends -- the pool closed it, or the engine is gone (even by SIGKILL:
the kernel closes the pipe) -- and, as a second guard, when the engine process has exited.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import sys
import threading
import time
from typing import IO, Any

HEADER = struct.Struct(">I")


def read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame's payload, or None at the end of the stream."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    payload = stream.read(size)
    return payload if len(payload) == size else None


def frame(payload: bytes) -> bytes:
    """``payload`` as one frame."""
    return HEADER.pack(len(payload)) + payload


def picklable(exc: BaseException) -> BaseException:
    """``exc`` itself if it survives a pickle round trip, else a RuntimeError naming it (a
    handler's own exception class may not be importable, or picklable, in the engine)."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 (its own bytes)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def exit_with(pid: int) -> None:
    """Exit this process once process ``pid`` has exited (blocks until then)."""
    try:
        fd = os.pidfd_open(pid)  # Linux ≥ 5.3: readable once the process has exited
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
    else:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                continue
    os._exit(0)


def _protocol_streams() -> tuple[IO[bytes], IO[bytes]]:
    jobs = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    answers = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # a print() of user code goes to the log, not into a frame
    return jobs, answers


def main(engine_pid: int) -> None:
    jobs, answers = _protocol_streams()
    from engine_container.analysis import analyse
    from engine_container.tuning import tune_process

    tune_process()
    threading.Thread(target=exit_with, args=(engine_pid,), daemon=True).start()
    answers.write(frame(pickle.dumps((True, os.getpid()))))
    answers.flush()
    while (payload := read_frame(jobs)) is not None:
        answer: tuple[bool, Any]
        try:
            job = pickle.loads(payload)  # noqa: S301 (from the engine, its parent, over a pipe)
            answer = (True, analyse(job))
        except Exception as exc:  # the engine records it as the page's internal error
            answer = (False, picklable(exc))
        answers.write(frame(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)))
        answers.flush()


if __name__ == "__main__":
    main(int(sys.argv[1]))
