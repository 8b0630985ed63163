"""The ``skycrawl`` command as a user runs it: the demo, errors, and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from functions.local.demo_site import build_pages

pytestmark = pytest.mark.e2e
SKYCRAWL = [sys.executable, "-m", "functions.local.cli"]


def _run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SKYCRAWL, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )


def test_demo_crawls_the_bundled_site_and_scales_to_zero(tmp_path: Path) -> None:
    result = _run(["demo"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout
    assert "scaled to zero" in result.stderr
    rows = [json.loads(line) for line in (tmp_path / "skycrawl-out" / "pages.jsonl").open()]
    ok = {r["url"].split("/", 3)[3] for r in rows if r["status"] == 200}
    expected = ({p.lstrip("/") for p in build_pages()} | {"old-about"}) - {"private/stock"}
    assert ok == expected, "every page but the robots-disallowed one was fetched"
    blocked = [r for r in rows if r["url"].endswith("/private/stock")]
    assert blocked[0]["error"] == "disallowed by robots.txt"
    assert (tmp_path / "skycrawl-out" / "crawl.warc.gz").stat().st_size > 10_000
    assert not list(tmp_path.glob(".skycrawl/logs/*.pid")), "no container left running"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["crawl", "ftp://example.com/"], "only http and https"),
        (["crawl", "http://169.254.169.254/latest/meta-data/"], "metadata"),
        (["crawl", "http://127.0.0.1:9/"], "refused"),
        (["crawl", "https://example.com/", "--max-pages", "0"], "max_pages"),
        (["crawl"], "the following arguments are required"),
        (["nonsense"], "invalid choice"),
        (["tenants", "delete", "tn_does_not_exist"], "no tenant"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    result = _run(args, tmp_path, timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle.lower() in lines[0].lower()
    assert "Traceback" not in result.stderr


def _engine_processes(data_dir: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if (
            f"SKYCRAWL_LOCAL_DATA_DIR={data_dir}".encode() in environ
            and b"SKYCRAWL_CONTAINER_ID" in environ
        ):
            pids.append(int(proc.name))
    return pids


def test_ctrl_c_leaves_no_container_behind(tmp_path: Path) -> None:
    """Interrupt a crawl of a slow site: the CLI exits 130 and its containers are gone."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(0.2)
            body = b"".join(
                b'<a href="/%d">x</a>' % (hash(self.path + str(i)) % 10**6) for i in range(5)
            )
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    data_dir = (tmp_path / ".skycrawl").resolve()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        proc = subprocess.Popen(
            [*SKYCRAWL, "crawl", url, "--allow-cidr", "127.0.0.0/8", "--max-pages", "10000"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _engine_processes(data_dir):
            time.sleep(0.2)
        assert _engine_processes(data_dir), "a container was started"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _engine_processes(data_dir):
            time.sleep(0.2)
        assert _engine_processes(data_dir) == []
    finally:
        server.shutdown()
