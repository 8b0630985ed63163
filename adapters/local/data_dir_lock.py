"""One control plane per local data directory: an exclusive ``flock`` on ``<data_dir>/lock``.

Why
    The embedded control plane (``skycrawl up``, or the stack a ``skycrawl crawl`` embeds) runs
    housekeeping over the data directory's state, and its ``SubprocessRuntime`` knows only the
    containers it started itself. Two of them on one data directory would each reap the other's
    containers as "lost by the runtime" and run their crawls again, with their own settings.

Features
    ``DataDirLock.acquire`` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<data_dir>/lock`` and
    writes the holder into it as JSON: ``{"pid", "command", "started_at"}``. The lock lives as
    long as the open file: ``release()`` (or the process ending, however it ends, ``kill -9``
    included) frees it, so a lock file left by a dead process never blocks. The file itself is
    left in place (removing it would race with a newcomer that already opened it); its content
    is only information. A process that finds the lock held gets ``DataDirBusy`` naming the
    holder, e.g. ``data dir .skycrawl is in use by pid 1234 (skycrawl up, since 07:30:12)``.

Limits
    ``flock`` is advisory and local: it protects against other skycrawl processes on this
    machine, not against a data directory on a network file system shared between machines
    (NFS may not implement ``flock`` across clients). The lock is not inherited by engine
    subprocesses (the descriptor is close-on-exec), which never take it: they only use the
    bus and blob files, which are safe for several processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core.errors import Conflict

LOCK_FILE = "lock"


@dataclass(frozen=True)
class LockHolder:
    """Who holds a data directory, as written in its lock file."""

    pid: int | None
    command: str
    started_at: datetime | None

    def describe(self) -> str:
        """``pid 1234 (skycrawl up, since 07:30:12)``; the date too when it is not today."""
        if self.pid is None:
            return "another process"
        if self.started_at is None:
            return f"pid {self.pid} ({self.command})"
        local = self.started_at.astimezone()
        today = datetime.now().astimezone().date()
        when = local.strftime("%H:%M:%S" if local.date() == today else "%Y-%m-%d %H:%M:%S")
        return f"pid {self.pid} ({self.command}, since {when})"


class DataDirBusy(Conflict):
    """Another live process holds the data directory."""

    def __init__(self, data_dir: Path, holder: LockHolder) -> None:
        super().__init__(f"data dir {data_dir} is in use by {holder.describe()}")
        self.data_dir = data_dir
        self.holder = holder


def read_holder(data_dir: Path) -> LockHolder:
    """The holder recorded in ``data_dir``'s lock file (whether or not it still holds it)."""
    try:
        info = json.loads((data_dir / LOCK_FILE).read_text())
        started = info.get("started_at")
        return LockHolder(
            pid=int(info["pid"]),
            command=str(info.get("command") or "skycrawl"),
            started_at=datetime.fromisoformat(started) if started else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return LockHolder(pid=None, command="", started_at=None)


class DataDirLock:
    """The exclusive lock of one data directory, held until ``release()`` or process exit."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path, command: str, *, shown_as: Path | None = None) -> DataDirLock:
        """Lock ``data_dir`` for this process, or raise ``DataDirBusy`` naming the holder.

        ``shown_as`` is how the directory is named in the error (default: as given)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirBusy(shown_as or data_dir, _wait_for_holder(data_dir)) from None
        except BaseException:
            os.close(fd)
            raise
        record = {
            "pid": os.getpid(),
            "command": command,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        return cls(data_dir, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock (idempotent). The file stays; its content names the last holder."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _wait_for_holder(data_dir: Path) -> LockHolder:
    """The holder's record; a holder that locked a moment ago may not have written it yet."""
    deadline = time.monotonic() + 1.0
    holder = read_holder(data_dir)
    while holder.pid is None and time.monotonic() < deadline:
        time.sleep(0.05)
        holder = read_holder(data_dir)
    return holder
