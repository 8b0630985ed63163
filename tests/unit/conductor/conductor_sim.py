"""A fleet simulation that counts what the conductor must never do (``make stress``).

The control plane is real: ``N`` ``Conductor`` instances (and their ``Housekeeper``) over
the embedded stack's own SQLite ports (``adapters.local.provider.build_ports``: one bus,
scheduler and state store on shared files), every instance with its own clock skewed by up
to ``skew_s`` (the services keep the true time), and every port call of every instance an
await point where it may die (``FaultPlan``): a death cancels every handler the instance is
running, its leases run out and the messages come back to the others. Instances handle the
inbox at the same time, for real (each SQLite client runs on its own thread).

The containers are simulated (``SimRuntime``: the one boundary that is not real here -- a
subprocess per container would not fit 1,000 crawls on two shared cores): each speaks the
engine's protocol over the same bus -- subscription, ``ready``, heartbeats with a sequence
number and what it runs, one run per (crawl, attempt), completion reports, drain -- and may
crash (with or without a ``ContainerExited``), hang silently, or never come up; the
runtime's stop may fail. Time is a ``FakeClock`` moved one second per tick.

Every crawl is submitted as the API stores it, and its ``CrawlSubmitted`` is delivered
``deliveries`` times, all of them shuffled. The figures (``Figures``):

* crawls lost -- the record is gone, or it ended in a way no engine caused (completed
  without a completion, failed or dead-lettered although a run completed, cancelled);
* crawls stuck -- not finished when the run ends (everything healthy for the last minutes);
* concurrent duplicate runs -- a crawl started on a container while another container that
  was not yet stopped still held it;
* tenants over their container limit -- a container started while the tenant already had
  ``max_containers`` processes not yet stopped (booting, running or hung);
* containers stopped with work -- a healthy container drained or stopped while running;
* premature kills -- a healthy idle container drained or stopped before ``idle_ttl_s`` of
  idleness, or stopped without being drained;
* re-executions -- runs of a crawl after its first; each must follow a run that ended by a
  crash, hang or reap of its container (``re-executions not after a crash`` counts those
  that did not).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from conductor_harness import START, FaultPlan, InstanceKilled, faulty_ports, make_settings

from adapters.local.message_bus import SqliteMessageBus
from adapters.local.provider import build_ports, engine_env
from core.clock import FakeClock, SkewedClock
from core.conductor import Conductor, Housekeeper
from core.errors import NotFound
from core.inbox import process_lease
from core.layout import subscription_name, tenant_topic
from core.messages import (
    CancelCrawl,
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
from core.models import Crawl, CrawlCounts, CrawlSpec, CrawlState, Egress, Quotas, Tenant
from core.ports import (
    ContainerSpec,
    ContainerStatus,
    OutboundMessage,
    Ports,
    Queue,
    RunState,
    RuntimeCapabilities,
    Subscription,
)
from core.records import ActiveCrawl, Records, listing_key
from core.settings import LocalSettings, SkycrawlSettings


@dataclass(frozen=True)
class SimConfig:
    instances: int = 8
    tenants: int = 10
    crawls: int = 1000
    deliveries: int = 3
    max_containers: int = 3
    parallel: int = 4
    skew_s: float = 300.0
    death_rate: float = 0.002  # per await point of an instance
    crash_rate: float = 0.004  # per running container per second
    stop_failure_rate: float = 0.2
    boot_failure_rate: float = 0.03  # containers that never say ready
    run_s: tuple[float, float] = (5.0, 30.0)
    submit_per_s: int = 100  # CrawlSubmitted messages put on the inbox per simulated second
    visibility_s: float = 120.0  # the lease a dead instance's messages wait out
    seed: int = 1


SETTINGS = {
    "idle_ttl_s": 30.0,
    "startup_timeout_s": 60.0,
    "heartbeat_interval_s": 5.0,
    "heartbeat_timeout_s": 40.0,
    "drain_timeout_s": 10.0,
    "timer_period_s": 5.0,
    "max_attempts": 6,
    "max_deliveries": 50,
}


@dataclass
class Execution:
    crawl_id: str
    container_id: str
    attempt: int
    started: datetime
    outcome: str = "running"  # completed, crashed, hung, stopped, drained, cancelled


@dataclass
class Process:
    """One simulated container: what its engine does and what the runtime reports."""

    spec: ContainerSpec
    boots_at: datetime
    boots: bool
    state: str = "booting"  # booting, ready, hung, exited, stopped
    exit_code: int | None = None
    runs: dict[str, tuple[Execution, datetime]] = field(default_factory=dict)
    finished: set[tuple[str, int]] = field(default_factory=set)
    seq: int = 0
    next_beat: datetime | None = None
    idle_since: datetime | None = None
    drained: bool = False

    ended: datetime | None = None  # when it exited, hung or was stopped
    ended_how: str = ""  # crashed, hung, stopped, drained

    @property
    def alive(self) -> bool:  # not yet stopped or exited: it may still hold work
        return self.state in ("booting", "ready", "hung")

    @property
    def healthy(self) -> bool:
        return self.state == "ready"


@dataclass
class Figures:
    instances: int = 0
    crawls: int = 0
    deliveries: int = 0
    skews_s: list[float] = field(default_factory=list)
    simulated_s: float = 0.0
    finished_at_s: float = 0.0  # when the last crawl finished (then: scaling to zero)
    wall_s: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0
    handled: int = 0
    instance_deaths: int = 0
    containers_started: int = 0
    container_crashes: Counter[str] = field(default_factory=Counter)
    failed_stops: int = 0
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    over_limit: list[str] = field(default_factory=list)
    stopped_with_work: list[str] = field(default_factory=list)
    premature_kills: list[str] = field(default_factory=list)
    reexecutions: int = 0
    reexecutions_not_after_crash: list[str] = field(default_factory=list)
    dead_lettered: int = 0
    left_running: list[str] = field(default_factory=list)

    @property
    def zeros(self) -> dict[str, int]:
        """The figures that must all be 0."""
        return {
            "crawls lost": len(self.lost),
            "crawls stuck": len(self.stuck),
            "concurrent duplicate runs": len(self.duplicates),
            "tenants over their container limit": len(self.over_limit),
            "containers stopped with work": len(self.stopped_with_work),
            "premature kills": len(self.premature_kills),
            "re-executions not after a crash": len(self.reexecutions_not_after_crash),
            "containers left running at the end": len(self.left_running),
        }

    def report(self) -> str:
        crashes = ", ".join(f"{n} {kind}" for kind, n in sorted(self.container_crashes.items()))
        lines = [
            f"{self.instances} conductor instances (clocks {min(self.skews_s):+.0f} s to "
            f"{max(self.skews_s):+.0f} s off), {self.crawls} crawls x {self.deliveries} "
            "deliveries, shuffled",
            f"{self.simulated_s:.0f} s simulated (every crawl finished after "
            f"{self.finished_at_s:.0f} s) in {self.wall_s:.0f} s wall; load average "
            f"{self.load_before:.1f} before, {self.load_after:.1f} after "
            f"({os.cpu_count()} cores)",
            f"inbox messages handled {self.handled}; instance deaths {self.instance_deaths}; "
            f"containers started {self.containers_started}; container faults: {crashes}; "
            f"failed stops {self.failed_stops}",
            "",
        ]
        for name, value in self.zeros.items():
            lines.append(f"  {name:<38} {value}")
        lines.append(f"  {'re-executions (each after a crash)':<38} {self.reexecutions}")
        lines.append(f"  {'dead-lettered (every attempt crashed)':<38} {self.dead_lettered}")
        return "\n".join(lines)


class SimRuntime:
    """ContainerRuntime of simulated containers (see the module docstring). ``start`` is
    idempotent per GUID, as ECS's client token and ACI's group name make it."""

    capabilities = RuntimeCapabilities(name="simulated", typical_start_s=5.0, max_grace_s=300.0)

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim
        self.procs: dict[str, Process] = {}

    async def start_container(self, *, spec: ContainerSpec) -> None:
        if spec.container_id in self.procs:
            return
        sim, f = self._sim, self._sim.figures
        alive = [p for p in self.procs.values() if p.spec.tenant_id == spec.tenant_id and p.alive]
        if len(alive) >= sim.config.max_containers:
            f.over_limit.append(f"{spec.tenant_id}: {spec.container_id} beside {len(alive)}")
        boots = sim.random.random() >= sim.config.boot_failure_rate
        delay = sim.random.uniform(1.0, 15.0)
        self.procs[spec.container_id] = Process(spec, sim.now() + timedelta(seconds=delay), boots)
        f.containers_started += 1

    async def stop_container(
        self, *, container_id: str, egress: Egress, grace_s: float = 10
    ) -> None:
        sim = self._sim
        if sim.faults_on and sim.random.random() < sim.config.stop_failure_rate:
            sim.figures.failed_stops += 1
            raise RuntimeError("the runtime's API timed out")
        proc = self.procs.get(container_id)
        if proc is None or not proc.alive:
            return
        if proc.healthy:
            found = await sim.records.containers.get(proc.spec.tenant_id, container_id)
            why = "no record" if found is None else found.value.reason
            sim.judge_kill(proc, f"stopped without a drain ({why})")
        for execution, _ in proc.runs.values():
            execution.outcome = "stopped"
        proc.runs.clear()
        proc.state, proc.exit_code = "stopped", 143
        if proc.ended is None:
            proc.ended, proc.ended_how = sim.now(), "stopped"

    async def describe(self, *, container_id: str, egress: Egress) -> ContainerStatus:
        proc = self.procs.get(container_id)
        if proc is None:
            return ContainerStatus(container_id=container_id, state=RunState.unknown)
        if proc.alive:
            return ContainerStatus(container_id=container_id, state=RunState.running)
        return ContainerStatus(
            container_id=container_id, state=RunState.exited, exit_code=proc.exit_code
        )

    async def list_running(self, *, egress: Egress) -> list[ContainerStatus]:
        return [
            ContainerStatus(container_id=cid, state=RunState.running)
            for cid, p in self.procs.items()
            if p.alive
        ]

    async def close(self) -> None:
        return None


@dataclass
class Instance:
    index: int
    ports: Ports
    conductor: Conductor
    plan: FaultPlan
    down_until: datetime


class Simulation:
    def __init__(self, root: Path, config: SimConfig) -> None:
        self.root = root
        self.config = config
        self.random = random.Random(config.seed)
        self.clock = FakeClock(START)
        self.settings: SkycrawlSettings = make_settings(**SETTINGS)
        self.runtime = SimRuntime(self)
        self.figures = Figures(
            instances=config.instances, crawls=config.crawls, deliveries=config.deliveries
        )
        self.faults_on = True
        self.executions: dict[str, list[Execution]] = {}
        self.instances: list[Instance] = []
        self._opened: list[Ports] = []
        local = LocalSettings(data_dir=root)
        self.api = self._open()  # the API's and the operator's view: true clock, no faults
        self.records = Records(self.api.state)
        self.engine_bus = SqliteMessageBus(root / "bus.sqlite3", clock=self.clock)
        for index in range(config.instances):
            skew = self.random.uniform(-config.skew_s, config.skew_s)
            self.figures.skews_s.append(skew)
            own = self._open()
            own.clock = SkewedClock(self.clock, skew)
            plan = FaultPlan(rate=config.death_rate, seed=config.seed * 1000 + index)
            ports = faulty_ports(own, plan)
            conductor = Conductor(
                ports=ports,
                settings=self.settings,
                engine_env=engine_env(local),
                new_id=lambda: f"ctr-{self.random.getrandbits(48):012x}",
            )
            self.instances.append(Instance(index, ports, conductor, plan, START))

    def _open(self) -> Ports:
        ports = build_ports(
            self.settings,
            LocalSettings(data_dir=self.root),
            clock=self.clock,
            runtimes={e.name: self.runtime for e in self.settings.egresses},
        )
        self._opened.append(ports)
        return ports

    def now(self) -> datetime:
        return self.clock.now()

    async def close(self) -> None:
        for ports in self._opened:
            await ports.close()
        await self.engine_bus.close()

    # ------------------------------------------------------------------ judging

    def judge_kill(self, proc: Process, how: str) -> None:
        """A healthy container is drained or stopped: with work, or idle too briefly?"""
        cid = proc.spec.container_id
        if proc.runs:
            self.figures.stopped_with_work.append(f"{cid} {how} running {sorted(proc.runs)}")
            return
        idle = (self.now() - (proc.idle_since or self.now())).total_seconds()
        if how != "drained" or idle < self.settings.idle_ttl_s:
            self.figures.premature_kills.append(f"{cid} {how} after {idle:.0f} s idle")

    # ------------------------------------------------------------------ the story

    async def setup(self) -> list[str]:
        bus = self.api.bus
        await bus.ensure_queue(
            name=self.settings.inbox_queue, max_deliveries=self.settings.max_deliveries
        )
        await bus.ensure_topic(topic=self.settings.dispatch_topic)
        quotas = Quotas(
            max_containers=self.config.max_containers,
            parallel_per_container=self.config.parallel,
        )
        for t in range(self.config.tenants):
            tenant = Tenant(
                id=f"t{t}",
                name=f"tenant {t}",
                key_prefix=f"key-t{t}",
                key_sha256="0" * 64,
                quotas=quotas,
                created_at=self.now(),
            )
            await self.records.tenants.create("tenants", tenant.id, tenant)
            # what provisioning makes for a tenant: its own dispatch topic
            await bus.ensure_topic(topic=tenant_topic(self.settings.dispatch_topic, tenant.id))
        messages: list[bytes] = []
        for n in range(self.config.crawls):
            crawl = await self._store_crawl(f"t{n % self.config.tenants}", n)
            message = encode(CrawlSubmitted(tenant_id=crawl.tenant_id, crawl_id=crawl.id))
            messages += [message.body] * self.config.deliveries
            self.executions[crawl.id] = []
        self.random.shuffle(messages)
        return [m.decode() for m in messages]

    async def _store_crawl(self, tenant_id: str, n: int) -> Crawl:
        """What ``POST /v1/crawls`` stores (``core.api.crawls``)."""
        now = self.now()
        crawl = Crawl(
            id=f"cr_{n:032x}",
            tenant_id=tenant_id,
            spec=CrawlSpec(seeds=["https://example.com/"]),
            created_at=now,
            updated_at=now,
        )
        entry = ActiveCrawl(crawl_id=crawl.id, created_at=now)
        await self.records.crawls.create(tenant_id, crawl.id, crawl)
        await self.records.active.create(tenant_id, crawl.id, entry)
        await self.records.listing.create(tenant_id, listing_key(now, crawl.id), entry)
        await self.records.index_pending(crawl)
        return crawl

    async def run(self, *, limit_s: float = 3600.0) -> Figures:
        started = time.monotonic()
        self.figures.load_before = os.getloadavg()[0]
        to_send = await self.setup()
        elapsed = 0.0
        calm_since: float | None = None
        while elapsed < limit_s:
            batch, to_send = (
                to_send[: self.config.submit_per_s],
                to_send[self.config.submit_per_s :],
            )
            for body in batch:
                outbound = OutboundMessage(
                    body=body.encode(), attributes={"type": "crawl.submitted"}
                )
                await self.api.bus.send(queue=self.settings.inbox_queue, message=outbound)
            await self._engines_step()
            await self._serve_all()
            if int(elapsed) % int(self.settings.timer_period_s) == 0:
                await self._housekeeping()
            self.clock.advance(1.0)
            elapsed += 1.0
            if calm_since is None and not to_send and await self._all_finished():
                calm_since = elapsed  # then: no more faults; everything must scale to zero
                self.figures.finished_at_s = elapsed
                self.faults_on = False
                for inst in self.instances:
                    inst.plan.rate = 0.0
            if calm_since is not None and not any(p.alive for p in self.runtime.procs.values()):
                break
        self.figures.simulated_s = elapsed
        await self._judge_the_end()
        self.figures.wall_s = time.monotonic() - started
        self.figures.load_after = os.getloadavg()[0]
        self.figures.instance_deaths = sum(i.plan.deaths for i in self.instances)
        return self.figures

    async def _all_finished(self) -> bool:
        for t in range(self.config.tenants):
            if await self.records.active.query(f"t{t}", limit=1):
                return False
        return True

    # ------------------------------------------------------------------ conductor instances

    async def _serve_all(self) -> None:
        await asyncio.gather(*(self._serve(inst) for inst in self.instances))

    def _die(self, inst: Instance) -> None:
        inst.down_until = self.now() + timedelta(seconds=self.random.uniform(0, 20))

    async def _serve(self, inst: Instance) -> None:
        """The instance handles the inbox until it sees it empty (or dies)."""
        for _ in range(500):
            if inst.down_until > self.now():
                return
            try:
                leases = await inst.ports.bus.receive(
                    source=Queue(self.settings.inbox_queue),
                    max_messages=4,
                    visibility_timeout_s=self.config.visibility_s,
                )
            except InstanceKilled:
                self._die(inst)
                return
            if not leases:
                return
            tasks = [
                asyncio.create_task(process_lease(inst.conductor, inst.ports.bus, lease))
                for lease in leases
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            died = any(t.done() and isinstance(t.exception(), InstanceKilled) for t in tasks)
            if died:  # the process is gone: so is every handler it was running
                for task in tasks:
                    task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, InstanceKilled | asyncio.CancelledError
                ):
                    raise result
            self.figures.handled += sum(1 for r in results if r is True)
            if died:
                self._die(inst)
                return

    async def _housekeeping(self) -> None:
        live = [i for i in self.instances if i.down_until <= self.now()]
        if not live:
            return
        inst = self.random.choice(live)
        try:
            await Housekeeper(inst.conductor).run()
        except InstanceKilled:
            self._die(inst)

    # ------------------------------------------------------------------ containers

    async def _engines_step(self) -> None:
        for proc in list(self.runtime.procs.values()):
            if proc.state == "booting" and self.now() >= proc.boots_at:
                if proc.boots:
                    await self._boot(proc)
                else:
                    proc.state = "hung"  # never says ready
                    proc.ended, proc.ended_how = self.now(), "hung"
                    self.figures.container_crashes["never ready"] += 1
            if proc.state == "ready":
                await self._engine_tick(proc)

    async def _send(self, message: object) -> None:
        await self.engine_bus.send(queue=self.settings.inbox_queue, message=encode(message))  # type: ignore[arg-type]

    async def _boot(self, proc: Process) -> None:
        spec = proc.spec
        await self.engine_bus.ensure_subscription(
            topic=tenant_topic(self.settings.dispatch_topic, spec.tenant_id),
            name=subscription_name(spec.container_id),
            filter={"container_id": spec.container_id},
        )
        proc.state, proc.idle_since = "ready", self.now()
        proc.next_beat = self.now() + timedelta(seconds=self.settings.heartbeat_interval_s)
        await self._send(ContainerReady(tenant_id=spec.tenant_id, container_id=spec.container_id))

    async def _engine_tick(self, proc: Process) -> None:
        spec, now = proc.spec, self.now()
        await self._read(proc)
        if proc.state != "ready":
            return
        for crawl_id, (execution, ends) in list(proc.runs.items()):
            if ends <= now:
                del proc.runs[crawl_id]
                execution.outcome = "completed"
                proc.finished.add((crawl_id, execution.attempt))
                counts = CrawlCounts(queued=3, fetched=3, bytes=3000)
                await self._send(
                    CrawlCompleted(
                        container_id=spec.container_id,
                        tenant_id=spec.tenant_id,
                        crawl_id=crawl_id,
                        attempt=execution.attempt,
                        counts=counts,
                    )
                )
                if not proc.runs:
                    proc.idle_since = now
        if proc.next_beat is not None and now >= proc.next_beat:
            proc.seq += 1
            proc.next_beat = now + timedelta(seconds=self.settings.heartbeat_interval_s)
            await self._send(
                Heartbeat(
                    tenant_id=spec.tenant_id,
                    container_id=spec.container_id,
                    in_flight=sorted(proc.runs),
                    seq=proc.seq,
                )
            )
        if self.faults_on and self.random.random() < self.config.crash_rate:
            await self._crash(proc)

    async def _crash(self, proc: Process) -> None:
        kind = self.random.choice(["exit, reported", "exit, silent", "hang"])
        self.figures.container_crashes[kind] += 1
        proc.ended, proc.ended_how = self.now(), "hung" if kind == "hang" else "crashed"
        for execution, _ in proc.runs.values():
            execution.outcome = "crashed" if kind != "hang" else "hung"
        if kind == "hang":  # alive for the runtime, silent, holding its work until stopped
            proc.state = "hung"
            return
        proc.runs.clear()
        proc.state, proc.exit_code = "exited", 137
        if kind == "exit, reported":
            spec = proc.spec
            await self._send(
                ContainerExited(
                    tenant_id=spec.tenant_id, container_id=spec.container_id, exit_code=137
                )
            )

    async def _read(self, proc: Process) -> None:
        spec = proc.spec
        topic = tenant_topic(self.settings.dispatch_topic, spec.tenant_id)
        source = Subscription(topic, subscription_name(spec.container_id))
        while proc.state == "ready":
            try:
                leases = await self.engine_bus.receive(source=source, max_messages=10)
            except NotFound:
                return
            if not leases:
                return
            for lease in leases:
                await self.engine_bus.ack(lease=lease)
                message = decode_dispatch(lease.body)
                if message.container_id != spec.container_id:
                    continue  # not its own: dropped, as the engine does
                if isinstance(message, RunCrawl):
                    self._start_run(proc, message)
                elif isinstance(message, CancelCrawl):
                    cancelled = proc.runs.pop(message.crawl_id, None)
                    if cancelled is not None:
                        cancelled[0].outcome = "cancelled"
                elif isinstance(message, DrainContainer):
                    await self._drain(proc)
                    return

    def _start_run(self, proc: Process, run: RunCrawl) -> None:
        key = (run.crawl_id, run.attempt)
        held = proc.runs.get(run.crawl_id)
        if key in proc.finished or (held is not None and held[0].attempt == run.attempt):
            return  # a run it has, or has finished: dropped
        cid = proc.spec.container_id
        for other in self.runtime.procs.values():
            if other is not proc and other.alive and run.crawl_id in other.runs:
                self.figures.duplicates.append(
                    f"{run.crawl_id} on {cid} while {other.spec.container_id} "
                    f"({other.state}) holds it"
                )
        execution = Execution(run.crawl_id, cid, run.attempt, self.now())
        self.executions.setdefault(run.crawl_id, []).append(execution)
        duration = self.random.uniform(*self.config.run_s)
        proc.runs[run.crawl_id] = (execution, self.now() + timedelta(seconds=duration))

    async def _drain(self, proc: Process) -> None:
        self.judge_kill(proc, "drained")
        for execution, _ in proc.runs.values():
            execution.outcome = "drained"
        proc.runs.clear()
        proc.state, proc.exit_code, proc.drained = "exited", 0, True
        proc.ended, proc.ended_how = self.now(), "drained"
        spec = proc.spec
        await self._send(
            ContainerExited(
                tenant_id=spec.tenant_id,
                container_id=spec.container_id,
                exit_code=0,
                reason="drained",
            )
        )

    # ------------------------------------------------------------------ the end

    async def _judge_the_end(self) -> None:
        f = self.figures
        for crawl_id, runs in self.executions.items():
            tenant_id = f"t{int(crawl_id[3:], 16) % self.config.tenants}"
            found = await self.records.crawls.get(tenant_id, crawl_id)
            if found is None:
                f.lost.append(f"{crawl_id}: no record")
                continue
            crawl = found.value
            completed = any(r.outcome == "completed" for r in runs)
            if not crawl.state.terminal:
                f.stuck.append(f"{crawl_id}: {crawl.state.value} ({crawl.reason})")
            elif crawl.state is CrawlState.completed and not completed:
                f.lost.append(f"{crawl_id}: completed, but no run of it completed")
            elif crawl.state is CrawlState.dead_lettered and not completed:
                f.dead_lettered += 1
            elif crawl.state is not CrawlState.completed:
                f.lost.append(f"{crawl_id}: {crawl.state.value} ({crawl.reason})")
            for earlier, later in itertools.pairwise(runs):
                f.reexecutions += 1
                # the container of the earlier run crashed, hung or was stopped before the
                # later run began (perhaps after its run completed, but before the conductor
                # could handle that report: at-least-once)
                proc = self.runtime.procs[earlier.container_id]
                died = proc.ended_how in ("crashed", "hung", "stopped")
                if not (died and proc.ended is not None and proc.ended <= later.started):
                    f.reexecutions_not_after_crash.append(
                        f"{crawl_id}: run on {later.container_id} after {earlier.outcome} "
                        f"on {earlier.container_id} (which {proc.ended_how or 'lives'})"
                    )
        f.left_running = sorted(cid for cid, p in self.runtime.procs.items() if p.alive)


async def simulate(root: Path, config: SimConfig) -> Figures:
    sim = Simulation(root, config)
    try:
        return await sim.run()
    finally:
        await sim.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = SimConfig()
    parser.add_argument("--instances", type=int, default=defaults.instances)
    parser.add_argument("--tenants", type=int, default=defaults.tenants)
    parser.add_argument("--crawls", type=int, default=defaults.crawls)
    parser.add_argument("--deliveries", type=int, default=defaults.deliveries)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--death-rate", type=float, default=defaults.death_rate)
    parser.add_argument("--crash-rate", type=float, default=defaults.crash_rate)
    parser.add_argument("--details", action="store_true", help="list every violation")
    args = parser.parse_args()
    logging.getLogger("skycrawl").setLevel(logging.CRITICAL)  # faults are the point: no noise
    config = SimConfig(
        instances=args.instances,
        tenants=args.tenants,
        crawls=args.crawls,
        deliveries=args.deliveries,
        seed=args.seed,
        death_rate=args.death_rate,
        crash_rate=args.crash_rate,
    )
    with tempfile.TemporaryDirectory(prefix="skycrawl-stress-") as tmp:
        figures = asyncio.run(simulate(Path(tmp), config))
    print(figures.report())
    if args.details:
        for name in ("lost", "stuck", "duplicates", "over_limit", "stopped_with_work"):
            for line in getattr(figures, name)[:20]:
                print(f"{name}: {line}")
        for line in (*figures.premature_kills[:20], *figures.reexecutions_not_after_crash[:20]):
            print(line)
    return 1 if any(figures.zeros.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
