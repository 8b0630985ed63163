"""Routing decisions per second: the conductor's router and placement over real SQLite ports.

    .venv/bin/python bench/routing_bench.py [--crawls 2000] [--tenants 20] [--instances 8]

One "decision" is ``Conductor.place`` for one pending crawl, applied: the tenant's snapshot
read (live containers, fleet, session), the pure ``decide()``, the slot reserved on the chosen
container by compare-and-set, the crawl stored ``dispatched`` with its ``RunCrawl`` in the
outbox, the run published to the container's subscription and the outbox cleared, the crawl
taken out of the backlog. The ports are the embedded stack's own
(``adapters.local.provider.build_ports``: SQLite bus, scheduler and state store on files in a
temporary directory, WAL, ``synchronous=NORMAL``), the clock is the system clock; only the
runtime is a no-op (containers are made ready beforehand, so no process is started).

Three runs in the same process, on fresh files each:

* ``pure decide()`` -- the decision alone on in-memory snapshots (no I/O): the ceiling;
* ``1 instance`` -- one conductor placing every crawl, one after the other;
* ``N instances`` -- N conductors over the same files (each with its own SQLite clients, as
  N function instances would), placing their share at the same time: contention on the same
  container records, retried by compare-and-set -- first as N tasks of this one process
  (one core), then as N processes (``--processes``, default ``--instances``): how a
  platform runs function instances, each with its own interpreter, so they use the
  machine's cores, contending on the same SQLite files as on one record store.

Each tenant has ``--containers`` ready containers with ``--parallel`` slots each; crawls are
spread round-robin over the tenants. Printed: decisions/s, mean ms per decision, CPU seconds
(of this process, or of the instance processes), the 1-minute load average before and after,
and the goal (2,000/s). The processes are started, open their ports and wait at a barrier
before the clock starts: the time is the placing only, as for the other runs.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import multiprocessing
import os
import resource
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from adapters.local.provider import build_ports, engine_env
from core.conductor import Conductor
from core.conductor.placement import Snapshot, decide
from core.layout import subscription_name, tenant_topic
from core.messages import ContainerReady, RunCrawl, encode
from core.models import Container, Crawl, CrawlSpec, Egress, Quotas, Tenant
from core.ports import ContainerSpec, ContainerStatus, Ports, RunState, RuntimeCapabilities
from core.records import ActiveCrawl, Records, Versioned, listing_key
from core.settings import LocalSettings, SkycrawlSettings

GOAL = 2000.0
Work = tuple[Tenant, Versioned[Crawl]]


class NullRuntime:
    """A runtime that starts nothing: the containers here are made ready by hand."""

    capabilities = RuntimeCapabilities(name="null", typical_start_s=0.0, max_grace_s=0.0)

    async def start_container(self, *, spec: ContainerSpec) -> None:
        return None

    async def stop_container(
        self, *, container_id: str, egress: Egress, grace_s: float = 10
    ) -> None:
        return None

    async def describe(self, *, container_id: str, egress: Egress) -> ContainerStatus:
        return ContainerStatus(container_id=container_id, state=RunState.running)

    async def list_running(self, *, egress: Egress) -> list[ContainerStatus]:
        return []

    async def close(self) -> None:
        return None


class Counted:
    """``inner`` with every coroutine method call counted in ``counts`` (one SQLite
    transaction on its own thread each, for the local bus and state store)."""

    def __init__(self, inner: object, counts: Counter[str], name: str) -> None:
        self._inner, self._counts, self._name = inner, counts, name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if not inspect.iscoroutinefunction(value):
            return value
        counts, key = self._counts, f"{self._name}.{attr}"

        async def call(*args: Any, **kwargs: Any) -> Any:
            counts[key] += 1
            return await value(*args, **kwargs)

        setattr(self, attr, call)  # built once per method: the count costs ~nothing
        return call


@dataclass(frozen=True)
class Result:
    name: str
    decisions: int
    wall_s: float
    cpu_s: float
    load_before: float
    load_after: float
    calls: int = 0  # bus and state-store calls made while placing

    @property
    def rate(self) -> float:
        return self.decisions / self.wall_s


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _settings() -> SkycrawlSettings:
    return SkycrawlSettings(
        provider="local",
        inbox_queue="inbox",
        dispatch_topic="dispatch",
        egresses=[Egress(name="local")],
        allow_cidrs=["127.0.0.0/8"],
    )


def _open(root: Path, settings: SkycrawlSettings, counts: Counter[str]) -> tuple[Ports, Conductor]:
    null = NullRuntime()
    ports = build_ports(
        settings, LocalSettings(data_dir=root), runtimes={e.name: null for e in settings.egresses}
    )
    ports.bus = Counted(ports.bus, counts, "bus")
    ports.state = Counted(ports.state, counts, "state")
    counter = iter(range(1, 10**9))
    conductor = Conductor(
        ports=ports,
        settings=settings,
        engine_env=engine_env(LocalSettings(data_dir=root)),
        new_id=lambda: f"ctr-{os.getpid()}-{next(counter):06d}",
    )
    return ports, conductor


async def _prepare(
    conductor: Conductor, args: argparse.Namespace, settings: SkycrawlSettings
) -> list[Work]:
    """Tenants with ready containers, and pending crawls stored as the API stores them."""
    ports, records = conductor.ports, conductor.records
    await ports.bus.ensure_queue(name=settings.inbox_queue)
    await ports.bus.ensure_topic(topic=settings.dispatch_topic)
    quotas = Quotas(max_containers=args.containers, parallel_per_container=args.parallel)
    tenants = []
    for t in range(args.tenants):
        now = ports.clock.now()
        tenant = Tenant(
            id=f"t{t}",
            name=f"t{t}",
            key_prefix=f"k{t}",
            key_sha256="0" * 64,
            quotas=quotas,
            created_at=now,
        )
        await records.tenants.create("tenants", tenant.id, tenant)
        topic = tenant_topic(settings.dispatch_topic, tenant.id)  # the provisioner's
        await ports.bus.ensure_topic(topic=topic)
        tenants.append(tenant)
        for _ in range(args.containers):
            started = await conductor.fleet.start(tenant, settings.egresses[0])
            assert started is not None
            await ports.bus.ensure_subscription(
                topic=topic,
                name=subscription_name(started.id),
                filter={"container_id": started.id},
            )
            await conductor.handle(ContainerReady(tenant_id=tenant.id, container_id=started.id))
    work = []
    for n in range(args.crawls):
        tenant = tenants[(n // args.burst) % len(tenants)]  # bursts of one tenant's crawls
        now = ports.clock.now()
        crawl = Crawl(
            id=f"cr_{n:032x}",
            tenant_id=tenant.id,
            spec=CrawlSpec(seeds=["https://example.com/"]),
            created_at=now,
            updated_at=now,
        )
        entry = ActiveCrawl(crawl_id=crawl.id, created_at=now)
        stored = await records.crawls.create(tenant.id, crawl.id, crawl)
        await records.active.create(tenant.id, crawl.id, entry)
        await records.listing.create(tenant.id, listing_key(now, crawl.id), entry)
        await records.index_pending(crawl)
        work.append((tenant, stored))
    return work


async def run_instances(args: argparse.Namespace, instances: int, batch: int) -> Result:
    settings = _settings()
    with tempfile.TemporaryDirectory(prefix="skycrawl-routing-") as tmp:
        root = Path(tmp)
        counts: Counter[str] = Counter()
        opened = [_open(root, settings, counts) for _ in range(instances)]
        try:
            work = await _prepare(opened[0][1], args, settings)

            shares = _shares(work, instances, batch)
            counts.clear()
            load, cpu, started = os.getloadavg()[0], _cpu(), time.perf_counter()
            placed = await asyncio.gather(
                *(_place_all(c, s, batch) for (_, c), s in zip(opened, shares, strict=True))
            )
            wall, cpu = time.perf_counter() - started, _cpu() - cpu
            calls = sum(counts.values())
            assert sum(placed) == len(work), f"only {sum(placed)} of {len(work)} placed"
            await _check_dispatched(opened[0][1].records, work)
        finally:
            for ports, _ in opened:
                await ports.close()
    name = "1 instance" if instances == 1 else f"{instances} instances, contending"
    name += ", one message at a time" if batch == 1 else f", batches of {batch} messages"
    return Result(name, len(work), wall, cpu, load, os.getloadavg()[0], calls)


def _shares(work: list[Work], instances: int, batch: int) -> list[list[Work]]:
    """The inbox hands out batches of consecutive messages, each to some instance."""
    chunks = [work[at : at + batch] for at in range(0, len(work), batch)]
    return [[w for chunk in chunks[i::instances] for w in chunk] for i in range(instances)]


async def _place_all(conductor: Conductor, share: list[Work], batch: int) -> int:
    placed = 0
    for at in range(0, len(share), batch):
        # as ``drain_inbox`` handles a batch of messages: concurrently, each with its crawl
        # as read (its version known)
        answers = await asyncio.gather(
            *(
                conductor.place(tenant, crawl.value, current=crawl)
                for tenant, crawl in share[at : at + batch]
            )
        )
        placed += sum(answers)
    return placed


def _instance_process(
    root: Path, share: list[Work], batch: int, barrier: Barrier, out: Any
) -> None:
    """One conductor instance in its own process: open the ports, wait for the others, place
    its share; send back (placed, port calls, CPU seconds of placing)."""

    async def run() -> tuple[int, int, float]:
        counts: Counter[str] = Counter()
        ports, conductor = _open(root, _settings(), counts)
        try:
            await _warm(conductor, share[0])
            counts.clear()
            barrier.wait()
            cpu = _cpu()
            placed = await _place_all(conductor, share, batch)
            return placed, sum(counts.values()), _cpu() - cpu
        finally:
            await ports.close()

    out.put(asyncio.run(run()))


async def _warm(conductor: Conductor, work: Work) -> None:
    """What the in-process runs have done before their clock starts: connections opened,
    the records' models built (pydantic builds each on its first use), one decision made."""
    tenant, crawl = work
    await conductor.records.crawls.get(tenant.id, crawl.value.id)
    containers = tuple(await conductor.records.live_containers(tenant.id))
    run = RunCrawl(
        tenant_id=tenant.id,
        crawl_id=crawl.value.id,
        container_id="w",
        attempt=1,
        spec=crawl.value.spec,
    )
    encode(run)
    snapshot = Snapshot(crawl.value, containers, None, len(containers), len(containers))
    decide(snapshot, containers[0].egress)


async def _prepared(root: Path, args: argparse.Namespace) -> list[Work]:
    counts: Counter[str] = Counter()
    ports, conductor = _open(root, _settings(), counts)
    try:
        return await _prepare(conductor, args, _settings())
    finally:
        await ports.close()


def run_processes(args: argparse.Namespace, processes: int, batch: int) -> Result:
    """``processes`` conductor instances, each its own process, over the same files."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, as a platform's
    with tempfile.TemporaryDirectory(prefix="skycrawl-routing-") as tmp:
        root = Path(tmp)
        work = asyncio.run(_prepared(root, args))
        barrier = context.Barrier(processes + 1)
        out = context.Queue()
        children = [
            context.Process(target=_instance_process, args=(root, share, batch, barrier, out))
            for share in _shares(work, processes, batch)
        ]
        for child in children:
            child.start()
        barrier.wait(timeout=120)  # every instance has opened its ports
        load, started = os.getloadavg()[0], time.perf_counter()
        answers = [out.get(timeout=600) for _ in children]
        wall = time.perf_counter() - started
        for child in children:
            child.join(timeout=60)
            assert child.exitcode == 0, f"an instance process failed ({child.exitcode})"
        placed = sum(a[0] for a in answers)
        assert placed == len(work), f"only {placed} of {len(work)} placed"

        async def check() -> None:
            counts: Counter[str] = Counter()
            ports, conductor = _open(root, _settings(), counts)
            try:
                await _check_dispatched(conductor.records, work)
            finally:
                await ports.close()

        asyncio.run(check())
    return Result(
        f"{processes} instances, contending, each its own process, batches of {batch} messages",
        len(work),
        wall,
        sum(a[2] for a in answers),
        load,
        os.getloadavg()[0],
        sum(a[1] for a in answers),
    )


async def _check_dispatched(records: Records, work: list[Work]) -> None:
    """Every crawl dispatched, and no container over its slots: the work was really done."""
    for tenant, crawl in work:
        found = await records.crawls.get(tenant.id, crawl.value.id)
        assert found is not None, crawl.value.id
        assert found.value.state.value == "dispatched", crawl.value.id
    for tenant, _ in work[: len({t.id for t, _ in work})]:
        for c in await records.live_containers(tenant.id):
            assert len(c.in_flight) <= c.capacity, c.id


def run_pure(args: argparse.Namespace) -> Result:
    egress = Egress(name="local")
    now = datetime.now(UTC)
    containers = tuple(
        Container(
            id=f"c{i}",
            tenant_id="t",
            egress=egress,
            capacity=args.parallel,
            started_at=now,
            state="ready",
            in_flight=tuple(f"x{i}-{j}" for j in range(i)),
        )
        for i in range(args.containers)
    )
    crawl = Crawl(
        id="cr",
        tenant_id="t",
        spec=CrawlSpec(seeds=["https://example.com/"]),
        created_at=now,
        updated_at=now,
    )
    snapshot = Snapshot(crawl, containers, None, len(containers), args.containers)
    n = args.crawls * 20
    load, cpu, started = os.getloadavg()[0], _cpu(), time.perf_counter()
    for _ in range(n):
        decide(snapshot, egress)
    wall, cpu = time.perf_counter() - started, _cpu() - cpu
    return Result("pure decide() (no I/O)", n, wall, cpu, load, os.getloadavg()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crawls", type=int, default=2000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--containers", type=int, default=4, help="ready containers per tenant")
    parser.add_argument("--parallel", type=int, default=32, help="slots per container")
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="instances of the last run, each its own process (default: --instances)",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=10,
        help="consecutive crawls of one tenant (a tenant submits several at once); 1: round-robin",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=10,
        help="messages one instance handles at once (drain_inbox and SQS: 10; 1: one by one)",
    )
    args = parser.parse_args()
    if args.crawls > args.tenants * args.containers * args.parallel:
        parser.error("more crawls than slots: every crawl must find one")
    results = [
        run_pure(args),
        asyncio.run(run_instances(args, 1, 1)),
        asyncio.run(run_instances(args, 1, args.batch)),
        asyncio.run(run_instances(args, args.instances, args.batch)),
        run_processes(args, args.processes or args.instances, args.batch),
    ]
    print(
        f"{args.crawls} crawls over {args.tenants} tenants x {args.containers} ready containers "
        f"x {args.parallel} slots; SQLite on {tempfile.gettempdir()}; {os.cpu_count()} cores\n"
    )
    print(
        "| run | decisions | decisions/s | ms / decision | CPU ms / decision "
        "| port calls / decision | load before -> after |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        calls = f"{r.calls / r.decisions:.1f}" if r.calls else "0"
        print(
            f"| {r.name} | {r.decisions:,} | {r.rate:,.0f} | {1000 / r.rate:.2f} | "
            f"{1000 * r.cpu_s / r.decisions:.2f} | {calls} | "
            f"{r.load_before:.1f} -> {r.load_after:.1f} |"
        )
    best = max(r.rate for r in results[1:])
    print(f"\ngoal {GOAL:,.0f} decisions/s over SQLite: {'met' if best >= GOAL else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
