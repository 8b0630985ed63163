"""One control plane per data directory: a second ``skycrawl up`` refuses, a crawl uses the
running server, and the first server's crawls are not disturbed (issue 9, hole 5)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cli_support import (
    SKYCRAWL,
    cli_env,
    free_port,
    run_cli,
    serve_site,
    skycrawl_up,
    start_cli,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    with skycrawl_up(tmp_path) as running:
        yield running


def test_a_second_up_refuses_and_the_first_keeps_crawling(
    tmp_path: Path, server: tuple[subprocess.Popen[str], str]
) -> None:
    first, _ = server
    with serve_site(pages=60, delay_s=0.02) as site:
        crawl = subprocess.Popen(
            [*SKYCRAWL, "crawl", site.url, "--max-pages", "60", "--out", "out"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        time.sleep(1.5)  # the crawl is running in the first server's container
        second = run_cli(["up", "--port", str(free_port())], tmp_path, timeout=30)
        assert second.returncode == 2, second.stderr
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, second.stderr
        assert f"in use by pid {first.pid} (skycrawl up, since " in lines[0]
        _, stderr = crawl.communicate(timeout=120)
    assert crawl.returncode == 0, stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "pages.jsonl").open()]
    assert len(rows) == 60
    assert [r for r in rows if r["status"] != 200] == [], "every page fetched"
    assert first.poll() is None, "the first server still runs"


def test_a_crawl_while_the_server_holds_the_dir_goes_through_it(
    tmp_path: Path, server: tuple[subprocess.Popen[str], str]
) -> None:
    first, url = server
    logs = tmp_path / ".skycrawl" / "logs"
    owners: set[int] = set()
    with serve_site(pages=20, delay_s=0.1) as site:
        crawl = start_cli(["crawl", site.url, "--out", "out"], tmp_path)
        while crawl.poll() is None:  # while it runs, see who started its container
            owners |= {json.loads(p.read_text())["parent_pid"] for p in logs.glob("*.pid")}
            time.sleep(0.1)
        _, stderr = crawl.communicate()
    assert crawl.returncode == 0, stderr
    assert f"using the running server on {url}" in stderr
    assert "in use" not in stderr
    assert owners == {first.pid}, "the container belongs to the server, not to the CLI"
    assert len((tmp_path / "out" / "pages.jsonl").read_text().splitlines()) == 20


def test_an_ephemeral_crawl_holds_the_dir_against_up(tmp_path: Path) -> None:
    # slow pages (400 x 0.5 s): the crawl outlives the three other commands even on a busy
    # machine, and is stopped at the end
    with serve_site(pages=400, delay_s=0.5) as site:
        crawl = subprocess.Popen(
            [*SKYCRAWL, "crawl", site.url, "--allow-cidr", "127.0.0.0/8", "--max-pages", "400"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        try:
            lock = tmp_path / ".skycrawl" / "lock"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (lock.exists() and lock.read_text()):
                time.sleep(0.1)
            for args in (["up", "--port", str(free_port())], ["tenants", "create", "x"]):
                other = run_cli(args, tmp_path, timeout=30)
                assert other.returncode == 2, other.stderr
                assert f"in use by pid {crawl.pid} (skycrawl crawl, since " in other.stderr
            status = run_cli(["status"], tmp_path, timeout=30)
            assert status.returncode == 0, status.stderr
            assert f"pid {crawl.pid}" in status.stdout
        finally:
            crawl.terminate()
            crawl.communicate(timeout=60)
    assert not os.path.exists(tmp_path / ".skycrawl" / "server.json")
