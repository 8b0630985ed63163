"""Turn runs into what a user reads: a table, two PNG plots and a JSON of everything."""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from simulator.metrics import RunResult, percentile
from simulator.model import SimConfig
from simulator.optimum import Optimum
from simulator.trace import Trace

OPTIMUM = "offline optimum"


def summarize(
    trace: Trace,
    config: SimConfig,
    runs: list[RunResult],
    best: Optimum,
    *,
    sweep: list[RunResult] | None = None,
    mode: str = "fast",
) -> dict[str, Any]:
    price = config.runtime.price
    browser_price = config.runtime.for_browser().price  # rendering crawls' containers
    opt_cost = best.cost
    policies: list[dict[str, Any]] = []
    for run in runs:
        row = run.summary(price, browser_price)
        row.update(
            policy=run.label,
            prewarms=run.prewarms,
            failed_starts=run.failed_starts,
            peak_fleet=run.peak_fleet,
            cost_vs_optimum=round(row["cost"] / opt_cost, 3) if opt_cost else None,
            wall_s=round(run.wall_s, 2),
        )
        policies.append(row)
    per_tenant: dict[str, dict[str, Any]] = {}
    for tenant, (seconds, starts) in best.per_tenant.items():
        entry: dict[str, Any] = {OPTIMUM: {"container_s": round(seconds, 1), "cold_starts": starts}}
        per_tenant[tenant] = entry
    for run in runs:
        for tenant, result in run.tenants.items():
            per_tenant.setdefault(tenant, {})[run.label] = result.summary(price, browser_price)
    return {
        "trace": {
            "name": trace.name,
            "crawls": len(trace.crawls),
            "rendering_crawls": sum(c.render for c in trace.crawls),
            "tenants": len(trace.tenants),
            "horizon_s": trace.horizon_s,
        },
        "mode": mode,
        "config": {
            "egress": config.runtime.egress.model_dump(),
            "start_cv": config.runtime.start_cv,
            "stop_s": config.runtime.stop_s,
            "failure_rate": config.runtime.failure_rate,
            "capacity": config.capacity,
            "max_containers": config.max_containers,
            "housekeeping_s": config.housekeeping_s,
            "slo_s": config.slo_s,
            "wait_weight": config.wait_weight,
            "seed": config.seed,
        },
        "optimum": {
            "container_s": round(best.container_s, 1),
            "browser_container_s": round(best.browser_s, 1),
            "cost": round(opt_cost, 6),
            "cold_starts": best.starts,
            "wait_p95_s": 0.0,
        },
        "policies": policies,
        "fixed_sweep": [
            {
                "keep_alive_s": float(r.label.split()[1]),
                "cost": round(r.cost(price, browser_price), 6),
                "cold_starts": r.starts,
                "wait_p95_s": round(percentile(sorted(r.waits), 95), 3),
            }
            for r in sweep or []
        ],
        "per_tenant": per_tenant,
    }


def print_table(summary: dict[str, Any], console: Console) -> None:
    trace = summary["trace"]
    opt = summary["optimum"]
    table = Table(
        title=f"{trace['name']}: {trace['crawls']:,} crawls, {trace['tenants']} tenants, "
        f"{trace['horizon_s'] / 86400:.1f} days ({summary['mode']} mode)"
    )
    for header in ("policy", "container-h", "cost $", "x optimum", "cold starts", "pre-warms"):
        table.add_column(header, justify="right" if header != "policy" else "left")
    for header in ("cold crawls", "wait p50 s", "p95 s", "p99 s", "SLO misses"):
        table.add_column(header, justify="right")
    renders = bool(trace.get("rendering_crawls"))
    if renders:  # the browser containers' share of the container-hours
        table.add_column("browser-h", justify="right")

    def browser_h(row: dict[str, Any]) -> list[str]:
        return [f"{row['browser_container_s'] / 3600:,.1f}"] if renders else []

    table.add_row(
        OPTIMUM,
        f"{opt['container_s'] / 3600:,.1f}",
        f"{opt['cost']:,.2f}",
        "1.00",
        f"{opt['cold_starts']:,}",
        "-",
        "0",
        "0",
        "0",
        "0",
        "0",
        *browser_h(opt),
    )
    for p in summary["policies"]:
        table.add_row(
            p["policy"],
            f"{p['container_s'] / 3600:,.1f}",
            f"{p['cost']:,.2f}",
            f"{p['cost_vs_optimum']:.2f}" if p["cost_vs_optimum"] is not None else "-",
            f"{p['cold_starts']:,}",
            f"{p['prewarms']:,}",
            f"{p['cold_crawls']:,}",
            f"{p['wait_p50_s']:.1f}",
            f"{p['wait_p95_s']:.1f}",
            f"{p['wait_p99_s']:.1f}",
            f"{p['slo_misses']:,}",
            *browser_h(p),
        )
    console.print(table)


def print_tenants(summary: dict[str, Any], console: Console, top: int = 8) -> None:
    """Cost (x the tenant's optimum) and p95 of the busiest tenants under every policy."""
    labels = [p["policy"] for p in summary["policies"]]
    rows = sorted(
        summary["per_tenant"].items(),
        key=lambda kv: -max((v.get("crawls", 0) for v in kv[1].values()), default=0),
    )[:top]
    table = Table(title=f"per tenant (the {top} busiest): cost x the tenant's optimum / wait p95 s")
    table.add_column("tenant")
    table.add_column("crawls", justify="right")
    for label in labels:
        table.add_column(label, justify="right")
    for tenant, entry in rows:
        opt_s = entry[OPTIMUM]["container_s"]
        crawls = next((v["crawls"] for k, v in entry.items() if k != OPTIMUM), 0)
        cells = []
        for label in labels:
            r = entry.get(label)
            if r is None or not opt_s:
                cells.append("-")
            else:
                cells.append(f"{r['container_s'] / opt_s:.2f} / {r['wait_p95_s']:.0f}")
        table.add_row(tenant, f"{crawls:,}", *cells)
    console.print(table)


def write_json(summary: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(summary, indent=1, sort_keys=True))


def plot(
    summary: dict[str, Any], runs: list[RunResult], out: Path, *, prefix: str = ""
) -> list[Path]:
    """``cost-vs-p95.png`` and ``fleet.png`` in ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(8, 5))
    sweep = summary["fixed_sweep"]
    if sweep:
        ax.plot(
            [s["cost"] for s in sweep],
            [s["wait_p95_s"] for s in sweep],
            "-",
            color="0.7",
            label="fixed keep-alive sweep",
        )
    for p in summary["policies"]:
        ax.scatter(p["cost"], p["wait_p95_s"], s=40)
        ax.annotate(p["policy"], (p["cost"], p["wait_p95_s"]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    opt = summary["optimum"]
    ax.scatter(opt["cost"], 0.0, marker="*", s=120, color="black")
    ax.annotate(OPTIMUM, (opt["cost"], 0.0), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("cost over the trace ($, log scale)")
    ax.set_ylabel("queueing latency p95 (s)")
    ax.set_title(summary["trace"]["name"], fontsize=9)
    if sweep:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"{prefix}cost-vs-p95.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for run in runs:
        if not run.fleet:
            continue
        xs = [t / 3600 for t, _ in run.fleet]
        ys = [n for _, n in run.fleet]
        ax.step(xs, ys, where="post", linewidth=0.6, label=run.label)
    ax.set_xlabel("hours")
    ax.set_ylabel("live containers")
    ax.set_title(f"fleet size over time — {summary['trace']['name']}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / f"{prefix}fleet.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def _at_cost(sweep: list[dict[str, Any]], cost: float, key: str) -> float | None:
    """``key`` of the fixed window whose cost equals ``cost`` (linear between sweep points)."""
    points = sorted((s["cost"], s[key]) for s in sweep)
    if not points or not points[0][0] <= cost <= points[-1][0]:
        return None
    for (c0, v0), (c1, v1) in pairwise(points):
        if c0 <= cost <= c1:
            return float(v0) if c1 == c0 else v0 + (v1 - v0) * (cost - c0) / (c1 - c0)
    return float(points[-1][1])


def goals(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals for the default policy, each met or not, with the figures."""
    default = next(p for p in summary["policies"] if p["policy"].startswith("adaptive"))
    opt = summary["optimum"]
    out: list[dict[str, Any]] = []
    ratio = default["cost"] / opt["cost"] if opt["cost"] else math.inf
    out.append({"goal": "cost within 1.2x of the offline optimum", "met": ratio <= 1.2,
                "value": f"{ratio:.2f}x"})  # fmt: skip
    out.append(
        {
            "goal": "p95 wait equal or better than the optimum's (which starts just in time)",
            "met": default["wait_p95_s"] <= opt["wait_p95_s"],
            "value": f"{default['wait_p95_s']:.1f} s vs {opt['wait_p95_s']:.1f} s",
        }
    )
    for p in summary["policies"]:
        if p["policy"].startswith("always-on") and p["cost"]:
            share = default["cost"] / p["cost"]
            out.append({"goal": f"at most 10% of {p['policy']}'s cost", "met": share <= 0.10,
                        "value": f"{share:.1%}"})  # fmt: skip
    sweep = summary["fixed_sweep"]
    starts = _at_cost(sweep, default["cost"], "cold_starts")
    p95 = _at_cost(sweep, default["cost"], "wait_p95_s")
    if starts is not None and p95 is not None:
        out.append(
            {
                "goal": "fewer cold starts than the fixed window of equal cost",
                "met": default["cold_starts"] < starts,
                "value": f"{default['cold_starts']:,} vs {starts:,.0f}",
            }
        )
        out.append(
            {
                "goal": "p95 wait no worse than the fixed window of equal cost",
                "met": default["wait_p95_s"] <= p95,
                "value": f"{default['wait_p95_s']:.1f} s vs {p95:.1f} s",
            }
        )
    return out


def print_goals(summary: dict[str, Any], console: Console) -> None:
    for goal in summary["goals"]:
        mark = "[green]met[/]" if goal["met"] else "[red]NOT met[/]"
        console.print(f"{mark}  {goal['goal']}: {goal['value']}")
