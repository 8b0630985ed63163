"""The fleet simulator: traces, the offline optimum, the fast path against the real conductor,
and ``skycrawl simulate`` as a user runs it. Trace files are written by the tests."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from core.conductor.idle_policy import AdaptiveIdle, FixedIdle, policy_from
from core.settings import SkycrawlSettings
from functions.local.cli import main
from simulator.fast import FastFleet
from simulator.full import FullFleet
from simulator.model import RUNTIMES, PolicySpec, SimConfig, standard_policies
from simulator.optimum import level_cost, levels, optimum
from simulator.trace import (
    Trace,
    TraceCrawl,
    TraceError,
    load_azure_2019,
    load_azure_2021,
    synthetic,
)

CONFIG = SimConfig()


def write_2019(path: Path, rows: list[tuple[str, str, dict[int, int]]]) -> Path:
    header = ["HashOwner", "HashApp", "HashFunction", "Trigger"] + [str(m) for m in range(1, 1441)]
    lines = [",".join(header)]
    for app, func, counts in rows:
        lines.append(
            ",".join(["o1", app, func, "http"] + [str(counts.get(m, 0)) for m in range(1, 1441)])
        )
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- traces


def test_a_synthetic_trace_is_the_same_for_the_same_seed() -> None:
    a = synthetic(tenants=12, crawls=2000, days=1, seed=7)
    b = synthetic(tenants=12, crawls=2000, days=1, seed=7)
    c = synthetic(tenants=12, crawls=2000, days=1, seed=8)
    assert a.crawls == b.crawls
    assert a.crawls != c.crawls
    assert len(a.tenants) == 12
    assert 1500 < len(a.crawls) < 3000
    assert all(0 <= x.at_s < 86400 for x in a.crawls)
    assert [x.at_s for x in a.crawls] == sorted(x.at_s for x in a.crawls)
    durations = sorted(x.duration_s for x in a.crawls)
    assert durations[len(durations) // 2] < 120 < durations[int(len(durations) * 0.99)]
    assert any(x.session for x in a.crawls)  # bursty tenants have sticky sessions


def test_the_2019_azure_trace_spreads_each_minute_and_takes_durations(tmp_path: Path) -> None:
    day1 = write_2019(tmp_path / "d01.csv", [("appA", "f1", {1: 3, 10: 2}), ("appB", "f2", {5: 1})])
    day2 = write_2019(tmp_path / "d02.csv", [("appA", "f1", {1: 1})])
    durations = tmp_path / "durations.csv"
    durations.write_text("HashOwner,HashApp,HashFunction,Average,Count\no1,appA,f1,2000,6\n")
    trace = load_azure_2019([day1, day2], durations=durations, duration_scale=10)
    assert len(trace.crawls) == 7
    assert trace.tenants == ["appA", "appB"]
    first_minute = [c for c in trace.crawls if c.at_s < 60]
    assert len(first_minute) == 3
    assert all(c.tenant == "appA" for c in first_minute)
    assert sum(1 for c in trace.crawls if 86400 <= c.at_s < 86460) == 1  # day 2, minute 1
    a_durations = [c.duration_s for c in trace.crawls if c.tenant == "appA"]
    assert 5 < sorted(a_durations)[len(a_durations) // 2] < 80  # ~2 s x 10, log-normal
    assert trace.horizon_s == 2 * 86400
    busiest = load_azure_2019([day1], max_tenants=1)
    assert busiest.tenants == ["appA"]


def test_the_2021_azure_trace_starts_each_invocation_at_end_minus_duration(
    tmp_path: Path,
) -> None:
    path = tmp_path / "invocations.txt"
    path.write_text("app,func,end_timestamp,duration\na1,f,10.5,0.5\na2,g,100,40\na1,f,50,2\n")
    trace = load_azure_2021(path, duration_scale=2)
    assert [(c.tenant, c.at_s, c.duration_s) for c in trace.crawls] == [
        ("a1", 10.0, 1.0),
        ("a1", 48.0, 4.0),
        ("a2", 60.0, 80.0),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("app,func,end_timestamp\na,f,1\n", "lacks the column(s) duration"),
        ("app,func,end_timestamp,duration\na,f,soon,1\n", "'soon' is not a number"),
        ("", "holds no rows"),
    ],
)
def test_a_bad_trace_file_is_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(TraceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_azure_2021(path)


# --------------------------------------------------------------------------- the optimum


def test_levels_split_concurrent_crawls_by_capacity() -> None:
    busy = [(0.0, 100.0), (10.0, 50.0), (20.0, 30.0)]
    assert levels(busy, 1) == [[(0.0, 100.0)], [(10.0, 50.0)], [(20.0, 30.0)]]
    assert levels(busy, 2) == [[(0.0, 100.0)], [(20.0, 30.0)]]


def test_the_optimum_bridges_short_gaps_and_restarts_after_long_ones() -> None:
    # boot 40 s + stop 10 s: a gap under 50 s is cheaper kept alive than stopped
    busy = [(0.0, 100.0), (130.0, 200.0), (1000.0, 1100.0)]
    seconds, starts = level_cost(busy, boot_s=40, stop_s=10, min_billed_s=0)
    assert starts == 2
    assert seconds == pytest.approx((40 + 200 + 10) + (40 + 100 + 10))


def test_the_optimum_pays_the_minimum_billed_duration_and_merges_when_cheaper() -> None:
    far = [(0.0, 1.0), (200.0, 201.0)]
    assert level_cost(far, boot_s=5, stop_s=0, min_billed_s=60) == (120.0, 2)  # two minimums
    near = [(0.0, 1.0), (100.0, 101.0)]
    assert level_cost(near, boot_s=5, stop_s=0, min_billed_s=60) == (106.0, 1)  # < 2 x 60
    assert level_cost(near, boot_s=5, stop_s=0, min_billed_s=150) == (150.0, 1)


def test_no_policy_beats_the_optimum() -> None:
    trace = synthetic(tenants=8, crawls=1500, days=1, seed=3)
    best = optimum(trace, CONFIG)
    for spec in standard_policies(CONFIG):
        run = FastFleet(trace, CONFIG, spec).run()
        assert run.container_s >= best.container_s * 0.999, spec.label
        assert run.crawls == len(trace.crawls), spec.label


# --------------------------------------------------------------------------- the fast path


def test_always_on_bills_every_container_for_the_whole_horizon() -> None:
    trace = synthetic(tenants=4, crawls=300, days=1, seed=2)
    run = FastFleet(trace, CONFIG, PolicySpec("always-on 2", always_on=2)).run()
    assert run.container_s == pytest.approx(4 * 2 * run.horizon_s)
    assert run.starts == 0


def test_a_longer_fixed_window_costs_more_and_starts_fewer_containers() -> None:
    trace = synthetic(tenants=6, crawls=1500, days=1, seed=4)
    short = FastFleet(trace, CONFIG, PolicySpec("60", FixedIdle(60))).run()
    long = FastFleet(trace, CONFIG, PolicySpec("1200", FixedIdle(1200))).run()
    assert long.container_s > short.container_s
    assert long.starts < short.starts


def test_adaptive_prewarms_a_cron_tenant_and_saves_its_cold_starts() -> None:
    crawls = [TraceCrawl(h * 3600.0 + 30.0 * (h % 3), "cron", 120.0) for h in range(48)]
    trace = Trace("cron", crawls, 48 * 3600.0)
    t = 440.0  # break-even with the default weight on Fargate (40 s x 11)
    adaptive = FastFleet(
        trace, CONFIG, PolicySpec("adaptive", AdaptiveIdle(10.0, t, fallback="break_even"))
    ).run()
    fixed = FastFleet(trace, CONFIG, PolicySpec("fixed", FixedIdle(t))).run()
    assert fixed.starts == 48
    assert adaptive.prewarms > 30
    assert adaptive.starts <= 16  # the 10 gaps it needs to learn, and a few misses
    assert adaptive.container_s < fixed.container_s


def test_the_fast_path_agrees_with_the_real_conductor() -> None:
    trace = synthetic(tenants=3, crawls=40, days=0.05, seed=5)
    config = replace(CONFIG, housekeeping_s=300.0)
    for spec in (PolicySpec("fixed 60", FixedIdle(60.0)), standard_policies(config)[-1]):
        fast = FastFleet(trace, config, spec).run()
        full = asyncio.run(FullFleet(trace, config, spec).run())
        assert full.crawls == fast.crawls == len(trace.crawls), spec.label
        assert abs(full.starts - fast.starts) <= 1, spec.label
        assert full.container_s == pytest.approx(fast.container_s, rel=0.05), spec.label
        assert sorted(full.waits)[-1] == pytest.approx(sorted(fast.waits)[-1], abs=2.0)


# --------------------------------------------------------------------------- the command


def test_skycrawl_simulate_writes_the_table_plots_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(["simulate", "--tenants", "5", "--crawls", "400", "--days", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "offline optimum" in printed
    assert "adaptive" in printed
    summary = json.loads((out / "simulate.json").read_text())
    labels = [p["policy"] for p in summary["policies"]]
    assert labels[0] == "always-on 1"
    assert "adaptive (default)" in labels
    assert all(p["cost_vs_optimum"] >= 0.999 for p in summary["policies"][1:])
    assert len(summary["fixed_sweep"]) >= 10
    assert set(summary["per_tenant"]) == {f"t{i:04d}" for i in range(5)}
    for name in ("cost-vs-p95.png", "fleet.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_simulated_default_is_the_policy_a_deployment_runs() -> None:
    """The table's "adaptive (default)" decides as the conductor with default settings does
    (same weight, same fallback while a histogram is young), on the simulator's period."""
    simulated = standard_policies(CONFIG)[-1]
    assert simulated.label == "adaptive (default)"
    deployed = policy_from(SkycrawlSettings(timer_period_s=CONFIG.housekeeping_s))
    assert simulated.policy == deployed


def test_skycrawl_simulate_weighs_waits_as_the_conductor_does_unless_told(
    tmp_path: Path,
) -> None:
    """Without --wait-weight the table's "adaptive (default)" and break-even are the policies
    a deployment runs (SKYCRAWL_IDLE_WAIT_WEIGHT's default), not another weighting."""
    base = ["simulate", "--tenants", "2", "--crawls", "60", "--days", "0.2", "--no-sweep"]
    product = SkycrawlSettings.model_fields["idle_wait_weight"].default
    fargate = RUNTIMES["fargate"].start_s
    for extra, weight in (([], product), (["--wait-weight", "10"], 10.0)):
        out = tmp_path / f"w{weight:g}"
        assert main([*base, *extra, "--out", str(out)]) == 0
        summary = json.loads((out / "simulate.json").read_text())
        assert summary["config"]["wait_weight"] == weight
        labels = [p["policy"] for p in summary["policies"]]
        assert f"break-even {fargate * (1 + weight):g} s" in labels


def test_skycrawl_simulate_replays_an_azure_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [(f"app{i}", "f", {m: 1 for m in range(1, 1441, 7 * (i + 1))}) for i in range(3)]
    day = write_2019(tmp_path / "d01.csv", rows)
    out = tmp_path / "out"
    code = main(["simulate", "--trace", "azure-2019", "--file", str(day), "--out", str(out),
                 "--duration-scale", "30", "--no-sweep"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "simulate.json").read_text())
    assert summary["trace"]["tenants"] == 3
    assert summary["trace"]["crawls"] == sum(len(r[2]) for r in rows)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--trace", "azure-2019"], "--trace azure-2019 needs --file PATH"),
        (["--trace", "azure-2021", "--file", "/nonexistent/x.txt"], "cannot read"),
        (["--crawls", "0"], "--crawls must be positive"),
        (["--failure-rate", "1.5"], "--failure-rate must be in [0, 1)"),
    ],
)
def test_bad_simulate_input_is_one_line_and_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["simulate", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_runtime_figures_are_per_second_prices_and_known_latencies() -> None:
    fargate = RUNTIMES["fargate"]
    assert fargate.egress.min_billed_s == 60
    assert math.isclose(fargate.price * 3600, 0.04937)
    assert fargate.billed(10) == 60
    assert fargate.billed(90) == 90
