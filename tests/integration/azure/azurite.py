"""Azurite (the Azure Storage emulator) for the tests, started by the tests themselves.

``azurite()`` installs the npm package on first use (``npm install --prefix
<repo>/.cache/azurite azurite@3.35``, once per machine; needs Node 20 and npm), starts one
in-memory instance per test process on free ports (``--blobPort 0`` etc.: the ports it binds
are read from its output, so nothing can take them in between) and returns its endpoints and
connection string. It is stopped by the ``azurite_server`` session fixture's teardown, or at
interpreter exit for suites (the contract suites) that only call ``azurite()`` lazily from
their factories. Each test uses its own queue, table and container names, so one instance
serves every test.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PREFIX = REPO / ".cache" / "azurite"
BINARY = PREFIX / "node_modules" / ".bin" / "azurite"
VERSION = "3.35"
ACCOUNT = "devstoreaccount1"
#: The well-known development account key of Azurite and the Storage emulator (public).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(
    r"Azurite (Blob|Queue|Table) service is successfully listening at \S+:(\d+)"
)


@dataclass
class Azurite:
    process: subprocess.Popen[str]
    ports: dict[str, int]
    workdir: tempfile.TemporaryDirectory[str]

    def endpoint(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint={self.endpoint('blob')};QueueEndpoint={self.endpoint('queue')};"
            f"TableEndpoint={self.endpoint('table')};"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.workdir.cleanup()


_lock = threading.Lock()
_instance: Azurite | None = None


def install() -> Path:
    """Install Azurite into ``.cache/azurite`` unless it is there (safe across processes)."""
    if BINARY.exists():
        return BINARY
    PREFIX.mkdir(parents=True, exist_ok=True)
    with (PREFIX / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not BINARY.exists():
            subprocess.run(
                [
                    *("npm", "install", "--prefix", str(PREFIX), f"azurite@{VERSION}"),
                    *("--no-audit", "--no-fund", "--loglevel=error"),
                ],
                check=True,
                timeout=600,
            )
    return BINARY


def _die_with_parent() -> Callable[[], None] | None:
    """Ask Linux to SIGTERM the emulator when the spawning thread dies -- only from the main
    thread, which lives as long as the test process (a worker thread may end any time)."""
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no orphaned emulator if pytest dies

    return preexec


def _drain(process: subprocess.Popen[str]) -> None:
    """Keep reading the emulator's output, so that a full pipe never blocks it."""
    with contextlib.suppress(ValueError, OSError):
        for _ in process.stdout or ():
            pass


def _start() -> Azurite:
    binary = install()
    workdir = tempfile.TemporaryDirectory(prefix="azurite-")
    args = [str(binary), "--inMemoryPersistence", "--skipApiVersionCheck", "--silent"]
    args += ["--disableTelemetry"]
    for service in ("blob", "queue", "table"):
        args += [f"--{service}Host", "127.0.0.1", f"--{service}Port", "0"]
    process = subprocess.Popen(
        args,
        cwd=workdir.name,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_die_with_parent(),
    )
    assert process.stdout is not None
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 60
    output: list[str] = []
    while len(ports) < 3:
        line = process.stdout.readline()
        if not line or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("Azurite did not start:\n" + "".join(output[-20:]))
        output.append(line)
        match = _LISTENING.search(line)
        if match:
            ports[match.group(1).lower()] = int(match.group(2))
    threading.Thread(target=_drain, args=(process,), daemon=True).start()
    return Azurite(process, ports, workdir)


def azurite() -> Azurite:
    """The running Azurite of this process, started (and installed) on first use."""
    global _instance
    with _lock:
        if _instance is None or _instance.process.poll() is not None:
            _instance = _start()
            atexit.register(stop)
        return _instance


def stop() -> None:
    global _instance
    with _lock:
        if _instance is not None:
            with contextlib.suppress(OSError):
                _instance.stop()
            _instance = None


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[Azurite]:
    """Azurite for the whole session; stopped at its end."""
    yield azurite()
    stop()


__all__ = ["ACCOUNT", "KEY", "Azurite", "azurite", "azurite_server", "install", "stop"]
