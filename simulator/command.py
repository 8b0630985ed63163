"""``skycrawl simulate``: compare keep-alive policies on one trace, against the optimum."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from core.conductor.idle_policy import FixedIdle
from core.settings import SkycrawlSettings
from simulator.fast import FastFleet
from simulator.metrics import RunResult
from simulator.model import RUNTIMES, SWEEP_S, PolicySpec, SimConfig, standard_policies
from simulator.optimum import optimum
from simulator.report import (
    goals,
    plot,
    print_goals,
    print_table,
    print_tenants,
    summarize,
    write_json,
)
from simulator.trace import (
    Trace,
    TraceError,
    load_azure_2019,
    load_azure_2021,
    synthetic,
    with_render_share,
)

EXIT_USAGE = 2
#: A browser image (Chromium, ~1 GB more) pulls and boots slower: the default extra start.
BROWSER_EXTRA_START_S = 15.0
#: The weight the conductor uses unless SKYCRAWL_IDLE_WAIT_WEIGHT says otherwise, so that
#: "adaptive (default)" in the table is the policy a deployment runs.
_PRODUCT_WAIT_WEIGHT: float = SkycrawlSettings.model_fields["idle_wait_weight"].default


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate", help="replay a trace under every keep-alive policy (virtual clock)"
    )
    p.add_argument(
        "--trace", choices=("synthetic", "azure-2019", "azure-2021"), default="synthetic"
    )
    p.add_argument("--file", type=Path, action="append", default=[], metavar="PATH",
                   help="Azure trace file(s); 2019: one per day, in order")  # fmt: skip
    p.add_argument("--durations", type=Path, help="2019 trace: function_durations_percentiles")
    p.add_argument("--tenants", type=int, default=100, help="synthetic: tenants (100)")
    p.add_argument("--crawls", type=int, default=100_000, help="synthetic: crawls (100,000)")
    p.add_argument("--days", type=float, default=7.0, help="synthetic: days (7)")
    p.add_argument("--duration-scale", type=float, default=1.0, help="Azure: stretch durations")
    p.add_argument("--max-tenants", type=int, help="Azure: keep the busiest apps only")
    p.add_argument("--runtime", choices=sorted(RUNTIMES), default="fargate")
    p.add_argument("--failure-rate", type=float, default=0.0, help="share of failed starts")
    p.add_argument("--render-share", type=float, default=0.0,
                   help="share of crawls that render (browser containers; 0)")  # fmt: skip
    p.add_argument("--browser-cost-multiplier", type=float, default=2.0,
                   help="a browser container's price / a plain one's (2.0)")  # fmt: skip
    p.add_argument("--browser-start-s", type=float,
                   help="a browser container's start latency (default: the runtime's + 15 s)")  # fmt: skip
    p.add_argument("--capacity", type=int, default=4, help="parallel crawls per container")
    p.add_argument("--max-containers", type=int, default=50, help="per tenant")
    p.add_argument("--slo", type=float, default=60.0, help="seconds a crawl may wait to start")
    p.add_argument("--wait-weight", type=float, default=_PRODUCT_WAIT_WEIGHT,
                   help=f"SKYCRAWL_IDLE_WAIT_WEIGHT ({_PRODUCT_WAIT_WEIGHT:g}, the product's)")  # fmt: skip
    p.add_argument("--always-on", type=int, default=1, help="containers per tenant, never stopped")
    p.add_argument("--no-sweep", action="store_true", help="skip the fixed keep-alive sweep")
    p.add_argument("--mode", choices=("fast", "full"), default="fast",
                   help="full: the real conductor over SQLite (slow; small traces)")  # fmt: skip
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("simulate-out"), help="JSON and PNG plots")
    p.add_argument("--prefix", default="", help="prefix of the output file names")


def _check(args: argparse.Namespace) -> None:
    positive = {
        "--tenants": args.tenants,
        "--crawls": args.crawls,
        "--days": args.days,
        "--duration-scale": args.duration_scale,
        "--capacity": args.capacity,
        "--max-containers": args.max_containers,
        "--always-on": args.always_on,
    }
    for name, value in positive.items():
        if value <= 0:
            raise TraceError(f"{name} must be positive")
    if not 0 <= args.failure_rate < 1:
        raise TraceError("--failure-rate must be in [0, 1)")
    if not 0 <= args.render_share <= 1:
        raise TraceError("--render-share must be in [0, 1]")
    if args.browser_cost_multiplier < 0 or (args.browser_start_s or 0) < 0:
        raise TraceError("--browser-cost-multiplier and --browser-start-s must not be negative")
    if args.render_share and args.mode == "full":
        raise TraceError("--render-share needs --mode fast (full mode's engines render nothing)")
    if args.slo < 0 or args.wait_weight < 0:
        raise TraceError("--slo and --wait-weight must not be negative")
    if args.trace != "synthetic" and not args.file:
        raise TraceError(f"--trace {args.trace} needs --file PATH")
    if args.trace == "azure-2021" and len(args.file) != 1:
        raise TraceError("--trace azure-2021 reads one --file")


def load_trace(args: argparse.Namespace) -> Trace:
    return with_render_share(_load(args), args.render_share, args.seed)


def _load(args: argparse.Namespace) -> Trace:
    if args.trace == "synthetic":
        return synthetic(tenants=args.tenants, crawls=args.crawls, days=args.days, seed=args.seed)
    if args.trace == "azure-2019":
        return load_azure_2019(
            args.file,
            durations=args.durations,
            seed=args.seed,
            duration_scale=args.duration_scale,
            max_tenants=args.max_tenants,
        )
    return load_azure_2021(
        args.file[0], duration_scale=args.duration_scale, max_tenants=args.max_tenants
    )


def simulate(
    trace: Trace, config: SimConfig, specs: list[PolicySpec], *, sweep: bool = True
) -> tuple[list[RunResult], list[RunResult]]:
    """Every policy, then (``sweep``) every fixed window of ``SWEEP_S``, on ``trace``."""
    runs = [_timed(trace, config, spec) for spec in specs]
    swept = (
        [_timed(trace, config, PolicySpec(f"fixed {t:g}", FixedIdle(t))) for t in SWEEP_S]
        if sweep
        else []
    )
    return runs, swept


async def _full(trace: Trace, config: SimConfig, spec: PolicySpec) -> RunResult:
    from simulator.full import FullFleet

    started = time.perf_counter()
    result = await FullFleet(trace, config, spec).run()
    result.wall_s = time.perf_counter() - started
    return result


def _timed(trace: Trace, config: SimConfig, spec: PolicySpec) -> RunResult:
    started = time.perf_counter()
    result = FastFleet(trace, config, spec).run()
    result.wall_s = time.perf_counter() - started
    return result


async def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        _check(args)
        trace = load_trace(args)
    except TraceError as exc:
        err.print(f"skycrawl: {exc}", markup=False, highlight=False)
        return EXIT_USAGE
    if not trace.crawls:
        err.print("skycrawl: the trace holds no crawls", markup=False, highlight=False)
        return EXIT_USAGE
    runtime = replace(RUNTIMES[args.runtime], failure_rate=args.failure_rate)
    if args.render_share:
        start = args.browser_start_s
        runtime = runtime.with_browser(
            cost_multiplier=args.browser_cost_multiplier,
            start_s=runtime.start_s + BROWSER_EXTRA_START_S if start is None else start,
        )
    config = SimConfig(
        runtime=runtime,
        capacity=args.capacity,
        max_containers=args.max_containers,
        slo_s=args.slo,
        wait_weight=args.wait_weight,
        seed=args.seed,
    )
    specs = standard_policies(config, always_on=args.always_on)
    started = time.perf_counter()
    if args.mode == "full":
        runs = [await _full(trace, config, spec) for spec in specs if spec.policy is not None]
        swept: list[RunResult] = []
    else:
        runs, swept = simulate(trace, config, specs, sweep=not args.no_sweep)
    wall = time.perf_counter() - started
    best = optimum(trace, config)
    summary = summarize(trace, config, runs, best, sweep=swept, mode=args.mode)
    crawls = len(trace.crawls) * (len(runs) + len(swept))
    summary["goals"] = goals(summary) if swept else []
    summary["wall_s"] = round(wall, 2)
    summary["crawls_per_s"] = round(crawls / wall, 1) if wall else None
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{args.prefix}simulate.json"
    write_json(summary, json_path)
    wide = Console(width=max(out.width, 160), soft_wrap=True)  # a table of 11 columns
    print_table(summary, wide)
    print_tenants(summary, wide)
    print_goals(summary, wide)
    written = plot(summary, runs, args.out, prefix=args.prefix)
    out.print(
        f"{len(runs) + len(swept)} runs of {len(trace.crawls):,} crawls in {wall:.1f} s "
        f"({summary['crawls_per_s']:,} simulated crawls/s); wrote {json_path}, "
        + ", ".join(str(p) for p in written)
    )
    return 0
