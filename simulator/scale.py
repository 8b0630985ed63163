"""The control plane at internet scale: where 1,000 tenants and 1,000,000 crawls a day saturate.

Two measurements, one model:

1. **What one crawl costs the control plane**, counted on the real conductor
   (``simulator.full``, one inbox message at a time so each state and bus operation is
   charged to the message type that caused it): state reads, compare-and-set writes,
   queries, bus sends, publishes, timers — per message type, and the writes per record.
2. **The day itself**, on the fast path (``simulator.fast``: the real placement decision and
   idle policy): arrivals, container starts and stops, fleet size, minute by minute.
3. **The model** (``CLOUDS``, list figures, approximate): each operation's latency on each
   cloud's state store and bus, each store's per-partition (or per-document) write limit,
   the conductor's concurrency limit, unit prices. A handler's time is the sum of its
   operations (they are sequential awaits); the conductor's throughput is its concurrency
   over that time (Little's law); the inbox is a fluid queue fed minute by minute;
   heartbeats (every ``heartbeat_interval_s``) and watchdogs (four per
   ``heartbeat_timeout_s``) scale with container-seconds, housekeeping with tenants.

Limits: latencies are medians, not distributions; contention retries (lost
compare-and-sets) are counted only as the small trace had them; the functions' own cold
starts and the API's requests are not included.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.local.state_store import SqliteStateStore
from core.clock import Clock
from core.conductor import Conductor, Housekeeper, HousekeepingReport
from core.messages import InboxMessage
from core.ports.state_store import Item, Write, Written
from simulator.fast import FastFleet
from simulator.metrics import RunResult
from simulator.model import PolicySpec, SimConfig
from simulator.trace import Trace

#: Product defaults the model scales with (``SkycrawlSettings``).
HEARTBEAT_INTERVAL_S = 5.0
WATCHDOGS_PER_S = 4 / 60.0  # four checks per heartbeat_timeout_s of 60 s
HOUSEKEEPING_PER_TENANT_S = 1 / 60.0  # every minute; a few reads per tenant

OPS = ("read", "write", "query", "send", "publish", "schedule")


@dataclass(frozen=True, slots=True)
class Cloud:
    """Median latencies (ms) per operation, limits and prices of one cloud's services."""

    name: str
    latency_ms: dict[str, float]
    partition_writes_per_s: float  # per partition (tenant) or, where lower, per document
    hot_record_writes_per_s: float  # sustained writes to one record
    max_concurrency: int  # conductor instances at once (account default)
    invocation_price: float  # $ per invocation
    gb_s_price: float  # $ per GB-second
    memory_gb: float
    op_price: dict[str, float]  # $ per operation


CLOUDS: dict[str, Cloud] = {
    "aws": Cloud(
        "AWS: Lambda + DynamoDB + SQS/SNS",
        {"read": 4, "write": 8, "query": 8, "send": 10, "publish": 15, "schedule": 10},
        partition_writes_per_s=1000,  # DynamoDB: 1,000 WCU per partition
        hot_record_writes_per_s=1000,
        max_concurrency=1000,
        invocation_price=0.20e-6,
        gb_s_price=0.0000166667,
        memory_gb=0.5,
        op_price={
            "read": 0.25e-6,
            "write": 1.25e-6,
            "query": 0.25e-6,
            "send": 0.40e-6,
            "publish": 0.50e-6,
            "schedule": 0.40e-6,
        },
    ),
    "gcp": Cloud(
        "GCP: Cloud Functions + Firestore + Pub/Sub + Cloud Tasks",
        {"read": 8, "write": 25, "query": 15, "send": 20, "publish": 20, "schedule": 15},
        partition_writes_per_s=10_000,  # Firestore: no partition limit, but one document…
        hot_record_writes_per_s=1,  # …sustains about one write a second
        max_concurrency=1000,
        invocation_price=0.40e-6,
        gb_s_price=0.0000025,
        memory_gb=0.5,
        op_price={
            "read": 0.6e-6,
            "write": 1.8e-6,
            "query": 0.6e-6,
            "send": 0.04e-6,
            "publish": 0.04e-6,
            "schedule": 0.40e-6,
        },
    ),
    "azure": Cloud(
        "Azure: Functions + Table storage + Service Bus",
        {"read": 6, "write": 10, "query": 12, "send": 10, "publish": 12, "schedule": 10},
        partition_writes_per_s=2000,  # Table storage: 2,000 entities/s per partition
        hot_record_writes_per_s=2000,
        max_concurrency=200,  # Consumption plan: 200 instances
        invocation_price=0.20e-6,
        gb_s_price=0.000016,
        memory_gb=0.5,
        op_price={
            "read": 0.0036e-6,
            "write": 0.0036e-6,
            "query": 0.0036e-6,
            "send": 0.8e-6,
            "publish": 0.8e-6,
            "schedule": 0.8e-6,
        },
    ),
}


# --------------------------------------------------------------------------- 1. per crawl


@dataclass
class Profile:
    """Operations the real conductor made, per inbox message type and per record."""

    messages: Counter[str] = field(default_factory=Counter)
    ops: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    writes_by_table: Counter[str] = field(default_factory=Counter)
    current: str = "engine"  # what the simulated containers send is not the conductor's

    def count(self, op: str, table: str | None = None) -> None:
        self.ops[self.current][op] += 1
        if table is not None and op == "write":
            self.writes_by_table[table] += 1


class CountingStateStore(SqliteStateStore):
    """The SQLite state store, counting what it is asked on ``profile``."""

    def __init__(self, path: Path, *, clock: Clock, profile: Profile) -> None:
        super().__init__(path, clock=clock)
        self.profile = profile

    async def get(self, *, table: str, partition: str, key: str) -> Item | None:
        self.profile.count("read")
        return await super().get(table=table, partition=partition, key=key)

    async def create(self, *, table: str, partition: str, key: str, data: Any,
                     expires_at: Any = None) -> Item:  # fmt: skip
        self.profile.count("write", table)
        return await super().create(
            table=table, partition=partition, key=key, data=data, expires_at=expires_at
        )

    async def replace(self, *, item: Item, data: Any, expires_at: Any = None) -> Item:
        self.profile.count("write", item.table)
        return await super().replace(item=item, data=data, expires_at=expires_at)

    async def delete(self, *, item: Item) -> None:
        self.profile.count("write", item.table)
        await super().delete(item=item)

    async def write_chains(self, *, chains: Sequence[Sequence[Write]]) -> list[list[Written]]:
        """Each write the group tried counts as one, as on a store that has no groups."""
        done = await super().write_chains(chains=chains)
        for chain, results in zip(chains, done, strict=True):
            for write in chain[: len(results)]:
                self.profile.count("write", write.item.table)
        return done

    async def query(self, *, table: str, partition: str, limit: int | None = None,
                    after: str | None = None) -> list[Item]:  # fmt: skip
        self.profile.count("query")
        return await super().query(table=table, partition=partition, limit=limit, after=after)


def profile_conductor(
    trace: Trace, config: SimConfig, spec: PolicySpec
) -> tuple[Profile, RunResult]:
    """Run ``trace`` through the real conductor, one message at a time, counting."""
    from simulator import full

    prof = Profile()
    fleet = full.FullFleet(trace, config, spec, batch=1)
    fleet.state_factory = lambda path, clock: CountingStateStore(path, clock=clock, profile=prof)
    fleet.on_send = lambda kind: prof.count(kind)
    original = Conductor.handle

    async def handle(self: Conductor, message: InboxMessage) -> None:
        prof.current = type(message).__name__
        prof.messages[prof.current] += 1
        try:
            await original(self, message)
        finally:
            prof.current = "engine"

    original_run = Housekeeper.run

    async def housekeeping(self: Housekeeper) -> HousekeepingReport:
        prof.current = "housekeeping"
        prof.messages["housekeeping"] += 1
        try:
            return await original_run(self)
        finally:
            prof.current = "engine"

    Conductor.handle = handle  # type: ignore[method-assign]
    Housekeeper.run = housekeeping  # type: ignore[method-assign]
    try:
        result = asyncio.run(fleet.run())
    finally:
        Conductor.handle = original  # type: ignore[method-assign]
        Housekeeper.run = original_run  # type: ignore[method-assign]
    return prof, result


# --------------------------------------------------------------------------- 3. the model


def _per_message(prof: Profile, kind: str) -> dict[str, float]:
    n = prof.messages.get(kind, 0)
    return {op: prof.ops[kind][op] / n for op in OPS} if n else dict.fromkeys(OPS, 0.0)


def model(
    prof: Profile, small: RunResult, day: RunResult, trace: Trace, cloud: Cloud, price: float
) -> dict[str, Any]:
    """Scale the per-crawl profile to ``day`` on ``cloud``."""
    crawls = day.crawls
    per_crawl_kinds = [
        k for k in prof.messages if k not in ("Heartbeat", "Watchdog", "housekeeping")
    ]
    # messages and operations per crawl (all but heartbeats and watchdogs), from the profile
    msg_per_crawl = sum(prof.messages[k] for k in per_crawl_kinds) / max(1, small.crawls)
    ops_per_crawl = {
        op: sum(prof.ops[k][op] for k in per_crawl_kinds) / max(1, small.crawls) for op in OPS
    }
    # housekeeping: per tenant per run, as measured (its runs were per tenant set)
    runs = max(1, prof.messages["housekeeping"])
    tenants_small = max(1, len({c for c in small.tenants}))
    hk_ops = {op: prof.ops["housekeeping"][op] / runs / tenants_small for op in OPS}
    hk_runs = len(trace.tenants) * trace.horizon_s * HOUSEKEEPING_PER_TENANT_S
    beat_ops = _per_message(prof, "Heartbeat")
    dog_ops = _per_message(prof, "Watchdog")
    beats = day.container_s / HEARTBEAT_INTERVAL_S
    dogs = day.container_s * WATCHDOGS_PER_S
    ops_total = {
        op: ops_per_crawl[op] * crawls
        + beat_ops[op] * beats
        + dog_ops[op] * dogs
        + hk_ops[op] * hk_runs
        for op in OPS
    }
    messages = msg_per_crawl * crawls + beats + dogs + hk_runs / max(1, len(trace.tenants))
    lat = cloud.latency_ms
    handler_ms = sum(ops_total[op] * lat[op] for op in OPS) / messages
    capacity = cloud.max_concurrency / (handler_ms / 1000)  # messages/s at full concurrency
    # the busiest minute: arrivals and the live fleet's heartbeats
    per_minute = Counter(int(c.at_s // 60) for c in trace.crawls)
    peak_minute, peak_arrivals = max(per_minute.items(), key=lambda kv: kv[1])
    peak_rate = peak_arrivals / 60 * msg_per_crawl + day.peak_fleet * (
        1 / HEARTBEAT_INTERVAL_S + WATCHDOGS_PER_S
    )
    depth, worst = 0.0, 0.0
    fleet_at = _fleet_by_minute(day)
    for minute in range(int(trace.horizon_s // 60) + 1):
        live = fleet_at.get(minute, 0)
        inflow = per_minute.get(minute, 0) * msg_per_crawl + live * 60 * (
            1 / HEARTBEAT_INTERVAL_S + WATCHDOGS_PER_S
        )
        depth = max(0.0, depth + inflow - capacity * 60)
        worst = max(worst, depth)
    # the hottest partition (tenant) and record (its fleet record) at the peak minute
    by_tenant = Counter(c.tenant for c in trace.crawls if int(c.at_s // 60) == peak_minute)
    hot_tenant, hot_arrivals = by_tenant.most_common(1)[0]
    writes_per_crawl = ops_per_crawl["write"]
    hot_partition = hot_arrivals / 60 * writes_per_crawl
    # one record per tenant takes these writes: its fleet (each start and stop) and its
    # idle histogram (each gap, each housekeeping run of an open gap)
    per_record = {t: prof.writes_by_table[t] / max(1, small.crawls) for t in ("fleets", "idle")}
    hot_table = max(per_record, key=lambda t: per_record[t])
    hot_record = hot_arrivals / 60 * per_record[hot_table]
    limits = {
        "conductor concurrency": capacity / max(peak_rate, 1e-9),
        "partition writes": cloud.partition_writes_per_s / max(hot_partition, 1e-9),
        f"one {hot_table} record": cloud.hot_record_writes_per_s / max(hot_record, 1e-9),
    }
    first = min(limits, key=lambda k: limits[k])
    gb_s = messages * handler_ms / 1000 * cloud.memory_gb
    cost = (
        messages * cloud.invocation_price
        + gb_s * cloud.gb_s_price
        + sum(ops_total[op] * cloud.op_price[op] for op in OPS)
    )
    return {
        "cloud": cloud.name,
        "messages": round(messages),
        "messages_per_crawl": round(messages / crawls, 2),
        "handler_ms": round(handler_ms, 1),
        "decisions_per_s_capacity": round(capacity),
        "peak_messages_per_s": round(peak_rate, 1),
        "saturated": peak_rate > capacity,
        "worst_queue_depth": round(worst),
        "hot_partition": hot_tenant,
        "hot_partition_writes_per_s": round(hot_partition, 1),
        "partition_limit": cloud.partition_writes_per_s,
        "hot_record": hot_table,
        "hot_record_writes_per_s": round(hot_record, 2),
        "hot_record_limit": cloud.hot_record_writes_per_s,
        "headroom": {k: round(v, 2) for k, v in limits.items()},
        "saturates_first": first,
        "saturates_at_crawls_per_day": round(crawls * trace_days_inverse(trace) * limits[first]),
        "control_plane_cost_per_1000_crawls": round(cost / crawls * 1000, 4),
        "container_cost_per_1000_crawls": round(day.container_s * price / crawls * 1000, 4),
        "ops_per_crawl": {op: round(v, 2) for op, v in ops_per_crawl.items()},
    }


def trace_days_inverse(trace: Trace) -> float:
    return 86400 / max(trace.horizon_s, 1.0)


def _fleet_by_minute(run: RunResult) -> dict[int, int]:
    out: dict[int, int] = {}
    for at, live in run.fleet:
        out[int(at // 60)] = max(out.get(int(at // 60), 0), live)
    last = 0
    for minute in range(max(out, default=0) + 1):
        last = out.get(minute, last)
        out[minute] = last
    return out


def run_day(trace: Trace, config: SimConfig, spec: PolicySpec) -> RunResult:
    return FastFleet(trace, config, spec).run()


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2f}"


def main() -> None:
    """``python -m simulator.scale``: the figures of ``docs/scaling.md``."""
    import argparse
    import json
    import os
    import time

    from simulator.model import RUNTIMES, standard_policies
    from simulator.trace import synthetic

    parser = argparse.ArgumentParser(prog="python -m simulator.scale")
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--crawls", type=int, default=1_000_000, help="crawls in the day")
    opts = parser.parse_args()
    started = time.perf_counter()
    config = SimConfig(runtime=RUNTIMES["fargate"], capacity=1, max_containers=1000)
    spec = standard_policies(config)[-1]  # the default: adaptive
    small_trace = synthetic(tenants=4, crawls=60, days=0.1, seed=11)
    prof, small = profile_conductor(small_trace, config, spec)
    day_trace = synthetic(
        tenants=opts.tenants, crawls=opts.crawls, days=1, seed=12, duration_scale=4
    )
    day = run_day(day_trace, config, spec)
    price = config.runtime.price
    rows = [model(prof, small, day, day_trace, cloud, price) for cloud in CLOUDS.values()]
    out = {
        "profile": {
            "crawls": small.crawls,
            "messages": dict(prof.messages),
            "ops": {k: dict(v) for k, v in prof.ops.items()},
            "writes_by_table": dict(prof.writes_by_table),
        },
        "day": {
            "tenants": len(day_trace.tenants),
            "crawls": day.crawls,
            "peak_fleet": day.peak_fleet,
            "container_hours": round(day.container_s / 3600, 1),
            "cold_starts": day.starts,
            "prewarms": day.prewarms,
        },
        "clouds": rows,
        "wall_s": round(time.perf_counter() - started, 1),
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
