"""Browser containers in the simulator (issue 15): rendering crawls start containers at the
egress's browser figures (price, start latency, minimum), only those take rendering crawls,
and the cost report -- policies, optimum, ``skycrawl simulate --render-share`` -- prices
their seconds at the browser price."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.conductor.idle_policy import FixedIdle
from core.models import BrowserEgress, Egress
from functions.local.cli import main
from simulator.fast import FastFleet
from simulator.model import PolicySpec, SimConfig, SimRuntime
from simulator.optimum import optimum
from simulator.trace import Trace, TraceCrawl, synthetic, with_render_share

#: Deterministic: no spread of start latencies, instant stops, no minimum billing.
RUNTIME = SimRuntime(
    Egress(
        name="x",
        cost_per_second=0.01,
        start_latency_s=40.0,
        browser=BrowserEgress(cost_multiplier=3.0, start_latency_s=70.0),
    ),
    start_cv=0.0,
    stop_s=0.0,
)
CONFIG = SimConfig(runtime=RUNTIME, capacity=2)
TRACE = Trace(
    "hand-made",
    [
        TraceCrawl(0.0, "t", 60.0),  # plain: a plain container
        TraceCrawl(10.0, "t", 60.0, render=True),  # cannot join it: a browser container
        TraceCrawl(150.0, "t", 60.0, render=True),  # joins the idle browser container
    ],
    300.0,
)


def test_rendering_crawls_run_on_browser_containers_billed_at_their_price() -> None:
    result = FastFleet(TRACE, CONFIG, PolicySpec("fixed 100 s", FixedIdle(100.0))).run()

    assert (result.crawls, result.starts, result.browser_starts) == (3, 2, 1)
    # the plain container: ready at 40, busy to 100, killed at 200
    # the browser one: started at 10, ready at 80 (70 s), busy to 140, again 150-210, killed 310
    assert result.container_s == pytest.approx(200.0 + 300.0)
    assert result.browser_s == pytest.approx(300.0)
    assert sorted(result.waits) == [0.0, 40.0, 70.0]  # the browser start took 70 s
    assert result.cost(0.01, 0.03) == pytest.approx(200 * 0.01 + 300 * 0.03)
    summary = result.summary(0.01, 0.03)
    assert summary["browser_container_s"] == 300.0
    assert summary["cost"] == pytest.approx(11.0)


def test_the_optimum_covers_each_kind_with_its_own_containers_and_price() -> None:
    best = optimum(TRACE, CONFIG)

    # plain: one container, 40 s boot + 60 s; browser: the 80 s gap costs more than a 70 s
    # boot, so two containers of 70 + 60 s each
    assert best.container_s == pytest.approx(100.0 + 260.0)
    assert best.browser_s == pytest.approx(260.0)
    assert best.starts == 3
    assert best.cost == pytest.approx(100 * 0.01 + 260 * 0.03)


def test_a_render_share_marks_crawls_and_keeps_the_trace() -> None:
    trace = synthetic(tenants=5, crawls=2000, days=1, seed=3)

    marked = with_render_share(trace, 0.25, seed=3)

    assert with_render_share(trace, 0.0) is trace
    assert [(c.at_s, c.tenant, c.duration_s) for c in marked.crawls] == [
        (c.at_s, c.tenant, c.duration_s) for c in trace.crawls
    ]
    share = sum(c.render for c in marked.crawls) / len(marked.crawls)
    assert 0.2 < share < 0.3
    assert with_render_share(trace, 0.25, seed=3) == marked  # seeded


def test_skycrawl_simulate_prices_the_render_share(tmp_path: Path, capsys) -> None:
    base = ["simulate", "--tenants", "4", "--crawls", "300", "--days", "0.5", "--no-sweep"]

    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    browser = ["--render-share", "0.5", "--browser-cost-multiplier", "3", "--browser-start-s", "90"]
    code = main([*base, "--out", str(tmp_path / "render"), *browser])

    assert code == 0
    assert "browser-h" in capsys.readouterr().out
    plain = json.loads((tmp_path / "plain" / "simulate.json").read_text())
    render = json.loads((tmp_path / "render" / "simulate.json").read_text())
    assert render["trace"]["rendering_crawls"] > 100
    figures = render["config"]["egress"]["browser"]
    assert figures["cost_multiplier"] == 3.0
    assert figures["start_latency_s"] == 90.0
    costs = {p["policy"]: p["cost"] for p in plain["policies"]}
    for policy in render["policies"]:
        assert policy["browser_container_s"] > 0
        assert policy["cost"] > costs[policy["policy"]]  # the same trace, dearer containers
        assert policy["cost_vs_optimum"] >= 1.0
    assert render["optimum"]["cost"] > plain["optimum"]["cost"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--render-share", "1.5"], "--render-share must be in [0, 1]"),
        (["--render-share", "0.2", "--mode", "full"], "--render-share needs --mode fast"),
        (["--browser-cost-multiplier", "-1"], "must not be negative"),
    ],
)
def test_bad_browser_options_are_one_line_and_exit_2(
    tmp_path: Path, capsys, argv: list[str], message: str
) -> None:
    assert main(["simulate", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert message in err[0]
