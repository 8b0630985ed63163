"""The full path: the real conductor over the real embedded ports, on a virtual clock.

Real here: ``Conductor`` (router, fleet, transitions, outbox, kill timers and their chains,
watchdogs, drain-before-stop) and ``Housekeeper`` (pre-warming, gap counting) with their
``IdlePolicy``, over ``SqliteMessageBus``, ``SqliteScheduler`` and ``SqliteStateStore`` in
a temporary directory, every port reading one ``FakeClock``; crawls are submitted as
``POST /v1/crawls`` stores them. Simulated: the runtime (``SimContainerRuntime``: start
latency, failed starts, billing) and the engine (``SimEngine``: subscription, ``ready``,
heartbeats every ``heartbeat_interval_s``, a crawl takes its trace duration, drains on
``DrainContainer``) — the same protocol as ``engine_container.worker``.

The loop jumps the clock to the next thing due — a trace arrival, an engine event, a
scheduled message (the scheduler is watched), a housekeeping run — and drains the inbox
until it is quiet. Each crawl costs a few dozen SQLite transactions, so this mode runs
about a thousand times slower than ``simulator.fast``; it is there to check the fast path
against the real thing on small traces (``tests/unit/simulator``) and for what only it
shows (outbox relays, chained timers, races between handlers).
"""

from __future__ import annotations

import heapq
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from adapters.local.blob_store import FileBlobStore
from adapters.local.message_bus import SqliteMessageBus
from adapters.local.provisioner import DirectoryProvisioner
from adapters.local.scheduler import SqliteScheduler
from adapters.local.state_store import SqliteStateStore
from core.clock import FakeClock
from core.conductor import Conductor, Housekeeper
from core.errors import NotFound
from core.inbox import drain_inbox
from core.layout import subscription_name, tenant_topic
from core.messages import (
    ContainerExited,
    ContainerReady,
    CrawlCompleted,
    CrawlSubmitted,
    DrainContainer,
    Heartbeat,
    RunCrawl,
    decode_dispatch,
    encode,
)
from core.models import Crawl, CrawlCounts, CrawlSpec, Egress, Frozen, Quotas, Tenant
from core.ports import (
    ContainerSpec,
    ContainerStatus,
    OutboundMessage,
    Ports,
    RunState,
    RuntimeCapabilities,
    StateStore,
    Subscription,
)
from core.records import ActiveCrawl, listing_key
from core.settings import SkycrawlSettings
from simulator.metrics import RunResult, TenantResult
from simulator.model import PolicySpec, SimConfig
from simulator.trace import Trace

START = datetime(2030, 1, 1, tzinfo=UTC)
SEED_URL = "https://example.com/"


class WatchedScheduler(SqliteScheduler):
    """The SQLite scheduler, telling the loop when each timer falls due."""

    def __init__(
        self,
        bus: SqliteMessageBus,
        due: list[float],
        clock: FakeClock,
        on_send: Callable[[str], None],
    ) -> None:
        super().__init__(bus)
        self._due = due
        self._clock = clock
        self._on_send = on_send

    async def schedule(self, *, queue: str, message: OutboundMessage, delay_s: float) -> str:
        self._on_send("schedule")
        heapq.heappush(self._due, _seconds(self._clock) + max(0.0, delay_s))
        return await super().schedule(queue=queue, message=message, delay_s=delay_s)


class NotingBus(SqliteMessageBus):
    """The SQLite bus, noting which containers were published to (so only their engines
    read their subscriptions)."""

    def __init__(self, path: Path, *, clock: FakeClock, on_send: Callable[[str], None]) -> None:
        super().__init__(path, clock=clock)
        self.touched: set[str] = set()
        self._on_send = on_send

    async def publish(self, *, topic: str, message: OutboundMessage) -> str:
        self._on_send("publish")
        self.touched.add(message.attributes.get("container_id", ""))
        return await super().publish(topic=topic, message=message)

    async def publish_many(self, *, topic: str, messages: Sequence[OutboundMessage]) -> list[str]:
        for message in messages:
            self._on_send("publish")
            self.touched.add(message.attributes.get("container_id", ""))
        return await super().publish_many(topic=topic, messages=messages)

    async def send(self, *, queue: str, message: OutboundMessage, delay_s: float = 0) -> str:
        self._on_send("send")
        return await super().send(queue=queue, message=message, delay_s=delay_s)


def _seconds(clock: FakeClock) -> float:
    return (clock.now() - START).total_seconds()


@dataclass
class _Box:
    tenant_id: str
    started: float
    ready: float | None = None
    stopped: float | None = None
    alive: bool = True
    beats: int = 0
    running: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)


class SimContainerRuntime:
    """ContainerRuntime of the simulation: a start is accepted at once and the engine says
    ready a sampled start latency later (or never, for a failed start)."""

    def __init__(self, sim: FullFleet) -> None:
        self._sim = sim
        rt = sim.config.runtime
        self.capabilities = RuntimeCapabilities(
            name="simulated", typical_start_s=rt.start_s, max_grace_s=300.0
        )

    async def start_container(self, *, spec: ContainerSpec) -> None:
        self._sim.on_start(spec)

    async def stop_container(
        self, *, container_id: str, egress: Egress, grace_s: float = 10
    ) -> None:
        self._sim.on_stop(container_id)

    async def describe(self, *, container_id: str, egress: Egress) -> ContainerStatus:
        box = self._sim.boxes.get(container_id)
        if box is None:
            return ContainerStatus(container_id=container_id, state=RunState.unknown)
        state = RunState.running if box.alive else RunState.exited
        return ContainerStatus(container_id=container_id, state=state, exit_code=None)

    async def list_running(self, *, egress: Egress) -> list[ContainerStatus]:
        return [
            ContainerStatus(container_id=cid, state=RunState.running)
            for cid, box in self._sim.boxes.items()
            if box.alive
        ]

    async def close(self) -> None:
        return None


_ARRIVE, _READY, _FAILED, _DONE, _BEAT, _WAKE, _HOUSEKEEPING = range(7)


class FullFleet:
    """One policy over one trace, through the real conductor."""

    def __init__(
        self,
        trace: Trace,
        config: SimConfig,
        spec: PolicySpec,
        root: Path | None = None,
        *,
        batch: int = 10,
    ) -> None:
        if spec.policy is None:
            raise ValueError("the full mode runs elastic policies only (no always-on)")
        self.trace = trace
        self.config = config
        self.spec = spec
        self.rng = random.Random(config.seed)
        self.boxes: dict[str, _Box] = {}
        self.result = RunResult(label=spec.label)
        self._tenants: dict[str, TenantResult] = {}
        self._events: list[tuple[float, int, int, str, int]] = []
        self._due: list[float] = []
        self._seq = 0
        self._root = root
        self._prewarmed: set[str] = set()
        self._batch = batch
        #: How the state store is built (``simulator.scale`` counts its operations).
        self.state_factory: Callable[[Path, FakeClock], StateStore] = lambda path, clock: (
            SqliteStateStore(path, clock=clock)
        )
        #: Called with "send", "publish" or "schedule" for every bus operation.
        self.on_send: Callable[[str], None] = lambda kind: None
        policy = spec.policy
        self.settings = SkycrawlSettings(
            inbox_queue="inbox",
            dispatch_topic="dispatch",
            idle_policy=policy.name,
            idle_ttl_s=getattr(policy, "ttl_s", getattr(policy, "fallback_ttl_s", 60.0)),
            idle_wait_weight=getattr(policy, "wait_weight", config.wait_weight),
            idle_fallback=getattr(policy, "fallback", "fixed"),
            heartbeat_interval_s=60.0,
            heartbeat_timeout_s=900.0,
            startup_timeout_s=max(300.0, 10 * config.runtime.start_s),
            drain_timeout_s=max(1.0, config.runtime.stop_s),
            stop_grace_s=1.0,
            timer_period_s=config.housekeeping_s,
            egresses=[config.runtime.egress],
            allow_cidrs=["127.0.0.0/8"],
        )

    # ------------------------------------------------------------------ plumbing

    def _push(self, at: float, kind: int, key: str = "", n: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, key, n))

    @property
    def now(self) -> float:
        return _seconds(self.clock)

    async def run(self) -> RunResult:
        with tempfile.TemporaryDirectory(prefix="skycrawl-sim-") as tmp:
            root = self._root or Path(tmp)
            self.clock = FakeClock(START)
            self.bus = NotingBus(root / "bus.sqlite3", clock=self.clock, on_send=self.on_send)
            self.ports = Ports(
                bus=self.bus,
                scheduler=WatchedScheduler(self.bus, self._due, self.clock, self.on_send),
                state=self.state_factory(root / "state.sqlite3", self.clock),
                blobs=FileBlobStore(root / "blobs"),
                runtimes={self.config.runtime.egress.name: SimContainerRuntime(self)},
                provisioner=DirectoryProvisioner(root),
                clock=self.clock,
            )
            try:
                await self._run()
            finally:
                await self.ports.close()
        return self.result

    async def _run(self) -> None:
        s = self.settings
        await self.bus.ensure_queue(name=s.inbox_queue, max_deliveries=s.max_deliveries)
        await self.bus.ensure_topic(topic=s.dispatch_topic)
        ids = iter(range(1, 10**9))
        self.conductor = Conductor(
            ports=self.ports, settings=s, engine_env={}, new_id=lambda: f"ctr-{next(ids):06d}"
        )
        quotas = Quotas(
            max_containers=self.config.max_containers,
            parallel_per_container=self.config.capacity,
            max_pending=1_000_000,
            submissions_per_minute=100_000,
        )
        for tenant_id in self.trace.tenants:
            tenant = Tenant(id=tenant_id, name=tenant_id, key_prefix=tenant_id,
                            key_sha256="0" * 64, quotas=quotas, created_at=START)  # fmt: skip
            await self.conductor.records.tenants.create("tenants", tenant_id, tenant)
            # what the provisioner creates with a tenant: its own dispatch topic
            await self.bus.ensure_topic(topic=tenant_topic(s.dispatch_topic, tenant_id))
            self._tenants[tenant_id] = TenantResult()
        for i, c in enumerate(self.trace.crawls):
            self._push(c.at_s, _ARRIVE, c.tenant, i)
        self._push(self.config.housekeeping_s, _HOUSEKEEPING)
        while True:
            nxt = self._next_time()
            if nxt is None:
                break
            if nxt > self.now:  # the clock counts microseconds: round up to the next one
                self.clock.advance(max(nxt - self.now, 1e-6))
            await self._due_events()
            await self._settle()
        for cid, box in self.boxes.items():
            if box.stopped is None:
                self._bill(cid, self.now)
        for cid, box in self.boxes.items():  # a cold start: a start not ahead of work
            if cid not in self._prewarmed:
                self.result.starts += 1
                self._tenants[box.tenant_id].starts += 1
        self.result.horizon_s = max(self.trace.horizon_s, self.now)
        self.result.tenants = dict(sorted(self._tenants.items()))

    def _next_time(self) -> float | None:
        """When the next thing is due; None once only the housekeeping timer is left,
        after the trace, with no container alive and no timer pending."""
        while self._due and self._due[0] <= self.now + 1e-6:
            heapq.heappop(self._due)
        only_housekeeping = all(e[2] == _HOUSEKEEPING for e in self._events)
        alive = any(b.alive for b in self.boxes.values())
        if only_housekeeping and not alive and not self._due and self.now >= self.trace.horizon_s:
            return None
        candidates = [e[0] for e in self._events[:1]] + self._due[:1]
        return max(self.now, min(candidates)) if candidates else None

    async def _due_events(self) -> None:
        while self._events and self._events[0][0] <= self.now + 1e-6:
            _, _, kind, key, n = heapq.heappop(self._events)
            if kind == _ARRIVE:
                await self._submit(key, n)
            elif kind == _READY:
                await self._ready(key)
            elif kind == _FAILED:
                self.boxes[key].alive = False
            elif kind == _DONE:
                await self._done(key, n)
            elif kind == _BEAT:
                await self._beat(key)
            elif kind == _HOUSEKEEPING:
                report = await Housekeeper(self.conductor).run()
                self.result.prewarms += len(report.prewarmed)
                self._prewarmed.update(report.prewarmed)
                self._push(self.now + self.config.housekeeping_s, _HOUSEKEEPING)

    async def _settle(self) -> None:
        """Drain the inbox and let engines read what was published, until all is quiet."""
        for _ in range(10_000):
            seen = await drain_inbox(
                self.conductor, self.bus, queue=self.settings.inbox_queue, max_messages=self._batch
            )
            touched, self.bus.touched = self.bus.touched, set()
            read = 0
            for cid in touched:
                if cid in self.boxes:
                    read += await self._read(cid)
            if not seen and not read:
                return
        raise RuntimeError("the simulated inbox never settles")

    async def _send(self, message: Frozen) -> None:
        await self.bus.send(queue=self.settings.inbox_queue, message=encode(message))

    # ------------------------------------------------------------------ the API's part

    async def _submit(self, tenant_id: str, i: int) -> None:
        now = self.clock.now()
        c = self.trace.crawls[i]
        records = self.conductor.records
        crawl = Crawl(
            id=f"c{i}",
            tenant_id=tenant_id,
            spec=CrawlSpec(seeds=[SEED_URL], session=c.session),
            created_at=now,
            updated_at=now,
        )
        await records.crawls.create(tenant_id, crawl.id, crawl)
        entry = ActiveCrawl(crawl_id=crawl.id, created_at=now)
        await records.active.create(tenant_id, crawl.id, entry)
        await records.listing.create(tenant_id, listing_key(now, crawl.id), entry)
        await records.index_pending(crawl)
        await self._send(CrawlSubmitted(tenant_id=tenant_id, crawl_id=crawl.id))

    # ------------------------------------------------------------------ runtime and engine

    def on_start(self, spec: ContainerSpec) -> None:
        self.boxes[spec.container_id] = _Box(spec.tenant_id, self.now)
        self.result.fleet_change(self.now, +1)
        rt = self.config.runtime
        failed = self.rng.random() < rt.failure_rate
        self._push(self.now + rt.sample_start(self.rng), _FAILED if failed else _READY,
                   spec.container_id)  # fmt: skip
        if failed:
            self.result.failed_starts += 1

    def on_stop(self, container_id: str) -> None:
        box = self.boxes.get(container_id)
        if box is None or box.stopped is not None:
            return
        box.alive = False
        self._bill(container_id, self.now + self.config.runtime.stop_s)
        self.result.fleet_change(self.now, -1)

    def _bill(self, cid: str, at: float) -> None:
        box = self.boxes[cid]
        box.stopped = at
        seconds = self.config.runtime.billed(at - box.started)
        self.result.container_s += seconds
        self._tenants[box.tenant_id].container_s += seconds

    def _topic(self, cid: str) -> str:
        return tenant_topic(self.settings.dispatch_topic, self.boxes[cid].tenant_id)

    def _subscription(self, cid: str) -> Subscription:
        return Subscription(self._topic(cid), subscription_name(cid))

    async def _ready(self, cid: str) -> None:
        box = self.boxes[cid]
        if not box.alive:
            return
        box.ready = self.now
        await self.bus.ensure_subscription(
            topic=self._topic(cid),
            name=subscription_name(cid),
            filter={"container_id": cid},
        )
        await self._send(ContainerReady(tenant_id=box.tenant_id, container_id=cid))
        self._push(self.now + self.settings.heartbeat_interval_s, _BEAT, cid)

    async def _beat(self, cid: str) -> None:
        box = self.boxes[cid]
        if not box.alive:
            return
        box.beats += 1
        beat = Heartbeat(tenant_id=box.tenant_id, container_id=cid,
                         in_flight=sorted(box.running), seq=box.beats)  # fmt: skip
        await self._send(beat)
        self._push(self.now + self.settings.heartbeat_interval_s, _BEAT, cid)

    async def _read(self, cid: str) -> int:
        box = self.boxes[cid]
        read = 0
        while box.alive:
            try:
                leases = await self.bus.receive(source=self._subscription(cid), max_messages=10)
            except NotFound:
                return read
            if not leases:
                return read
            for lease in leases:
                read += 1
                message = decode_dispatch(lease.body)
                await self.bus.ack(lease=lease)
                if message.container_id != cid:
                    continue
                if isinstance(message, DrainContainer):
                    box.alive = False
                    exited = ContainerExited(tenant_id=box.tenant_id, container_id=cid,
                                             exit_code=0, reason="drained")  # fmt: skip
                    await self._send(exited)
                    return read
                if isinstance(message, RunCrawl) and message.crawl_id not in box.attempts:
                    self._run_crawl(cid, box, message)
        return read

    def _run_crawl(self, cid: str, box: _Box, run: RunCrawl) -> None:
        box.attempts[run.crawl_id] = run.attempt
        box.running.add(run.crawl_id)
        i = int(run.crawl_id[1:])
        c = self.trace.crawls[i]
        wait = self.now - c.at_s
        cold = box.ready is not None and box.ready >= c.at_s
        self.result.add_crawl(wait, cold, self.config.slo_s)
        self._tenants[box.tenant_id].add_crawl(wait, cold, self.config.slo_s)
        self._push(self.now + c.duration_s, _DONE, cid, i)

    async def _done(self, cid: str, i: int) -> None:
        box = self.boxes[cid]
        crawl_id = f"c{i}"
        if not box.alive or crawl_id not in box.running:
            return
        box.running.discard(crawl_id)
        done = CrawlCompleted(
            container_id=cid,
            tenant_id=box.tenant_id,
            crawl_id=crawl_id,
            attempt=box.attempts[crawl_id],
            counts=CrawlCounts(queued=1, fetched=1),
        )
        await self._send(done)
