"""Local ContainerRuntime: each "container" is a subprocess of the process that started it.

Features
    ``start_container`` runs ``command`` (default ``python -m engine_container``) with this
    process's environment plus ``spec.env`` plus ``SKYCRAWL_CONTAINER_ID`` (the GUID),
    ``SKYCRAWL_TENANT_ID``, ``SKYCRAWL_EGRESS_NAME`` and, for an egress with a proxy,
    ``SKYCRAWL_PROXY_URL``. ``spec.image`` is ignored. Output goes to ``<log_dir>/<GUID>.log``.
    Starting a GUID that is still running is a no-op; one that exited is started afresh.
    ``stop_container`` sends SIGTERM to the child's process group, waits up to ``grace_s``
    (at most 300 s), then SIGKILLs the group and reaps it. ``describe`` reports ``running``,
    ``exited`` with the exit code (a signal N is reported as 128+N, as Docker does) or
    ``unknown`` for a GUID this instance never started. ``list_running(egress=...)`` lists
    the running children started for that egress (several egresses may share one runtime).

No orphans
    Every child runs in its own session / process group, so a terminal's Ctrl-C reaches only
    the parent, which then stops its children: ``close()`` does (it is what ``Ports.close``
    calls), and so does an ``atexit`` hook for a parent that exits without closing. On Linux
    each child also asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGTERM)``) for a SIGTERM when
    its parent dies, which covers ``kill -9`` of the parent. The kernel sends it when the
    *thread* that spawned the child ends, so children are spawned on the event-loop thread
    (a fork/exec of a few milliseconds; every wait runs in a worker thread): keep the loop
    running for as long as the containers should live. Grandchildren are covered by the group
    kill of ``stop_container`` / ``close()`` but not by the death signal.

Pid files
    While a child runs, ``<log_dir>/<GUID>.pid`` holds JSON ``{"container_id", "pid", "pgid",
    "parent_pid", "started_at", "command"}``; it is removed once the child is reaped. A pid
    file whose ``parent_pid`` is gone names a possible stray: an operator (or a later process)
    can check that ``pgid`` still exists and ``kill -TERM -<pgid>`` it.

Limits
    Containers live and die with the parent process; another process's runtime sees them as
    ``unknown``. GUIDs are 1-128 letters, digits, ``_`` or ``-`` (they name files).

Settings
    ``SKYCRAWL_LOCAL_DATA_DIR`` (logs and pid files in ``<data_dir>/logs``),
    ``SKYCRAWL_LOCAL_PYTHON`` (interpreter of the engine), ``SKYCRAWL_STOP_GRACE_S``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.clock import Clock, SystemClock
from core.errors import ConfigurationError, InvalidRequest
from core.models import Egress
from core.ports.container_runtime import (
    ContainerSpec,
    ContainerStatus,
    RunState,
    RuntimeCapabilities,
)

_PR_SET_PDEATHSIG = 1
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def _death_signal_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies (else None)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class _Child:
    spec: ContainerSpec
    process: subprocess.Popen[bytes]
    pid_file: Path
    log_file: Path


class SubprocessRuntime:
    """ContainerRuntime running each container as a child process group."""

    capabilities = RuntimeCapabilities(
        name="subprocess", typical_start_s=1.0, max_grace_s=300.0, graceful_stop=True
    )

    def __init__(
        self,
        *,
        command: Sequence[str] = (sys.executable, "-m", "engine_container"),
        log_dir: Path,
        clock: Clock | None = None,
        close_grace_s: float = 5.0,
    ) -> None:
        self._command = tuple(command)
        self.log_dir = log_dir
        self._clock: Clock = clock or SystemClock()
        self._close_grace_s = close_grace_s
        self._children: dict[str, _Child] = {}
        self._hooked = False

    def _environment(self, spec: ContainerSpec) -> dict[str, str]:
        env = {**os.environ, **spec.env}
        env["SKYCRAWL_CONTAINER_ID"] = spec.container_id
        env["SKYCRAWL_TENANT_ID"] = spec.tenant_id
        env["SKYCRAWL_EGRESS_NAME"] = spec.egress.name
        if spec.egress.proxy_url:
            env["SKYCRAWL_PROXY_URL"] = spec.egress.proxy_url
        for name in ("SKYCRAWL_PROXY_URL", "SKYCRAWL_PROXY_URLS"):
            if name not in spec.env and not (
                name == "SKYCRAWL_PROXY_URL" and spec.egress.proxy_url
            ):
                env.pop(name, None)  # never a proxy of this process's own environment
        return env

    async def start_container(self, *, spec: ContainerSpec) -> None:
        if not _CONTAINER_ID.fullmatch(spec.container_id):
            raise InvalidRequest(f"invalid container id {spec.container_id!r}")
        known = self._children.get(spec.container_id)
        if known is not None and known.process.poll() is None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.log_dir / f"{spec.container_id}.log"
        # Spawned on the loop thread on purpose: PR_SET_PDEATHSIG follows the spawning thread.
        try:
            with log_file.open("ab") as log:
                process = subprocess.Popen(  # noqa: ASYNC220 - a spawn, not a wait
                    self._command,
                    env=self._environment(spec),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_death_signal_preexec(),
                )
        except OSError as exc:
            raise ConfigurationError(f"cannot start {self._command[0]!r}: {exc}") from exc
        # reap the child the moment it exits, so none is left <defunct> under ``skycrawl up``
        # while nobody asks about it (Popen.wait is thread-safe; poll() then sees the code)
        threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
        pid_file = self.log_dir / f"{spec.container_id}.pid"
        child = _Child(spec, process, pid_file, log_file)
        self._children[spec.container_id] = child
        self._write_pid_file(child)
        if not self._hooked:
            atexit.register(self._stop_all_now)
            self._hooked = True

    def _write_pid_file(self, child: _Child) -> None:
        record = {
            "container_id": child.spec.container_id,
            "pid": child.process.pid,
            "pgid": child.process.pid,
            "parent_pid": os.getpid(),
            "started_at": self._clock.now().isoformat(),
            "command": list(self._command),
        }
        child.pid_file.write_text(json.dumps(record))

    async def stop_container(
        self, *, container_id: str, egress: Egress, grace_s: float = 10
    ) -> None:
        child = self._children.get(container_id)
        if child is None:
            return
        process = child.process
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            grace = min(max(grace_s, 0.0), self.capabilities.max_grace_s)
            try:
                await asyncio.to_thread(process.wait, grace)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                await asyncio.to_thread(process.wait)
            _signal_group(process.pid, signal.SIGKILL)  # whatever is left of the group
        child.pid_file.unlink(missing_ok=True)

    async def describe(self, *, container_id: str, egress: Egress) -> ContainerStatus:
        child = self._children.get(container_id)
        if child is None:
            return ContainerStatus(container_id, RunState.unknown, detail="not started here")
        return self._status(child)

    def _status(self, child: _Child) -> ContainerStatus:
        returncode = child.process.poll()
        container_id = child.spec.container_id
        if returncode is None:
            return ContainerStatus(
                container_id, RunState.running, detail=f"pid {child.process.pid}"
            )
        child.pid_file.unlink(missing_ok=True)
        return ContainerStatus(
            container_id, RunState.exited, _exit_code(returncode), f"log: {child.log_file}"
        )

    async def list_running(self, *, egress: Egress) -> list[ContainerStatus]:
        mine = [c for c in self._children.values() if c.spec.egress.name == egress.name]
        statuses = [self._status(child) for child in mine]
        return [status for status in statuses if status.state is RunState.running]

    async def close(self) -> None:
        running = [c for c in self._children.values() if c.process.poll() is None]
        await asyncio.gather(
            *(
                self.stop_container(
                    container_id=c.spec.container_id,
                    egress=c.spec.egress,
                    grace_s=self._close_grace_s,
                )
                for c in running
            )
        )
        for child in self._children.values():
            child.pid_file.unlink(missing_ok=True)
        if self._hooked:
            atexit.unregister(self._stop_all_now)
            self._hooked = False

    def _stop_all_now(self) -> None:
        """The ``atexit`` hook: SIGTERM every group, wait out the grace, SIGKILL the rest."""
        running = [c for c in self._children.values() if c.process.poll() is None]
        for child in running:
            _signal_group(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._close_grace_s
        for child in running:
            try:
                child.process.wait(max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                _signal_group(child.process.pid, signal.SIGKILL)
                child.process.wait()
            _signal_group(child.process.pid, signal.SIGKILL)
            child.pid_file.unlink(missing_ok=True)
