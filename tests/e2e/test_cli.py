"""The ``skycrawl`` command as a user runs it: the demo, errors, and Ctrl-C."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from functions.local.demo_site import build_pages
from tests.e2e.cli_support import free_port

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
        (["crawl", "http://127.0.0.1:9/", "--max-pages", "0"], "max_pages"),
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


def test_a_crawl_that_fetches_nothing_says_why_and_exits_1(tmp_path: Path) -> None:
    port = free_port()  # nobody listens there: connecting is refused
    result = _run(["crawl", f"http://127.0.0.1:{port}/", "--allow-cidr", "127.0.0.0/8"], tmp_path)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last
        == "skycrawl: no page fetched: robots.txt unreachable: connection refused (1 of 1 pages)"
    )
    rows = [json.loads(line) for line in (tmp_path / "skycrawl-out" / "pages.jsonl").open()]
    assert [r["error"] for r in rows] == ["robots.txt unreachable: connection refused"]
    assert "Traceback" not in result.stderr
