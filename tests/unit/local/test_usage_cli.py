"""``skycrawl usage``: a table or JSON of the API's usage report; bad input is one line and
exit code 2, before anything starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from functions.local.cli import main


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--from", "yesterday"], "argument --from: must be an ISO 8601 date"),
        (["--granularity", "week"], "argument --granularity: invalid choice: 'week'"),
        (["--from", "2030-02-01", "--to", "2030-01-01"], "--from 2030-02-01 is not before"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    data_dir = tmp_path / "d"

    assert _exit_code(["--data-dir", str(data_dir), "usage", *argv]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert said in err
    assert "Traceback" not in err
    assert not data_dir.exists()  # refused before a stack was opened


def _exit_code(argv: list[str]) -> object:
    """``main``'s exit code, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_usage_lists_every_tenant_and_refuses_an_unknown_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "d")]
    assert main([*data, "tenants", "create", "acme"]) == 0
    tenant_id = capsys.readouterr().out.split()[1]

    assert main([*data, "usage", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main([*data, "usage"]) == 0
    table = capsys.readouterr().out
    assert main([*data, "usage", "--tenant", "t_nope"]) == 2
    err = capsys.readouterr().err

    assert [t["tenant_id"] for t in report["tenants"]] == [tenant_id]
    assert report["tenants"][0]["total"]["cost"] == 0.0
    assert tenant_id in table
    assert "total" in table
    assert err.startswith("skycrawl: ")
    assert "t_nope" in err
    assert err.count("\n") == 1
