"""Helpers for tests that run the ``skycrawl`` command as a user does: a subprocess, and a
small test site served on 127.0.0.1 by the test itself."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx

SKYCRAWL = [sys.executable, "-m", "functions.local.cli"]
ROOT = Path(__file__).parents[2]


def cli_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SKYCRAWL_LOCAL_DATA_DIR", None)
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SKYCRAWL, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=cli_env()
    )


class _Site(BaseHTTPRequestHandler):
    """``/`` and ``/p/<n>``: with ``pages`` set, ``/`` links to every page and there are
    exactly ``pages`` of them; without, every page links to five new ones (no end)."""

    pages: ClassVar[int | None] = None
    delay_s: ClassVar[float] = 0.0
    served: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        if self.path == "/robots.txt":
            self._send(b"User-agent: *\nAllow: /\n", "text/plain")
            return
        time.sleep(self.delay_s)
        n = 0 if self.path == "/" else int(self.path.rsplit("/", 1)[-1] or 0)
        if self.pages is not None:
            targets = range(1, self.pages) if n == 0 else range(0)
        else:
            targets = range(5 * n + 1, 5 * n + 6)
        links = b"".join(b'<a href="/p/%d">p%d</a>' % (t, t) for t in targets)
        self.served.append(self.path)
        self._send(b"<html><title>p%d</title><body>%s</body></html>" % (n, links), "text/html")

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        return  # a crawler that hung up (cancelled, interrupted) is not the test's failure


@dataclass
class LocalSite:
    url: str  # the root, http://127.0.0.1:<port>/
    served: list[str]  # paths of the pages served so far (robots.txt not counted)


@contextlib.contextmanager
def serve_site(pages: int | None = None, delay_s: float = 0.0) -> Iterator[LocalSite]:
    """Serve the test site on 127.0.0.1 while the block runs."""
    served: list[str] = []
    handler = type("Site", (_Site,), {"pages": pages, "delay_s": delay_s, "served": served})
    server = _QuietServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalSite(f"http://127.0.0.1:{server.server_address[1]}/", served)
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SKYCRAWL, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )


@contextlib.contextmanager
def skycrawl_up(cwd: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A real ``skycrawl up`` on ``cwd/.skycrawl`` (loopback allowed, idle TTL 2 s) while the
    block runs; yields the process and its URL."""
    port = free_port()
    args = ["up", "--port", str(port), "--allow-cidr", "127.0.0.0/8", "--idle-ttl", "2", *extra]
    proc = start_cli(args, cwd)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1, trust_env=False).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError(f"skycrawl up did not come up: {proc.communicate()[1]}")
    try:
        yield proc, url
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def engine_processes(data_dir: Path) -> list[int]:
    """Pids of live engine processes working on ``data_dir`` (found by their environment)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if (
            state != "Z"
            and f"SKYCRAWL_LOCAL_DATA_DIR={data_dir.resolve()}".encode() in environ
            and b"SKYCRAWL_CONTAINER_ID" in environ
        ):
            pids.append(int(proc.name))
    return pids
