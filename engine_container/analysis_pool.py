"""Where ``analysis.analyse`` runs: worker processes on a multi-core container, else threads.

``AnalysisPool(processes=N)`` with N ≥ 1 keeps N worker processes
(``engine_container.analysis_worker``, children of the engine): the event loop keeps the
network, the frontier and the WARC writer, and the CPU-bound work of every crawl of the
container — parsing, markdown, metadata, extraction, handlers — is spread over the cores, each
page to the worker with the fewest waiting. Jobs go down a worker's stdin and analyses come
back up its stdout, one pickle frame each (~15 KB and ~10 KB a page: tens of microseconds).
Plain pipes, not ``multiprocessing``: a ``ProcessPoolExecutor`` needs a forkserver (forking the
threaded engine is unsafe) and a resource tracker, two more processes that held ~27 MB of the
~150 MB summed RSS of a 5,000-page crawl with one worker (measured, ``bench/crawl_bench.py``);
what they bought -- the libraries preloaded once for N ≥ 2 workers -- is shared anyway where it
matters, as the libraries' code pages are mapped from the same files.

The processes start only once the container has analysed ``warmup_jobs`` pages (100 by
default), in a thread, while pages go on being analysed in threads: a small crawl (a test,
a demo, a re-crawl of a few pages) never pays ~0.5 s of CPU and ~40 MB per worker for
them, and the event loop never waits for a worker to start. Unset, N is one per core but
the one the event loop keeps (``default_processes``). With N = 0 (one core, or
``SKYCRAWL_ANALYSIS_PROCESSES=0``) pages are analysed in a worker thread (Lexbor releases the
GIL), or in the event loop when they are small and the crawl asks for no formats, extraction
or handler — rendering formats there would hold the loop for milliseconds, and a request
whose politeness slot was granted would then leave late, closer to the next one than the
host's delay allows. Rendering in a thread still costs the loop some GIL waits: under CPU
contention a request can reach the server a few tens of milliseconds closer to the previous
one than the delay (the limiter spaces the starts it grants; README "What a crawl returns").

Workers exit by themselves when the engine process is gone (SIGKILL included: their stdin
ends, and they watch its pidfd too). A worker that dies (killed for memory on a pathological
page) ends the pool: the pages it held are recorded with ``internal error: AnalysisDied:
analysis worker died``, the next pages go to threads, and a new pool is started after the
next ``warmup_jobs`` pages.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import pickle
import site
import sys
from pathlib import Path
from typing import Any

from engine_container.analysis import Analysis, Job, analyse
from engine_container.analysis_worker import HEADER, frame

log = logging.getLogger(__name__)

#: Where the worker imports this very package from: where the engine did, whatever the
#: working directory or the way the engine was started.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
#: ... unless that is site-packages, which the worker has anyway (and which must not come
#: before the standard library, as a PYTHONPATH entry would)
_SITE_DIRS = frozenset(str(Path(p).resolve()) for p in site.getsitepackages())
INLINE_BYTES = 4096  # thread mode: small bodies of crawls without formats stay in the loop
WARMUP_JOBS = 100


class AnalysisDied(RuntimeError):
    """The worker process analysing a page died."""


def default_processes() -> int:
    """One worker per core this process may run on but one, none on a single core.

    The event loop keeps a core of its own (network, frontier, WARC writing: ~0.6 of a core
    at 500 pages/s). On 2 cores one worker crawled as fast as two (5,000 pages, default
    formats, interleaved rounds, medians 489 and 466 pages/s at load 1.6-2.1, 2026-12-04)
    with 40 MB less summed RSS (211 against 250 MB): the second worker only competed with
    the loop for the same two cores.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(0, cores - 1)


class _Worker:
    """One ``engine_container.analysis_worker`` process, its jobs answered in order."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        self.proc = proc
        self._stdin, self._stdout = proc.stdin, proc.stdout
        self._waiting: collections.deque[asyncio.Future[Analysis]] = collections.deque()
        self._reader: asyncio.Task[None] | None = None
        self.dead = False

    @classmethod
    async def start(cls) -> _Worker:
        env = dict(os.environ)
        if _PACKAGE_ROOT not in _SITE_DIRS:  # a checkout, not an installed package: name it
            path = env.get("PYTHONPATH")
            env["PYTHONPATH"] = os.pathsep.join((_PACKAGE_ROOT, path) if path else (_PACKAGE_ROOT,))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "engine_container.analysis_worker",
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        worker = cls(proc)
        try:
            ready = await worker._read_frame()
            if ready is None:
                raise AnalysisDied("analysis worker exited before it was ready")
        except BaseException:
            await worker.close()
            raise
        worker._reader = asyncio.create_task(worker._answers())
        return worker

    @property
    def load(self) -> int:
        return len(self._waiting)

    async def run(self, job: Job) -> Analysis:
        if self.dead:
            raise AnalysisDied("analysis worker died")
        answer: asyncio.Future[Analysis] = asyncio.get_running_loop().create_future()
        self._waiting.append(answer)
        self._stdin.write(frame(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._stdin.drain()  # if it died, the reader fails every waiting job
        return await answer

    async def _read_frame(self) -> Any:
        try:
            (size,) = HEADER.unpack(await self._stdout.readexactly(HEADER.size))
            # from our own child, over its private pipe: the trust multiprocessing assumes
            ok, value = pickle.loads(await self._stdout.readexactly(size))  # noqa: S301
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        if not ok:
            raise value
        return value

    async def _answers(self) -> None:
        try:
            while True:
                try:
                    value = await self._read_frame()
                except Exception as exc:  # the job raised: its answer is that error
                    failed = self._waiting.popleft()
                    if not failed.done():  # unless its page was cancelled meanwhile
                        failed.set_exception(exc)
                    continue
                if value is None:
                    break
                answer = self._waiting.popleft()
                if not answer.done():
                    answer.set_result(value)
        finally:  # the worker is gone (or this reader broke): no page waits for it forever
            self.dead = True
            while self._waiting:
                answer = self._waiting.popleft()
                if not answer.done():
                    answer.set_exception(AnalysisDied("analysis worker died"))

    async def close(self) -> None:
        """End its stdin (it exits after its job), wait a little, then kill it."""
        self.dead = True
        with contextlib.suppress(Exception):
            self._stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class AnalysisPool:
    def __init__(self, processes: int = 0, *, warmup_jobs: int = WARMUP_JOBS) -> None:
        self.processes = processes
        self.remote_jobs = 0  # pages analysed in worker processes (for tests and logs)
        self._warmup = warmup_jobs
        self._jobs = 0
        self._workers: list[_Worker] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()  # a dead pool's workers, stopping

    async def start(self) -> None:
        """Start the worker processes now (and wait until each one answers)."""
        if self.processes <= 0 or self._workers is not None:
            return
        if self._starting is None:
            self._starting = asyncio.create_task(self._warm())
        await asyncio.shield(self._starting)

    async def _warm(self) -> None:
        started = await asyncio.gather(
            *(_Worker.start() for _ in range(self.processes)), return_exceptions=True
        )
        workers = [w for w in started if isinstance(w, _Worker)]
        failed = [e for e in started if isinstance(e, BaseException)]
        if failed:
            await asyncio.gather(*(w.close() for w in workers))
            raise failed[0]
        self._workers = workers
        log.info("analysis: %d worker processes", self.processes)

    async def run(self, job: Job) -> Analysis:
        self._jobs += 1
        workers = self._workers
        if workers is None:
            if self.processes > 0 and self._starting is None and self._jobs > self._warmup:
                self._starting = asyncio.create_task(self._warm())
            if len(job.body) < INLINE_BYTES and job.plan.cheap:
                return analyse(job)  # hash and links of a small page: cheaper than a thread hop
            return await asyncio.to_thread(analyse, job)
        worker = min(workers, key=lambda w: w.load)
        try:
            analysis = await worker.run(job)
        except AnalysisDied:
            if self._workers is workers:
                log.error("an analysis worker died on %s; threads until a new pool", job.url)
                self._workers, self._starting, self._jobs = None, None, 0
                for other in workers:  # kept until done: ``close`` waits for them too
                    task = asyncio.get_running_loop().create_task(other.close())
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)
            raise
        self.remote_jobs += 1
        return analysis

    async def close(self) -> None:
        """Stop the workers (waiting for a pool still starting, so no process is left)."""
        if self._starting is not None:
            try:
                await asyncio.shield(self._starting)
            except Exception:
                log.exception("analysis: the worker processes did not start")
        if self._workers is not None:
            workers, self._workers = self._workers, None
            await asyncio.gather(*(w.close() for w in workers))
        await asyncio.gather(*self._closing)
