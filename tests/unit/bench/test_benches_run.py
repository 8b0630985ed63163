"""Each benchmark still runs against today's code (a tiny size, its table checked): a bench
that rots silently reports nothing, as bench/routing_bench.py did once tenants got their own
dispatch topics. The figures themselves come from full-size runs (bench/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_routing_bench_places_every_crawl_and_prints_its_rates() -> None:
    out = run(
        "routing_bench.py",
        *("--crawls", "20", "--tenants", "2", "--containers", "2", "--parallel", "8"),
        *("--instances", "2"),
    )
    rows = [
        line for line in out.splitlines() if line.startswith("| ") and "decisions/s" not in line
    ]
    assert [r.split("|")[1].strip() for r in rows] == [
        "pure decide() (no I/O)",
        "1 instance, one message at a time",
        "1 instance, batches of 10 messages",
        "2 instances, contending, batches of 10 messages",
        "2 instances, contending, each its own process, batches of 10 messages",
    ]
    assert all(float(r.split("|")[3].replace(",", "")) > 0 for r in rows)
    calls = [float(r.split("|")[6]) for r in rows[1:]]
    assert calls[1] < calls[0]  # a tenant's burst placed together costs fewer round trips


@pytest.mark.parametrize("bus", ["sqlite", "postgres-notify"])
def test_bus_bench_moves_messages_on_each_bus(bus: str) -> None:
    out = run("bus_bench.py", "--messages", "40", "--samples", "5", "--rounds", "1", "--only", bus)
    (row,) = [line for line in out.splitlines() if line.startswith(f"| {bus} |")]
    rate, p50 = row.split("|")[2:4]
    assert float(rate.replace(",", "")) > 0
    assert float(p50) > 0


def test_coldstart_bench_gets_a_first_response_from_each_cloud_s_api() -> None:
    out = run("coldstart_bench.py", "--rounds", "1", "--only", "aws-api,gcp-api,azure-api")
    rows = {
        line.split("|")[1].strip(): line.split("|")
        for line in out.splitlines()
        if line.startswith("| ") and "entry point" not in line
    }
    assert set(rows) == {"aws-api", "gcp-api", "azure-api"}
    for cells in rows.values():
        assert cells[6].strip() == "200"  # /healthz answered
        assert float(cells[4]) > float(cells[2]) > 0  # first response after the bare start
