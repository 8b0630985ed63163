"""Harness for the conductor tests: the real local ports on temporary files, one FakeClock.

* ``Harness`` wires ``Conductor`` + ``Housekeeper`` over ``SqliteMessageBus``,
  ``SqliteScheduler`` (seen through ``SchedulerProbe``), ``SqliteStateStore``,
  ``FileBlobStore`` and ``DirectoryProvisioner``; every port reads the same ``FakeClock``, so
  kill timers, leases and timeouts move only when a test advances it. ``another_conductor()``
  opens a second instance over the same SQLite files, as a second function instance would.
* ``RecordingRuntime`` is the one test double, at the container boundary.
* ``FakeEngine`` plays the container side of the protocol the way ``engine_container.worker``
  does: subscription first, then ``ready``; work is read from its own subscription.
* ``submit`` / ``cancel`` write records and messages exactly as ``core.api.crawls`` does.

The harness is a module (not ``conftest.py``) because the hypothesis state machine builds a
fresh one per example outside pytest's fixtures; ``conftest.py`` holds the fixtures.
"""

from __future__ import annotations

import inspect
import itertools
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.local.blob_store import FileBlobStore
from adapters.local.message_bus import SqliteMessageBus
from adapters.local.provider import engine_env
from adapters.local.provisioner import DirectoryProvisioner
from adapters.local.scheduler import SqliteScheduler
from adapters.local.state_store import SqliteStateStore
from core.clock import FakeClock, SkewedClock
from core.conductor import Conductor, Housekeeper, HousekeepingReport
from core.errors import Conflict, NotFound
from core.inbox import drain_inbox
from core.layout import subscription_name, tenant_topic
from core.messages import (
    CancelCrawl,
    CancelRequested,
    ContainerExited,
    ContainerReady,
    CrawlCompleted,
    CrawlFailed,
    CrawlPaused,
    CrawlSubmitted,
    DrainContainer,
    Heartbeat,
    KillTimer,
    PauseCrawl,
    Progress,
    ProxyStats,
    RunCrawl,
    decode_dispatch,
    decode_inbox,
    encode,
)
from core.metering import crawl_done
from core.models import (
    Container,
    Crawl,
    CrawlCounts,
    CrawlSpec,
    CrawlState,
    Egress,
    Frozen,
    Quotas,
    SessionBinding,
    Tenant,
)
from core.ports import (
    ContainerSpec,
    ContainerStatus,
    OutboundMessage,
    Ports,
    Queue,
    RunState,
    RuntimeCapabilities,
    SchedulerCapabilities,
    Subscription,
    dead_letter_queue,
)
from core.records import ActiveCrawl, Records, listing_key
from core.settings import LocalSettings, SkycrawlSettings

START = datetime(2030, 1, 1, tzinfo=UTC)
SEED = "https://example.com/"

#: Small, explicit values: every timeout is reached by advancing the FakeClock a little.
DEFAULTS: dict[str, Any] = {
    "provider": "local",
    "inbox_queue": "inbox",
    "dispatch_topic": "dispatch",
    "idle_ttl_s": 30.0,
    "idle_policy": "fixed",
    "startup_timeout_s": 60.0,
    "heartbeat_interval_s": 5.0,
    "heartbeat_timeout_s": 40.0,
    "stop_grace_s": 1.0,
    "drain_timeout_s": 2.0,
    "max_attempts": 3,
    "max_deliveries": 5,
    "timer_period_s": 5.0,
    "checkpoint_interval_s": 5.0,
    "engine_image": "skycrawl-engine:test",
    "egresses": [Egress(name="local")],
    "allow_cidrs": ["127.0.0.0/8"],
}


def make_settings(**overrides: Any) -> SkycrawlSettings:
    return SkycrawlSettings(**{**DEFAULTS, **overrides})


# --------------------------------------------------------------------------- runtime double


class RecordingRuntime:
    """ContainerRuntime test double: records what the conductor asks, answers as told.

    ``start_container`` records the ``ContainerSpec`` (the container is then ``running``);
    ``stop_container`` records the GUID (the container is then ``exited``); ``describe``
    answers ``running`` / ``exited`` / ``unknown`` as the test sets with ``set_state``
    (``unknown`` for a GUID never started). ``fail_starts`` makes the next starts raise (the
    GUID is then in ``refused``: no process ran, its state is ``exited`` with code 125), and
    ``on_stop`` lets a test look at the stored records at the moment of a stop.

    This is a double only at the process/cloud boundary: the real runtimes
    (``SubprocessRuntime``, and ECS, Container Instances and Cloud Run) are covered by the
    ContainerRuntime contract suite in ``tests/contract/``.
    """

    capabilities = RuntimeCapabilities(name="recording", typical_start_s=0.0, max_grace_s=300.0)

    def __init__(self) -> None:
        self.started: list[ContainerSpec] = []
        self.stopped: list[str] = []
        self.fail_starts = 0
        self.fail_stops = 0
        self.refused: list[str] = []
        self.on_start: Callable[[ContainerSpec], Awaitable[None]] | None = None
        self.on_stop: Callable[[str], Awaitable[None]] | None = None
        self._states: dict[str, tuple[RunState, int | None]] = {}

    @property
    def started_ids(self) -> list[str]:
        return [spec.container_id for spec in self.started]

    def spec(self, container_id: str) -> ContainerSpec:
        return next(s for s in self.started if s.container_id == container_id)

    def set_state(self, container_id: str, state: RunState, exit_code: int | None = None) -> None:
        self._states[container_id] = (state, exit_code)

    async def start_container(self, *, spec: ContainerSpec) -> None:
        self.started.append(spec)
        if self.on_start is not None:
            await self.on_start(spec)
        if self.fail_starts > 0:
            self.fail_starts -= 1
            self.refused.append(spec.container_id)
            self.set_state(spec.container_id, RunState.exited, 125)
            raise RuntimeError("no capacity in this region")
        self.set_state(spec.container_id, RunState.running)

    async def stop_container(
        self, *, container_id: str, egress: Egress, grace_s: float = 10
    ) -> None:
        if self.fail_stops > 0:
            self.fail_stops -= 1
            raise RuntimeError("the runtime's API timed out")
        if self.on_stop is not None:
            await self.on_stop(container_id)
        self.stopped.append(container_id)
        state, _ = self._states.get(container_id, (RunState.unknown, None))
        if state is RunState.running:
            self.set_state(container_id, RunState.exited, 143)

    async def describe(self, *, container_id: str, egress: Egress) -> ContainerStatus:
        state, code = self._states.get(container_id, (RunState.unknown, None))
        return ContainerStatus(container_id=container_id, state=state, exit_code=code)

    async def list_running(self, *, egress: Egress) -> list[ContainerStatus]:
        egress_of = {spec.container_id: spec.egress.name for spec in self.started}
        return [
            ContainerStatus(container_id=cid, state=state)
            for cid, (state, _) in self._states.items()
            if state is RunState.running and egress_of.get(cid) == egress.name
        ]

    async def close(self) -> None:
        return None


class SchedulerProbe:
    """The real ``SqliteScheduler`` behind a window: records every scheduled message and can
    report a shorter native delay (``max_delay_s``), as SQS ``DelaySeconds`` (15 min) has."""

    def __init__(self, inner: SqliteScheduler, *, max_delay_s: float | None = None) -> None:
        self._inner = inner
        native = inner.capabilities
        self.capabilities = SchedulerCapabilities(
            max_delay_s=native.max_delay_s if max_delay_s is None else max_delay_s,
            can_cancel=native.can_cancel,
        )
        self.scheduled: list[tuple[datetime, OutboundMessage]] = []

    async def schedule(self, *, queue: str, message: OutboundMessage, delay_s: float) -> str:
        deliver_at = self._inner._bus.clock.now() + timedelta(seconds=max(0.0, delay_s))
        self.scheduled.append((deliver_at, message))
        return await self._inner.schedule(queue=queue, message=message, delay_s=delay_s)

    async def cancel(self, *, handle: str) -> bool:
        return await self._inner.cancel(handle=handle)

    async def close(self) -> None:
        await self._inner.close()


# --------------------------------------------------------------------------- the harness

#: The ``make_harness`` fixture: ``await make_harness(**settings)``.
MakeHarness = Callable[..., Awaitable["Harness"]]


@dataclass
class Harness:
    root: Path
    clock: FakeClock
    settings: SkycrawlSettings
    runtime: RecordingRuntime
    ports: Ports
    scheduler: SchedulerProbe
    conductor: Conductor
    max_delay_s: float | None = None
    sent: list[OutboundMessage] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _extra: list[Ports] = field(default_factory=list)
    engines: dict[str, FakeEngine] = field(default_factory=dict)
    topic_limit: int | None = None  # subscriptions one topic may hold on this bus
    #: The runtime of each egress (``runtime_per_egress``), else ``runtime`` for every one.
    runtimes: dict[str, RecordingRuntime] = field(default_factory=dict)

    @classmethod
    async def create(
        cls,
        root: Path,
        *,
        max_delay_s: float | None = None,
        topic_limit: int | None = None,
        runtime_per_egress: bool = False,
        **overrides: Any,
    ) -> Harness:
        clock = FakeClock(START)
        settings = make_settings(**overrides)
        runtime = RecordingRuntime()
        runtimes = {e.name: runtime for e in settings.egresses}
        if runtime_per_egress:
            runtimes = {e.name: RecordingRuntime() for e in settings.egresses}
            runtime = runtimes[settings.egresses[0].name]
        ports, probe = _open_ports(
            root, clock, runtimes, max_delay_s, settings.dispatch_topic, topic_limit
        )
        await ports.bus.ensure_queue(
            name=settings.inbox_queue, max_deliveries=settings.max_deliveries
        )
        ids = itertools.count(1)
        conductor = _make_conductor(ports, settings, root, ids)
        return cls(
            root,
            clock,
            settings,
            runtime,
            ports,
            probe,
            conductor,
            max_delay_s,
            _ids=ids,
            runtimes=runtimes,
            topic_limit=topic_limit,
        )

    def another_conductor(self, *, skew_s: float = 0.0, plan: FaultPlan | None = None) -> Conductor:
        """A second conductor instance: its own bus and state clients on the same files.
        ``skew_s``: its own clock is that far off (the services keep the true time);
        ``plan``: it may die at any of its port calls (``FaultPlan``)."""
        ports, _ = _open_ports(
            self.root,
            self.clock,
            self.runtimes,
            self.max_delay_s,
            self.settings.dispatch_topic,
            self.topic_limit,
        )
        if skew_s:
            ports.clock = SkewedClock(self.clock, skew_s)
        self._extra.append(ports)
        if plan is not None:
            ports = faulty_ports(ports, plan)
        return _make_conductor(ports, self.settings, self.root, self._ids)

    async def close(self) -> None:
        for ports in (self.ports, *self._extra):
            await ports.close()

    @property
    def records(self) -> Records:
        return self.conductor.records

    @property
    def bus(self) -> SqliteMessageBus:
        bus = self.ports.bus
        assert isinstance(bus, SqliteMessageBus)
        return bus

    # ------------------------------------------------------------------ tenants and crawls

    async def add_tenant(self, tenant_id: str = "t1", **quotas: int) -> Tenant:
        made = await self.ports.provisioner.provision(tenant_id=tenant_id)  # its dispatch topic
        tenant = Tenant(
            id=tenant_id,
            name=f"tenant {tenant_id}",
            key_prefix=f"key-{tenant_id}",
            key_sha256="0" * 64,
            quotas=Quotas(**quotas),
            created_at=self.clock.now(),
            resources=dict(made),
        )
        await self.records.tenants.create("tenants", tenant_id, tenant)
        return tenant

    async def submit(
        self,
        tenant_id: str = "t1",
        *,
        session: str | None = None,
        traceparent: str | None = None,
        **spec: Any,
    ) -> str:
        """What ``POST /v1/crawls`` stores and sends; returns the crawl id."""
        now = self.clock.now()
        crawl_id = f"cr_{next(self._ids):032x}"
        crawl = Crawl(
            id=crawl_id,
            tenant_id=tenant_id,
            spec=CrawlSpec(seeds=[SEED], session=session, **spec),
            created_at=now,
            updated_at=now,
            traceparent=traceparent,
        )
        await self.records.crawls.create(tenant_id, crawl_id, crawl)
        entry = ActiveCrawl(crawl_id=crawl_id, created_at=now)
        await self.records.active.create(tenant_id, crawl_id, entry)
        await self.records.listing.create(tenant_id, listing_key(now, crawl_id), entry)
        await self.records.index_pending(crawl)
        await self.send(
            CrawlSubmitted(tenant_id=tenant_id, crawl_id=crawl_id, traceparent=traceparent)
        )
        return crawl_id

    async def cancel(self, tenant_id: str, crawl_id: str) -> None:
        """What ``DELETE /v1/crawls/{id}`` does: mark cancelled, drop the index, tell the inbox."""
        now = self.clock.now()
        before: Crawl | None = None

        def cancelled(c: Crawl) -> Crawl | None:
            nonlocal before
            before = c
            if c.state.terminal:
                return None
            new = c.model_copy(
                update={
                    "state": CrawlState.cancelled,
                    "finished_at": now,
                    "updated_at": now,
                    "reason": "cancelled by the tenant",
                }
            )
            return new.model_copy(update={"outbox": (*new.outbox, crawl_done(new, now))})

        _, changed = await self.records.crawls.mutate(tenant_id, crawl_id, cancelled)
        assert changed, "only a running or pending crawl can be cancelled"
        assert before is not None
        await self.records.active.discard(tenant_id, crawl_id)
        await self.send(
            CancelRequested(
                tenant_id=tenant_id, crawl_id=crawl_id, container_id=before.container_id
            )
        )

    async def send(self, message: Frozen) -> OutboundMessage:
        """Put a message on the conductor's inbox (and remember it for duplicate delivery)."""
        outbound = encode(message)
        await self.resend(outbound)
        return outbound

    async def resend(self, outbound: OutboundMessage) -> None:
        self.sent.append(outbound)
        await self.bus.send(queue=self.settings.inbox_queue, message=outbound)

    # ------------------------------------------------------------------ driving

    async def pump(self, conductor: Conductor | None = None, *, batch: int = 10) -> int:
        """Hand inbox messages to ``conductor`` until none is visible; returns how many."""
        conductor = conductor or self.conductor
        total = 0
        for _ in range(1000):
            seen = await drain_inbox(
                conductor, conductor.ports.bus, queue=self.settings.inbox_queue, max_messages=batch
            )
            if seen == 0:
                return total
            total += seen
        raise AssertionError("the inbox never drains: handlers keep producing visible messages")

    async def housekeeping(self, conductor: Conductor | None = None) -> HousekeepingReport:
        """One run of the timer trigger, then the inbox it fed."""
        conductor = conductor or self.conductor
        report = await Housekeeper(conductor).run()
        await self.pump(conductor)
        return report

    async def advance(self, seconds: float, *, beating: tuple[FakeEngine, ...] = ()) -> None:
        """Let time pass in steps of at most 5 s; ``beating`` engines heartbeat every step.
        Delivers what falls due (kill timers) after each step; no housekeeping."""
        remaining = seconds
        while remaining > 0:
            step = min(remaining, 5.0)
            for engine in beating:
                await engine.heartbeat()
            self.clock.advance(step)
            remaining -= step
            await self.pump()
            if await self.answer_drains():
                await self.pump()

    async def run_for(self, seconds: float, *, beating: tuple[FakeEngine, ...] = ()) -> None:
        """Like ``advance``, with the housekeeping timer firing every ``timer_period_s``."""
        period = self.settings.timer_period_s
        elapsed = 0.0
        while elapsed < seconds:
            step = min(period, seconds - elapsed)
            await self.advance(step, beating=beating)
            elapsed += step
            await self.housekeeping()

    def engine(self, container_id: str, tenant_id: str = "t1") -> FakeEngine:
        """The engine of ``container_id`` (one object per container)."""
        if container_id not in self.engines:
            self.engines[container_id] = FakeEngine(self, container_id, tenant_id)
        return self.engines[container_id]

    async def answer_drains(self) -> int:
        """Every live engine does what the real one does when told to drain: it says
        ``ContainerExited`` and exits. Other work stays for ``FakeEngine.work``."""
        answered = 0
        for engine in list(self.engines.values()):
            if engine.alive and await engine.take_drain():
                answered += 1
        return answered

    # ------------------------------------------------------------------ reading state

    async def crawl(self, crawl_id: str, tenant_id: str = "t1") -> Crawl:
        found = await self.records.crawls.get(tenant_id, crawl_id)
        assert found is not None, f"crawl {crawl_id} is lost"
        return found.value

    async def container(self, container_id: str, tenant_id: str = "t1") -> Container:
        found = await self.records.containers.get(tenant_id, container_id)
        assert found is not None, f"container {container_id} has no record"
        return found.value

    async def containers(self, tenant_id: str = "t1") -> list[Container]:
        return [v.value for v in await self.records.containers.query(tenant_id)]

    async def live(self, tenant_id: str = "t1") -> list[Container]:
        return await self.records.live_containers(tenant_id)

    async def fleet(self, tenant_id: str = "t1") -> tuple[str, ...]:
        found = await self.records.fleets.get(tenant_id, "fleet")
        return () if found is None else found.value.containers

    async def binding(self, session: str, tenant_id: str = "t1") -> SessionBinding | None:
        found = await self.records.sessions.get(tenant_id, session)
        return None if found is None else found.value

    async def active_ids(self, tenant_id: str = "t1") -> set[str]:
        return {v.value.crawl_id for v in await self.records.active.query(tenant_id)}

    def topic(self, tenant_id: str = "t1") -> str:
        """The tenant's dispatch topic."""
        return tenant_topic(self.settings.dispatch_topic, tenant_id)

    async def tenants_topics(self) -> dict[str, list[str]]:
        """Every topic on the bus with its subscriptions, sorted."""
        return {topic: sorted(names) for topic, names in (await self.bus.topics()).items()}

    async def subscription_exists(self, container_id: str, tenant_id: str = "t1") -> bool:
        source = Subscription(self.topic(tenant_id), subscription_name(container_id))
        try:
            leases = await self.bus.receive(source=source, max_messages=10)
        except NotFound:
            return False
        for lease in leases:
            await self.bus.release(lease=lease)
        return True

    async def dead_letters(self) -> list[tuple[dict[str, str], bytes]]:
        """Messages in the inbox's dead-letter queue: (attributes, body)."""
        queue = Queue(dead_letter_queue(self.settings.inbox_queue))
        leases = await self.bus.receive(source=queue, max_messages=100)
        for lease in leases:
            await self.bus.release(lease=lease)
        return [(dict(lease.attributes), lease.body) for lease in leases]

    async def snapshot(self, tenant_id: str = "t1") -> dict[str, Any]:
        """Everything a duplicate message must not change."""
        crawls = {v.value.id: v.value for v in await self.records.crawls.query(tenant_id)}
        containers = {c.id: c for c in await self.containers(tenant_id)}
        sessions = {v.value.session: v.value for v in await self.records.sessions.query(tenant_id)}
        return {
            "crawls": crawls,
            "containers": containers,
            "sessions": sessions,
            "fleet": await self.fleet(tenant_id),
            "active": await self.active_ids(tenant_id),
            "started": list(self.runtime.started_ids),
            "stopped": list(self.runtime.stopped),
        }


def _make_conductor(
    ports: Ports, settings: SkycrawlSettings, root: Path, ids: Iterator[int]
) -> Conductor:
    """A conductor as a composition root builds it: GUIDs are numbered so runs repeat."""
    return Conductor(
        ports=ports,
        settings=settings,
        engine_env=engine_env(LocalSettings(data_dir=root)),
        new_id=lambda: f"ctr-{next(ids):04d}",
    )


def _open_ports(
    root: Path,
    clock: FakeClock,
    runtimes: dict[str, RecordingRuntime],
    max_delay_s: float | None,
    dispatch_topic: str,
    topic_limit: int | None = None,
) -> tuple[Ports, SchedulerProbe]:
    bus = SqliteMessageBus(
        root / "bus.sqlite3", clock=clock, max_subscriptions_per_topic=topic_limit
    )
    probe = SchedulerProbe(SqliteScheduler(bus), max_delay_s=max_delay_s)
    ports = Ports(
        bus=bus,
        scheduler=probe,
        state=SqliteStateStore(root / "state.sqlite3", clock=clock),
        blobs=FileBlobStore(root / "blobs"),
        runtimes=dict(runtimes),
        provisioner=DirectoryProvisioner(root, bus=bus, dispatch_topic=dispatch_topic),
        clock=clock,
    )
    return ports, probe


# --------------------------------------------------------------------------- container side


@dataclass
class FakeEngine:
    """The container's side of the protocol, as ``engine_container.worker`` speaks it."""

    harness: Harness
    id: str
    tenant_id: str = "t1"
    foreign: list[bytes] = field(default_factory=list)  # messages not for this GUID
    attempts: dict[str, int] = field(default_factory=dict)  # crawl -> attempt it runs
    running: set[str] = field(default_factory=set)  # what its heartbeat reports
    beat_seq: int = 0
    alive: bool = True  # False once it exited: it answers nothing any more
    drained: bool = False
    stash: list[RunCrawl | CancelCrawl | PauseCrawl] = field(default_factory=list)  # unread

    @property
    def subscription(self) -> Subscription:
        return Subscription(self.harness.topic(self.tenant_id), subscription_name(self.id))

    async def subscribe(self) -> None:
        await self.harness.bus.ensure_subscription(
            topic=self.harness.topic(self.tenant_id),
            name=subscription_name(self.id),
            filter={"container_id": self.id},
        )

    async def ready(
        self, egress_ip: str = "203.0.113.7", *, browser: bool = False
    ) -> OutboundMessage:
        """Subscribe, then say ``ready: GUID`` (the handshake of the brief's step 4);
        ``browser``: it can render pages."""
        await self.subscribe()
        return await self.send(
            ContainerReady(
                tenant_id=self.tenant_id,
                container_id=self.id,
                egress_ip=egress_ip,
                browser=browser,
            )
        )

    async def take_drain(self) -> bool:
        """Read the subscription; on ``DrainContainer`` say ``ContainerExited`` and stop."""
        await self._read()
        if not self.drained or not self.alive:
            return False
        self.alive = False
        self.harness.runtime.set_state(self.id, RunState.exited, 0)
        await self.send(
            ContainerExited(
                tenant_id=self.tenant_id, container_id=self.id, exit_code=0, reason="drained"
            )
        )
        return True

    async def work(self) -> list[RunCrawl | CancelCrawl | PauseCrawl]:
        """Take (and acknowledge) everything waiting on this container's subscription."""
        await self._read()
        received, self.stash = self.stash, []
        return received

    async def _read(self) -> None:
        received = self.stash
        while True:
            try:
                leases = await self.harness.bus.receive(source=self.subscription, max_messages=10)
            except NotFound:  # removed when the container was stopped
                return
            if not leases:
                return
            for lease in leases:
                message = decode_dispatch(lease.body)
                if lease.attributes.get("container_id") != self.id or message.container_id != (
                    self.id
                ):
                    self.foreign.append(lease.body)
                elif isinstance(message, DrainContainer):
                    self.drained = True
                else:
                    received.append(message)
                    if isinstance(message, RunCrawl):
                        self.attempts[message.crawl_id] = message.attempt
                        self.running.add(message.crawl_id)
                    elif isinstance(message, CancelCrawl):
                        self.running.discard(message.crawl_id)
                await self.harness.bus.ack(lease=lease)

    async def runs(self) -> list[RunCrawl]:
        return [m for m in await self.work() if isinstance(m, RunCrawl)]

    async def send(self, message: Frozen) -> OutboundMessage:
        return await self.harness.send(message)

    async def complete(self, crawl_id: str, fetched: int = 3) -> OutboundMessage:
        counts = CrawlCounts(queued=fetched, fetched=fetched, bytes=1000 * fetched)
        self.running.discard(crawl_id)
        return await self.send(
            CrawlCompleted(
                container_id=self.id,
                tenant_id=self.tenant_id,
                crawl_id=crawl_id,
                attempt=self.attempts.get(crawl_id, 0),
                counts=counts,
            )
        )

    async def paused(self, crawl_id: str, fetched: int = 2) -> OutboundMessage:
        """It finished the pages in flight and checkpointed, as told by ``PauseCrawl``."""
        self.running.discard(crawl_id)
        return await self.send(
            CrawlPaused(
                container_id=self.id,
                tenant_id=self.tenant_id,
                crawl_id=crawl_id,
                attempt=self.attempts.get(crawl_id, 0),
                counts=CrawlCounts(queued=5, fetched=fetched, bytes=1000 * fetched),
            )
        )

    async def fail(self, crawl_id: str, *, retryable: bool, error: str = "boom") -> OutboundMessage:
        self.running.discard(crawl_id)
        return await self.send(
            CrawlFailed(
                container_id=self.id,
                tenant_id=self.tenant_id,
                crawl_id=crawl_id,
                attempt=self.attempts.get(crawl_id, 0),
                error=error,
                retryable=retryable,
            )
        )

    async def progress(self, crawl_id: str, fetched: int) -> OutboundMessage:
        return await self.send(
            Progress(
                container_id=self.id,
                tenant_id=self.tenant_id,
                crawl_id=crawl_id,
                attempt=self.attempts.get(crawl_id, 0),
                counts=CrawlCounts(fetched=fetched),
            )
        )

    async def heartbeat(
        self, proxies: dict[str, ProxyStats] | None = None, *, browser: bool = False
    ) -> OutboundMessage:
        """A heartbeat (with per-proxy numbers, as the engine reports them)."""
        self.beat_seq += 1
        return await self.send(
            Heartbeat(
                tenant_id=self.tenant_id,
                container_id=self.id,
                in_flight=sorted(self.running),
                seq=self.beat_seq,
                proxies=proxies or {},
                browser=browser,
            )
        )

    async def exited(self, exit_code: int = 137, reason: str = "") -> OutboundMessage:
        """The process died: the runtime says so, and so does the message."""
        self.alive = False
        self.harness.runtime.set_state(self.id, RunState.exited, exit_code)
        return await self.send(
            ContainerExited(
                tenant_id=self.tenant_id, container_id=self.id, exit_code=exit_code, reason=reason
            )
        )


# --------------------------------------------------------------------------- small helpers


async def start_ready(
    harness: Harness, tenant_id: str = "t1", **spec: Any
) -> tuple[str, FakeEngine]:
    """Submit one crawl, let its container come up, and return (crawl id, engine)."""
    crawl_id = await harness.submit(tenant_id, **spec)
    await harness.pump()
    crawl = await harness.crawl(crawl_id, tenant_id)
    assert crawl.container_id is not None
    engine = harness.engine(crawl.container_id, tenant_id)
    await engine.ready()
    await harness.pump()
    return crawl_id, engine


def kill_timers(harness: Harness) -> list[tuple[datetime, KillTimer]]:
    """Every kill timer scheduled so far: (deliver_at, message)."""
    timers = []
    for deliver_at, outbound in harness.scheduler.scheduled:
        timer = decode_inbox(outbound.body)
        if isinstance(timer, KillTimer):
            timers.append((deliver_at, timer))
    return timers


class InstanceKilled(BaseException):
    """The function instance died mid-handler (a timeout kill): nothing is caught, nothing
    released; the message comes back when its lease runs out."""


def fail_next(
    target: object,
    method: str,
    times: int = 1,
    *,
    when: str = "",
    error: type[BaseException] = ConnectionError,
) -> list[str]:
    """Make the next ``times`` calls of ``target.method`` raise ``error`` (a transient cloud
    fault by default), counting only calls whose keyword arguments mention ``when``.
    Returns the list of failures so far."""
    original = getattr(target, method)
    failures: list[str] = []

    async def flaky(**kwargs: Any) -> Any:
        if len(failures) < times and when in repr(kwargs):
            failures.append(method)
            raise error(f"{method}: connection reset by peer")
        return await original(**kwargs)

    setattr(target, method, flaky)
    return failures


async def set_container(
    harness: Harness, container_id: str, tenant_id: str = "t1", **update: Any
) -> Container:
    """Compare-and-set a container record, as a conductor instance would have."""

    def change(c: Container) -> Container:
        return c.model_copy(update=update)

    for _ in range(5):
        found = await harness.records.containers.get(tenant_id, container_id)
        assert found is not None
        try:
            await harness.records.containers.replace(found, change(found.value))
        except Conflict:
            continue
        return await harness.container(container_id, tenant_id)
    raise AssertionError("could not update the container record")


# --------------------------------------------------------------------------- fault injection


@dataclass
class FaultPlan:
    """When an instance dies: at every port call it makes (before the call, and after it
    returned -- the two sides of every await point of a handler), ``InstanceKilled`` is
    raised if the call is number ``die_at`` (counted from 0 since ``die_at`` was set) or, at
    random, with probability ``rate``. ``calls`` counts every call; ``deaths`` every death."""

    rate: float = 0.0
    die_at: int | None = None
    seed: int = 0
    calls: int = 0
    deaths: int = 0
    _counted: int = 0
    _random: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._random.seed(self.seed)

    def die_at_call(self, index: int | None) -> None:
        self.die_at, self._counted = index, 0

    def point(self, where: str) -> None:
        """One await point; raises ``InstanceKilled`` if the instance dies here."""
        self.calls += 1
        hit = self.die_at is not None and self._counted == self.die_at
        self._counted += 1
        if hit or (self.rate and self._random.random() < self.rate):
            self.die_at = None if hit else self.die_at
            self.deaths += 1
            raise InstanceKilled(f"instance died at {where}")


class FaultyPort:
    """``inner`` with a ``FaultPlan`` point before and after every coroutine method call;
    everything else (``capabilities``, plain methods) passes through."""

    def __init__(self, inner: object, plan: FaultPlan, name: str) -> None:
        self._inner = inner
        self._plan = plan
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if not inspect.iscoroutinefunction(value):
            return value
        plan, where = self._plan, f"{self._name}.{attr}"

        async def call(*args: Any, **kwargs: Any) -> Any:
            plan.point(f"{where} (before)")
            result = await value(*args, **kwargs)
            plan.point(f"{where} (after)")
            return result

        return call


def faulty_ports(ports: Ports, plan: FaultPlan) -> Ports:
    """The same ports, every bus, scheduler, state and runtime call an await point where
    ``plan`` may kill the instance (blobs and the provisioner are not used by the conductor's
    handlers)."""
    return Ports(
        bus=FaultyPort(ports.bus, plan, "bus"),  # type: ignore[arg-type]
        scheduler=FaultyPort(ports.scheduler, plan, "scheduler"),  # type: ignore[arg-type]
        state=FaultyPort(ports.state, plan, "state"),  # type: ignore[arg-type]
        blobs=ports.blobs,
        runtimes={
            name: FaultyPort(runtime, plan, f"runtime[{name}]")  # type: ignore[misc]
            for name, runtime in ports.runtimes.items()
        },
        provisioner=ports.provisioner,
        clock=ports.clock,
        pool=ports.pool,
    )
