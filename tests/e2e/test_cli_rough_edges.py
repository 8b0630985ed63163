"""Rough edges a newcomer hit with the ``skycrawl`` command (issue 12): bad option values are
one line and exit 2 before anything runs, the summary names the files really written, ids
and progress are shown whole, ``status`` on a fresh directory leaves nothing behind."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from adapters.local.container_runtime import SubprocessRuntime
from core.models import Egress
from core.ports.container_runtime import ContainerSpec
from functions.local import cli
from functions.local.progress import watch_crawls
from tests.e2e.cli_support import run_cli, serve_site


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse exits
        code = int(exc.code or 0)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, lines


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--idle-ttl", "-3"], "--idle-ttl: must be a number > 0, not '-3'"),
        (["--idle-ttl", "soon"], "--idle-ttl: must be a number > 0, not 'soon'"),
        (["--allow-cidr", "10.0.0.0/33"], "--allow-cidr: '10.0.0.0/33' is not a CIDR range"),
        (["--parallel", "-1"], "--parallel: must be a whole number >= 1, not '-1'"),
    ],
)
def test_a_bad_option_value_is_one_line_naming_it_and_exit_2(
    args: list[str],
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, lines = _main(["crawl", "http://127.0.0.1:9/", *args], capsys)
    assert code == 2
    assert len(lines) == 1, lines
    assert needle in lines[0]
    assert not (tmp_path / ".skycrawl").exists(), "nothing ran"


def test_a_settings_error_names_the_field_and_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKYCRAWL_STARTUP_TIMEOUT_S", "-3")
    code, lines = _main(["crawl", "http://127.0.0.1:9/"], capsys)
    assert code == 2
    assert len(lines) == 1, lines
    assert "SKYCRAWL_STARTUP_TIMEOUT_S" in lines[0]
    assert "greater than 0" in lines[0]


def test_an_unwritable_out_dir_is_refused_before_the_crawl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    code, lines = _main(["crawl", "http://127.0.0.1:9/", "--out", "/proc/nope"], capsys)
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("skycrawl: --out /proc/nope: cannot write there (")
    assert time.monotonic() - started < 5
    assert not (tmp_path / ".skycrawl").exists(), "no crawl was submitted"


def test_status_on_a_fresh_directory_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SKYCRAWL_LOCAL_DATA_DIR", raising=False)
    for argv in (["status"], ["tenants", "list"]):
        code = cli.main(argv)
        assert code == 0
        printed = capsys.readouterr().out
        assert "no data dir .skycrawl" in printed
    assert list(tmp_path.iterdir()) == [], "no data dir, no operator key"


def test_tenants_list_shows_whole_ids_at_80_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    assert cli.main(["tenants", "create", "a-rather-long-tenant-name-for-the-table"]) == 0
    created = capsys.readouterr().out
    tenant_id = created.split()[1]
    assert cli.main(["tenants", "list"]) == 0
    listing = capsys.readouterr().out
    assert tenant_id in listing, listing


class _Answer:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def model_dump(self, mode: str) -> dict[str, Any]:
        return self.document


class _Api:
    async def list_containers(self) -> _Answer:
        return _Answer({"items": []})

    async def get_crawl(self, crawl_id: str) -> _Answer:
        counts = {"fetched": 12345, "queued": 678, "failed": 90, "bytes": 1}
        return _Answer({"id": crawl_id, "status": "completed", "counts": counts})


class _Statuses:
    """What ``watch_crawls`` reads (the typed client's answers): one completed crawl."""

    operator_key = "op"

    def api(self, key: str) -> _Api:
        return _Api()


async def test_the_progress_line_is_whole_at_100_columns() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, force_terminal=False)
    await watch_crawls(_Statuses(), "key", "tn_x", ["cr_" + "a" * 32], console)  # type: ignore[arg-type]
    shown = buffer.getvalue()
    assert "…" not in shown, shown
    for part in ("12345 fetched", "678 queued", "90 failed", "0 containers"):
        assert part in shown, shown


@pytest.mark.e2e
def test_parallel_crawls_announce_the_files_they_write(tmp_path: Path) -> None:
    with serve_site(pages=2) as site:
        result = run_cli(
            ["crawl", site.url, "--parallel", "2", "--allow-cidr", "127.0.0.0/8", "--out", "o"],
            tmp_path,
        )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    written = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert written == ["crawl-1.warc.gz", "crawl-2.warc.gz", "pages-1.jsonl", "pages-2.jsonl"]
    assert last == "results in o/ (pages-1.jsonl, crawl-1.warc.gz, pages-2.jsonl, crawl-2.warc.gz)"
    for name in ("pages-1.jsonl", "pages-2.jsonl"):
        rows = [json.loads(line) for line in (tmp_path / "o" / name).open()]
        assert len(rows) == 2


async def test_a_container_that_exits_by_itself_is_not_left_defunct(tmp_path: Path) -> None:
    """Under ``skycrawl up`` a container that exits on its own is reaped at once."""
    runtime = SubprocessRuntime(command=(sys.executable, "-c", "pass"), log_dir=tmp_path)
    spec = ContainerSpec(container_id="ct_" + "0" * 32, tenant_id="tn_x", egress=Egress(name="l"))
    await runtime.start_container(spec=spec)
    pid = json.loads((tmp_path / f"{spec.container_id}.pid").read_text())["pid"]
    try:
        for _ in range(50):
            await asyncio.sleep(0.1)
            if _proc_state(pid) != "R" and _proc_state(pid) != "S":
                break
        assert _proc_state(pid) == "gone", "the exited child is left <defunct>"
    finally:
        await runtime.close()


def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
