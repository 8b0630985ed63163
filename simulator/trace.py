"""Workloads for the simulator: a seeded synthetic generator and the Azure Functions traces.

A trace is a list of ``TraceCrawl`` (arrival second, tenant, duration, optional sticky
session, whether it renders), sorted by arrival, and the horizon it covers.
``with_render_share`` marks a seeded share of any trace's crawls as rendering (they need a
browser container: ``Egress.browser``).

``synthetic``
    Many tenants whose shares of the crawls follow a Zipf law, each of one kind: ``poisson``
    (steady), ``diurnal`` (a daily sine, thinned Poisson), ``bursty`` (Poisson sessions of a
    geometric number of crawls a few seconds apart, half of them sticky) and ``cron``
    (sessions every 15 min to 2 h, a minute of jitter). Crawl durations are log-normal
    (median 60 s, sigma 1.2: heavy-tailed, capped at 2 h). Same seed, same trace.
``load_azure_2019``
    The 2019 public trace's per-minute invocation counts (``invocations_per_function_md.anon
    .dNN.csv``: ``HashOwner,HashApp,HashFunction,Trigger,1..1440``; one file per day, in the
    order given). An app is a tenant; a minute's invocations are spread uniformly (seeded)
    over it. Durations come from the trace's ``function_durations_percentiles`` file when
    given (``HashOwner,HashApp,HashFunction,Average,…`` in ms; log-normal around each
    function's average), else from the synthetic distribution.
``load_azure_2021``
    The 2021 per-invocation trace (``app,func,end_timestamp,duration``; seconds): one crawl
    per invocation, starting at ``end_timestamp - duration``.

``duration_scale`` stretches durations (a serverless invocation lasts milliseconds, a crawl
minutes); ``max_tenants`` keeps the busiest apps. Nothing is downloaded: the user points at
files; the tests write small ones.
"""

from __future__ import annotations

import csv
import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

DAY_S = 86_400.0
#: Crawl durations: log-normal around a median of 60 s, capped at 2 h.
DURATION_MEDIAN_S = 60.0
DURATION_SIGMA = 1.2
DURATION_CAP_S = 7_200.0


class TraceError(ValueError):
    """A trace file that cannot be read (the CLI prints it as one line, exit code 2)."""


@dataclass(frozen=True, slots=True)
class TraceCrawl:
    at_s: float
    tenant: str
    duration_s: float
    session: str | None = None
    render: bool = False  # the crawl renders pages: it needs a browser container


def with_render_share(trace: Trace, share: float, seed: int = 1) -> Trace:
    """``trace`` with a seeded ``share`` (0-1) of its crawls rendering; the arrivals, tenants
    and durations stay as they were (a random stream of its own)."""
    if share <= 0:
        return trace
    rng = random.Random(f"render-{seed}")
    crawls = [replace(c, render=rng.random() < share) for c in trace.crawls]
    return Trace(trace.name, crawls, trace.horizon_s)


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    crawls: list[TraceCrawl]
    horizon_s: float

    @property
    def tenants(self) -> list[str]:
        return sorted({c.tenant for c in self.crawls})


def _duration(rng: random.Random, median_s: float = DURATION_MEDIAN_S) -> float:
    return min(DURATION_CAP_S, max(1.0, rng.lognormvariate(math.log(median_s), DURATION_SIGMA)))


def _finish(name: str, crawls: Iterable[TraceCrawl], horizon_s: float) -> Trace:
    ordered = sorted(crawls, key=lambda c: (c.at_s, c.tenant))
    horizon = max(horizon_s, ordered[-1].at_s if ordered else 0.0)
    return Trace(name, ordered, horizon)


# --------------------------------------------------------------------------- synthetic

KINDS = ("poisson", "diurnal", "bursty", "cron")


def synthetic(
    *,
    tenants: int = 100,
    crawls: int = 100_000,
    days: float = 7.0,
    seed: int = 1,
    duration_scale: float = 1.0,
) -> Trace:
    """About ``crawls`` crawls of ``tenants`` tenants over ``days`` days (seeded)."""
    if tenants < 1 or crawls < 1 or days <= 0:
        raise TraceError("synthetic trace: tenants, crawls and days must be positive")
    rng = random.Random(seed)
    horizon = days * DAY_S
    weights = [1.0 / (i + 1) ** 0.8 for i in range(tenants)]
    total = sum(weights)
    out: list[TraceCrawl] = []
    for i, weight in enumerate(weights):
        tenant = f"t{i:04d}"
        kind = KINDS[rng.randrange(len(KINDS))]
        share = max(1, round(crawls * weight / total))
        make = {"poisson": _poisson, "diurnal": _diurnal, "bursty": _bursty, "cron": _cron}[kind]
        out.extend(make(rng, tenant, share, horizon))
    kept = (c for c in out if c.at_s < horizon)
    if duration_scale != 1.0:
        kept = (
            TraceCrawl(c.at_s, c.tenant, c.duration_s * duration_scale, c.session) for c in kept
        )
    name = f"synthetic(tenants={tenants}, crawls={crawls}, days={days:g}, seed={seed})"
    return _finish(name, kept, horizon)


def _poisson(rng: random.Random, tenant: str, n: int, horizon: float) -> list[TraceCrawl]:
    rate = n / horizon
    out, t = [], rng.expovariate(rate)
    while t < horizon:
        out.append(TraceCrawl(t, tenant, _duration(rng)))
        t += rng.expovariate(rate)
    return out


def _diurnal(rng: random.Random, tenant: str, n: int, horizon: float) -> list[TraceCrawl]:
    peak = 2 * n / horizon  # thinning: accept with the sine's share of the peak rate
    phase = rng.random() * DAY_S
    out, t = [], rng.expovariate(peak)
    while t < horizon:
        if rng.random() < 0.5 * (1 + math.sin(2 * math.pi * (t + phase) / DAY_S)):
            out.append(TraceCrawl(t, tenant, _duration(rng)))
        t += rng.expovariate(peak)
    return out


def _session(
    rng: random.Random, tenant: str, start: float, size: int, sticky: bool, n: int
) -> list[TraceCrawl]:
    session = f"{tenant}-s{n}" if sticky else None
    out, t = [], start
    for _ in range(size):
        out.append(TraceCrawl(t, tenant, _duration(rng, 30.0), session))
        t += rng.expovariate(1 / 8.0)
    return out


def _bursty(rng: random.Random, tenant: str, n: int, horizon: float) -> list[TraceCrawl]:
    mean_size = 8.0
    rate = max(1.0, n / mean_size) / horizon
    out: list[TraceCrawl] = []
    t = rng.expovariate(rate)
    while t < horizon and len(out) < n * 1.5:
        size = 1 + int(rng.expovariate(1 / (mean_size - 1)))
        out.extend(_session(rng, tenant, t, size, rng.random() < 0.5, len(out)))
        t += rng.expovariate(rate)
    return out


def _cron(rng: random.Random, tenant: str, n: int, horizon: float) -> list[TraceCrawl]:
    period = rng.choice((900.0, 1800.0, 3600.0, 7200.0))
    runs = max(1, int(horizon / period))
    size = max(1, round(n / runs))
    out: list[TraceCrawl] = []
    t = rng.random() * period
    while t < horizon:
        out.extend(_session(rng, tenant, t + rng.uniform(0, 60), size, False, len(out)))
        t += period
    return out


# --------------------------------------------------------------------------- Azure traces


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except OSError as exc:
        raise TraceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise TraceError(f"{path} is not a CSV file: {exc}") from exc


def _need(rows: list[dict[str, str]], path: Path, columns: Iterable[str]) -> None:
    if not rows:
        raise TraceError(f"{path} holds no rows")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise TraceError(f"{path} lacks the column(s) {', '.join(missing)}")


def _keep_busiest(crawls: list[TraceCrawl], max_tenants: int | None) -> list[TraceCrawl]:
    if max_tenants is None:
        return crawls
    busiest = {t for t, _ in Counter(c.tenant for c in crawls).most_common(max_tenants)}
    return [c for c in crawls if c.tenant in busiest]


def _number(value: str, path: Path, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise TraceError(f"{path}: {what} {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise TraceError(f"{path}: {what} {value!r} is not a non-negative number")
    return number


def load_azure_2019(
    paths: list[Path],
    *,
    durations: Path | None = None,
    seed: int = 1,
    duration_scale: float = 1.0,
    max_tenants: int | None = None,
) -> Trace:
    """Per-minute invocation counts, one file per day (see the module docstring)."""
    rng = random.Random(seed)
    mean_ms: dict[tuple[str, str], float] = {}
    if durations is not None:
        rows = _read_csv(durations)
        _need(rows, durations, ("HashApp", "HashFunction", "Average"))
        for row in rows:
            key = (row["HashApp"], row["HashFunction"])
            mean_ms[key] = _number(row["Average"], durations, "Average")
    out: list[TraceCrawl] = []
    for day, path in enumerate(paths):
        rows = _read_csv(path)
        _need(rows, path, ("HashApp", "HashFunction", "1", "1440"))
        for row in rows:
            app, func = row["HashApp"], row["HashFunction"]
            for minute in range(1, 1441):
                count = int(_number(row.get(str(minute)) or "0", path, f"minute {minute}"))
                base = day * DAY_S + (minute - 1) * 60.0
                for _ in range(count):
                    ms = mean_ms.get((app, func))
                    if ms is None:
                        seconds = _duration(rng)
                    else:  # spread around the function's average, as its percentiles are
                        seconds = max(0.001, ms / 1000 * rng.lognormvariate(0, 0.5))
                    out.append(
                        TraceCrawl(base + rng.random() * 60.0, app, seconds * duration_scale)
                    )
    name = f"azure-2019({len(paths)} day(s))"
    return _finish(name, _keep_busiest(out, max_tenants), len(paths) * DAY_S)


def load_azure_2021(
    path: Path, *, duration_scale: float = 1.0, max_tenants: int | None = None
) -> Trace:
    """One crawl per invocation of the 2021 trace (see the module docstring)."""
    rows = _read_csv(path)
    _need(rows, path, ("app", "func", "end_timestamp", "duration"))
    out = []
    for row in rows:
        end = _number(row["end_timestamp"], path, "end_timestamp")
        duration = _number(row["duration"], path, "duration")
        start = max(0.0, end - duration)
        out.append(TraceCrawl(start, row["app"], max(0.001, duration) * duration_scale))
    crawls = _keep_busiest(out, max_tenants)
    horizon = max((c.at_s + c.duration_s for c in crawls), default=0.0)
    return _finish(f"azure-2021({path.name})", crawls, horizon)
