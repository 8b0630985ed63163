"""Google's emulators for the GCP tests, started on demand, once per test session.

``pubsub_host()`` and ``firestore_host()`` start ``gcloud beta emulators pubsub start`` /
``gcloud emulators firestore start`` on free ports of 127.0.0.1 (the first call starts both in
the background, since a test that needs one usually needs the other), wait until each answers
HTTP, and return ``host:port``. Each emulator runs in its own process group, is asked to die
with this process (``PR_SET_PDEATHSIG``) and is killed, group and all, by ``stop_all()`` --
called by the session fixture in ``tests/integration/gcp/conftest.py`` and, as a fallback, at
interpreter exit. Nothing here touches ``os.environ`` except ``firestore_client`` (see there).

Contract factories call these lazily (at collection time nothing starts). Both emulators keep
their data in memory: tests isolate themselves by unique names (or a unique project).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT = "skycrawl-test"
START_TIMEOUT_S = 90.0
LOG_DIR = Path(tempfile.gettempdir()) / "skycrawl-emulators"

COMMANDS = {
    "pubsub": ["gcloud", "beta", "emulators", "pubsub", "start", "--quiet"],
    "firestore": ["gcloud", "emulators", "firestore", "start", "--quiet"],
}


@dataclass
class Emulator:
    kind: str
    host: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # java children included
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


_lock = threading.Lock()
_started: dict[str, Emulator] = {}
_ready: dict[str, threading.Event] = {}
_errors: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _launch(kind: str) -> Emulator:
    host = f"127.0.0.1:{free_port()}"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{kind}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*COMMANDS[kind], f"--host-port={host}"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    return Emulator(kind, host, process, log)


def _answers(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _wait(emulator: Emulator) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if emulator.process.poll() is not None:
            raise RuntimeError(f"{emulator.kind} emulator exited; see {emulator.log}")
        if _answers(emulator.host):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{emulator.kind} emulator not up in {START_TIMEOUT_S}s; see {emulator.log}")


def _start_all() -> None:
    """Launch every emulator not launched yet; readiness is awaited in the background."""
    with _lock:
        for kind in COMMANDS:
            if kind in _ready:
                continue
            _ready[kind] = threading.Event()
            emulator = _launch(kind)
            _started[kind] = emulator

            def wait(emulator: Emulator = emulator) -> None:
                try:
                    _wait(emulator)
                except RuntimeError as exc:
                    _errors[emulator.kind] = str(exc)
                _ready[emulator.kind].set()

            threading.Thread(target=wait, name=f"{kind}-emulator", daemon=True).start()


def host(kind: str) -> str:
    """``host:port`` of the running ``kind`` emulator, starting it (and the others) if needed."""
    _start_all()
    if not _ready[kind].wait(START_TIMEOUT_S + 5) or kind in _errors:
        raise RuntimeError(_errors.get(kind, f"{kind} emulator did not start"))
    return _started[kind].host


def pubsub_host() -> str:
    return host("pubsub")


def firestore_host() -> str:
    return host("firestore")


def stop_all() -> None:
    with _lock:
        for emulator in _started.values():
            emulator.stop()
        _started.clear()
        _ready.clear()
        _errors.clear()


atexit.register(stop_all)

_env_lock = threading.Lock()


def firestore_client(project: str = PROJECT) -> Any:
    """A ``firestore.AsyncClient`` on the emulator. The library selects its emulator channel
    only from ``FIRESTORE_EMULATOR_HOST`` at construction, so the variable is set for the
    duration of the constructor alone (under a lock) and restored: other tests see nothing."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    target = firestore_host()
    with _env_lock:
        previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
        os.environ["FIRESTORE_EMULATOR_HOST"] = target
        try:
            return firestore.AsyncClient(project=project, credentials=AnonymousCredentials())
        finally:
            if previous is None:
                del os.environ["FIRESTORE_EMULATOR_HOST"]
            else:
                os.environ["FIRESTORE_EMULATOR_HOST"] = previous
