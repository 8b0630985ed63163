"""Scale-to-zero economics: the README's tables and plots, from one command.

    .venv/bin/python bench/scale_to_zero.py [--crawls 100000 --tenants 100] [--out docs/sim]

1. ``skycrawl simulate`` on the synthetic trace (100 tenants, 100,000 crawls, 7 days);
2. writes an Azure Functions 2019-format sample (per-minute counts, 7 day files, and a
   durations file) — generated here, seeded, in the public trace's columns: timer-triggered
   apps every 5 to 60 minutes, HTTP apps with a daily rhythm, queue apps in bursts — and
   replays it with ``skycrawl simulate --trace azure-2019`` (durations x 60: a 1 s function
   becomes a 1 min crawl);
3. prints each run's goal check (``simulator.report.goals``) and the machine's load.

A real trace replays the same way: ``skycrawl simulate --trace azure-2019 --file
invocations_per_function_md.anon.d01.csv --durations function_durations_percentiles.anon.d01.csv``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKYCRAWL = ROOT / ".venv" / "bin" / "skycrawl"


def write_azure_sample(folder: Path, *, apps: int = 60, days: int = 7, seed: int = 3) -> list[Path]:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = [rng.choice(("timer", "http", "queue")) for _ in range(apps)]
    periods = [rng.choice((5, 10, 15, 30, 60)) for _ in range(apps)]
    rates = [math.exp(rng.uniform(math.log(0.002), math.log(0.3))) for _ in range(apps)]
    header = ["HashOwner", "HashApp", "HashFunction", "Trigger", *map(str, range(1, 1441))]
    files = []
    for day in range(days):
        lines = [",".join(header)]
        for a in range(apps):
            counts = [0] * 1440
            if kinds[a] == "timer":
                offset = rng.randrange(periods[a])
                for m in range(offset, 1440, periods[a]):
                    counts[m] = 1
            elif kinds[a] == "http":
                for m in range(1440):
                    rate = rates[a] * (1 + math.sin(2 * math.pi * (m / 1440 - 0.3)))
                    counts[m] = _poisson(rng, rate)
            else:
                m = int(rng.expovariate(rates[a] / 10))
                while m < 1440:
                    for k in range(rng.randint(1, 4)):
                        if m + k < 1440:
                            counts[m + k] += rng.randint(1, 5)
                    m += 1 + int(rng.expovariate(rates[a] / 10))
            row = [f"owner{a % 17}", f"app{a:03d}", f"fn{a:03d}", kinds[a], *map(str, counts)]
            lines.append(",".join(row))
        path = folder / f"invocations_per_function_md.anon.d{day + 1:02d}.csv"
        path.write_text("\n".join(lines) + "\n")
        files.append(path)
    durations = folder / "function_durations_percentiles.anon.d01.csv"
    rows = ["HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum"]
    for a in range(apps):
        avg = rng.lognormvariate(math.log(1000), 1.0)
        rows.append(f"owner{a % 17},app{a:03d},fn{a:03d},{avg:.0f},100,{avg / 4:.0f},{avg * 8:.0f}")
    durations.write_text("\n".join(rows) + "\n")
    return [*files, durations]


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _run(args: list[str]) -> dict[str, object]:
    started = time.perf_counter()
    subprocess.run([str(SKYCRAWL), "simulate", *args], check=True)
    out = Path(args[args.index("--out") + 1])
    prefix = args[args.index("--prefix") + 1] if "--prefix" in args else ""
    summary = json.loads((out / f"{prefix}simulate.json").read_text())
    summary["bench_wall_s"] = round(time.perf_counter() - started, 1)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crawls", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--apps", type=int, default=60, help="apps of the Azure-format sample")
    parser.add_argument("--days", type=int, default=7, help="days of the Azure-format sample")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "sim")
    opts = parser.parse_args()
    load_before = os.getloadavg()
    synth = _run(["--crawls", str(opts.crawls), "--tenants", str(opts.tenants),
                  "--out", str(opts.out), "--prefix", "synthetic-"])  # fmt: skip
    sample = ROOT / "bench" / ".work" / "azure-sample"
    files = write_azure_sample(sample, apps=opts.apps, days=opts.days)
    days = [str(p) for p in files if "invocations" in p.name]
    replay = ["--trace", "azure-2019", "--duration-scale", "60", "--durations", str(files[-1])]
    for day in days:
        replay += ["--file", day]
    azure = _run([*replay, "--out", str(opts.out), "--prefix", "azure-"])
    for name, summary in (("synthetic", synth), ("azure-2019 sample", azure)):
        print(f"{name}: {summary['trace']['crawls']:,} crawls, {summary['crawls_per_s']:,} "
              f"simulated crawls/s, {summary['bench_wall_s']} s in all")  # fmt: skip
        for goal in summary["goals"]:
            print(f"  [{'met' if goal['met'] else 'NOT met'}] {goal['goal']}: {goal['value']}")
    print(f"load average before / after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
