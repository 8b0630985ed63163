"""Ctrl-C on ``skycrawl crawl`` cancels the crawl it submitted, writes what was fetched so far,
and leaves nothing running or pending — with an embedded stack and with ``skycrawl up``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import LocalSettings
from functions.local.session import open_session
from tests.e2e.cli_support import engine_processes, run_cli, serve_site, skycrawl_up, start_cli

pytestmark = pytest.mark.e2e
SLOW = {"delay_s": 0.1}  # an endless site: every page links to five new ones
ENGINE_GROUPS: dict[Path, list[int]] = {}  # process groups of the engines, seen before Ctrl-C


def _groups_gone(data_dir: Path) -> bool:
    for pgid in ENGINE_GROUPS[data_dir]:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            continue
        return False
    return True


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _interrupt(proc: subprocess.Popen[str], served: list[str], data_dir: Path) -> tuple[str, str]:
    """Wait until the crawl is fetching pages, Ctrl-C it; returns (stdout, stderr)."""
    _wait_for(lambda: len(served) >= 8, 60, "the crawl to fetch pages")
    assert engine_processes(data_dir), "an engine runs the crawl"
    ENGINE_GROUPS[data_dir] = [
        json.loads(p.read_text())["pgid"] for p in (data_dir / "logs").glob("*.pid")
    ]
    assert ENGINE_GROUPS[data_dir]
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - started < 20, "Ctrl-C ends the command within seconds (~4 s idle)"
    assert "Traceback" not in stderr
    return stdout, stderr


def _crawl_id(stdout: str, pages: list[dict[str, Any]]) -> str:
    """The id in the summary line, which counts the pages written to ``--out``."""
    found = re.search(r"crawl (cr_\w+) cancelled: (\d+) pages fetched", stdout)
    assert found, stdout
    assert int(found.group(2)) == len(pages), stdout
    return found.group(1)


def _pages(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "pages.jsonl").read_text().splitlines()]


def _assert_not_revived(tmp_path: Path, served: list[str], extra: list[str]) -> None:
    """A later crawl in the same data directory runs, and the cancelled one stays dead."""
    before = len(served)
    with serve_site(pages=3) as other:
        later = run_cli(["crawl", other.url, "--out", "later", *extra], tmp_path)
    assert later.returncode == 0, later.stderr
    assert len(_pages(tmp_path / "later")) == 3
    time.sleep(1)
    assert len(served) == before, "nothing fetched the interrupted crawl's site again"


@pytest.fixture
def slow_site() -> Iterator[tuple[str, list[str]]]:
    with serve_site(**SLOW) as site:
        yield site.url, site.served


def test_ctrl_c_on_an_embedded_crawl_cancels_it_and_keeps_its_pages(
    tmp_path: Path, slow_site: tuple[str, list[str]]
) -> None:
    url, served = slow_site
    data_dir = tmp_path / ".skycrawl"
    args = ["--allow-cidr", "127.0.0.0/8"]
    proc = start_cli(["crawl", url, "--max-pages", "10000", "--max-depth", "10", *args], tmp_path)
    stdout, _ = _interrupt(proc, served, data_dir)
    pages = _pages(tmp_path / "skycrawl-out")
    assert pages, "what was fetched before Ctrl-C is in --out"
    assert all(p["status"] == 200 for p in pages)
    assert engine_processes(data_dir) == [], "no engine left running"
    assert _groups_gone(data_dir), "no process left in an engine's process group"
    assert not list((data_dir / "logs").glob("*.pid"))
    crawls, containers = _state(data_dir)
    assert [c["status"] for c in crawls] == ["cancelled"]
    assert containers == [], "no container left ready, starting or draining"
    assert _crawl_id(stdout, pages) == crawls[0]["id"]
    _assert_not_revived(tmp_path, served, args)
    assert [c["status"] for c in _state(data_dir)[0]] == ["completed", "cancelled"]


def test_ctrl_c_on_a_crawl_sent_to_a_server_cancels_it(
    tmp_path: Path, slow_site: tuple[str, list[str]]
) -> None:
    url, served = slow_site
    data_dir = tmp_path / ".skycrawl"
    with skycrawl_up(tmp_path) as (server, base):
        proc = start_cli(["crawl", url, "--max-pages", "10000", "--max-depth", "10"], tmp_path)
        stdout, _ = _interrupt(proc, served, data_dir)
        pages = _pages(tmp_path / "skycrawl-out")
        assert pages, "what was fetched before Ctrl-C is in --out"
        assert all(p["status"] == 200 for p in pages)
        key = json.loads((data_dir / "cli-tenant.json").read_text())["api_key"]
        auth = {"authorization": f"Bearer {key}"}
        crawls = httpx.get(f"{base}/v1/crawls", headers=auth).json()["items"]
        assert [c["status"] for c in crawls] == ["cancelled"]
        assert _crawl_id(stdout, pages) == crawls[0]["id"]
        time.sleep(1.5)  # the cancel has reached the engine: the site sees no more requests
        settled = len(served)
        time.sleep(1.5)
        assert len(served) == settled
        # the server's idle timer (2 s) scales its container to zero
        _wait_for(lambda: engine_processes(data_dir) == [], 20, "the container to stop")
        _wait_for(lambda: _groups_gone(data_dir), 5, "the engine's process group to go")
        _assert_not_revived(tmp_path, served, [])
        assert server.poll() is None


def _state(data_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The CLI tenant's crawls (newest first) and live containers, read with a session of our
    own (the lock is free once the command has exited)."""
    import asyncio

    from functions.local.progress import containers_of

    async def read() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with open_session(LocalSettings(data_dir=data_dir), {}, command="test") as s:
            tenant_id, key = await s.tenant_key()
            crawls = (await s.api(key).list_crawls()).model_dump(mode="json")
            return crawls["items"], await containers_of(s, tenant_id)

    return asyncio.run(read())
