"""The self-hosted story on one machine: ``skycrawl up --provider selfhosted`` on a fresh
PostgreSQL database runs the API, the conductor and the timers; ``skycrawl crawl`` goes
through it; a real engine subprocess crawls a site served on 127.0.0.1, its results come
back, and the idle container is stopped by its kill timer (a PostgreSQL scheduler row)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e.cli_support import SKYCRAWL, cli_env, free_port, serve_site
from tests.integration.selfhosted.postgres import fresh_database

pytestmark = pytest.mark.e2e


def _env(database_url: str) -> dict[str, str]:
    env = cli_env()
    for name in [n for n in env if n.startswith("SKYCRAWL_SELFHOSTED_")]:
        del env[name]
    return {**env, "SKYCRAWL_SELFHOSTED_DATABASE_URL": database_url}


def _engines_on(database_url: str) -> list[int]:
    """Pids of live engine processes using ``database_url`` (found by their environment)."""
    needle = f"SKYCRAWL_SELFHOSTED_DATABASE_URL={database_url}\0".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes() if proc.name.isdigit() else b""
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] if environ else ""
        except (OSError, IndexError):
            continue
        if state not in ("", "Z") and needle in environ and b"SKYCRAWL_CONTAINER_ID=" in environ:
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def database_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@contextlib.contextmanager
def _up(cwd: Path, database_url: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``skycrawl up --provider selfhosted`` on ``database_url`` while the block runs."""
    port = free_port()
    args = ["up", "--provider", "selfhosted", "--port", str(port)]
    args += ["--allow-cidr", "127.0.0.0/8", "--idle-ttl", "2"]
    proc = subprocess.Popen(
        [*SKYCRAWL, *args],
        cwd=cwd,
        env=_env(database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
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
        if proc.returncode is None:
            proc.terminate()
            proc.communicate(timeout=30)


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    with _up(tmp_path, database_url) as running:
        yield running


def _live_containers(url: str, data_dir: Path) -> list[dict[str, object]]:
    key = (data_dir / "operator.key").read_text().strip()
    response = httpx.get(
        url + "/v1/containers", headers={"Authorization": f"Bearer {key}"}, trust_env=False
    )
    assert response.status_code == 200, response.text
    return [c for c in response.json()["items"] if c["state"] not in ("stopped", "failed")]


def test_up_on_postgres_crawls_a_site_and_scales_to_zero(
    tmp_path: Path, database_url: str, server: tuple[subprocess.Popen[str], str]
) -> None:
    proc, url = server
    with serve_site(pages=20) as site:
        crawl = subprocess.run(
            [*SKYCRAWL, "crawl", site.url, "--out", "out"],
            cwd=tmp_path,
            env=_env(database_url),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert crawl.returncode == 0, crawl.stderr
    assert f"using the running server on {url}" in crawl.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "pages.jsonl").open()]
    assert len(rows) == 20
    assert all(row["status"] == 200 for row in rows)

    with psycopg.connect(database_url) as conn:  # the state is PostgreSQL's, not SQLite's
        crawls = conn.execute("SELECT count(*) FROM state_items WHERE tbl = 'crawls'").fetchone()
        queues = conn.execute("SELECT source FROM bus_sources ORDER BY 1").fetchall()
    assert crawls == (1,)
    assert ("queue/skycrawl-inbox",) in queues
    data_dir = tmp_path / ".skycrawl"
    assert not list(data_dir.glob("*.sqlite3"))
    assert list((data_dir / "blobs").rglob("*")), "pages and manifests on the data dir's files"

    deadline = time.monotonic() + 30  # idle TTL 2 s, then the kill timer and the stop
    while time.monotonic() < deadline and (
        _live_containers(url, data_dir) or _engines_on(database_url)
    ):
        time.sleep(0.3)
    assert _live_containers(url, data_dir) == []
    assert _engines_on(database_url) == []
    assert proc.poll() is None, "the server keeps running at zero containers"

    proc.terminate()  # a new server on the same database carries on: the crawl is still there
    proc.communicate(timeout=30)
    key = json.loads((data_dir / "cli-tenant.json").read_text())["api_key"]
    with _up(tmp_path, database_url) as (_, again):
        listing = httpx.get(
            again + "/v1/crawls", headers={"Authorization": f"Bearer {key}"}, trust_env=False
        )
    assert listing.status_code == 200, listing.text
    assert [(c["status"], c["counts"]["fetched"]) for c in listing.json()["items"]] == [
        ("completed", 20)
    ]


def test_up_with_an_unreachable_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = free_port()
    done = subprocess.run(
        [*SKYCRAWL, "up", "--provider", "selfhosted", "--port", str(free_port())],
        cwd=tmp_path,
        env=_env(f"postgresql://postgres@127.0.0.1:{port}/nothing?connect_timeout=2"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("skycrawl: PostgreSQL connect:")
