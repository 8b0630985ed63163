"""Random interleavings of the whole story, checked after every step (hypothesis stateful).

Steps: submit (with or without a session, one or a burst of several), a container says
ready (also one already reaped), completes or fails a crawl, crashes (``ContainerExited``),
or hangs until the heartbeat timeout reaps it (holding its work until it is stopped), the
tenant cancels (at any moment: pending, reserved, dispatched), an earlier message is
delivered again, the runtime refuses the next start or fails the next stop, an instance
dies at its n-th port call from now (any await point of whatever it handles next: its
message comes back when the lease runs out), time passes (kill timers fire), housekeeping
runs -- each handled by one of three conductor instances over the same SQLite files, each
instance with its own clock, up to five minutes off. The backlog batch is cut to 2 here so
that small fleets reach its window (the stress test, ``conductor_sim``, reaches the real 50).
Every example runs on its own event loop and files.

Invariants after every step, whatever died where: every request exists; its attempts stay
within the limit; it is held by at most one live container, and a dispatched one by its
own container unless that container is no longer live; a tenant never has more containers
than its limit (records, fleet and processes); no crawl runs on two containers at once (a
hung one holds its work until the runtime stopped it); a healthy container is never
stopped while its record shows work, and never told to drain before it was idle for
``idle_ttl``; a session's work is never on two containers. While no instance has died the
exact picture holds too: a request is where its state says, the indexes agree, no
subscription outlives its container. At the end (no more faults, leases run out) that exact
picture holds again, every request is terminal and every idle container is stopped within
``idle_ttl + timer_period``.

``SKYCRAWL_MACHINE_PROFILE=deep`` runs many more and longer examples than ``make test``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from conductor_harness import FakeEngine, FaultPlan, Harness, InstanceKilled
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from core.conductor import Housekeeper, router
from core.inbox import process_lease
from core.messages import CancelCrawl
from core.models import ContainerState, CrawlState, Egress
from core.ports import Queue, RunState

T = TypeVar("T")

LIMIT = 2  # containers per tenant
PARALLEL = 2  # crawls per container
SESSIONS = (None, None, "s1", "s2")
SETTINGS: dict[str, Any] = {
    "idle_ttl_s": 30.0,
    "startup_timeout_s": 60.0,
    "heartbeat_timeout_s": 40.0,
    "timer_period_s": 5.0,
    "max_attempts": 3,
}
TTL = timedelta(seconds=SETTINGS["idle_ttl_s"])
PERIOD = timedelta(seconds=SETTINGS["timer_period_s"])
INSTANCES = 3
WHO = st.integers(min_value=0, max_value=INSTANCES - 1)  # which instance handles the inbox
SKEW = st.floats(min_value=-300.0, max_value=300.0, allow_nan=False)  # seconds off
VISIBILITY_S = 20.0  # the lease of a message whose handler died runs out after this
BATCH = 2  # the backlog batch (``router.BACKLOG_BATCH``, 50), cut to what a small fleet fills


@dataclass
class EngineModel:
    """What the container process is doing, as far as the test knows."""

    engine: FakeEngine
    status: str = "starting"  # starting, ready, crashed, silent, stopped, refused
    runs: dict[str, int] = field(default_factory=dict)  # crawl id -> attempt it runs
    was_ready: bool = False
    idle_since: datetime | None = None  # ready and running nothing since

    @property
    def healthy(self) -> bool:
        return self.status == "ready"

    @property
    def holds_work(self) -> bool:  # a hung process may still be crawling until stopped
        return self.status in ("ready", "silent")

    def note(self, now: datetime) -> None:
        """After its runs changed: idle since now, or busy."""
        if self.runs:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now


@dataclass(frozen=True)
class StopSeen:
    container_id: str
    at: datetime
    healthy: bool
    state: ContainerState | None
    in_flight: tuple[str, ...]


class ConductorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self._tmp = tempfile.TemporaryDirectory(prefix="conductor-machine-")
        self._loop = asyncio.Runner()
        self.h = self._run(Harness.create(Path(self._tmp.name), **SETTINGS))
        self.plans = [FaultPlan() for _ in range(INSTANCES)]
        self.conductors = [self.h.conductor]  # until ``instances`` gives each its own clock
        self._run(self.h.add_tenant("t1", max_containers=LIMIT, parallel_per_container=PARALLEL))
        self.crawls: dict[str, str | None] = {}  # crawl id -> session
        self.engines: dict[str, EngineModel] = {}
        self.stops: list[StopSeen] = []
        self.deaths = 0
        self.h.runtime.on_stop = self._on_stop
        self._batch, router.BACKLOG_BATCH = router.BACKLOG_BATCH, BATCH

    @initialize(skews=st.lists(SKEW, min_size=INSTANCES, max_size=INSTANCES))
    def instances(self, skews: list[float]) -> None:
        """Three instances over the same files, each with its own clock and fault plan."""
        self.skews = skews
        self.conductors = [
            self.h.another_conductor(skew_s=skew, plan=plan)
            for skew, plan in zip(skews, self.plans, strict=True)
        ]

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return self._loop.run(coro)
        except BaseException:
            self.broken = True
            raise

    async def _on_stop(self, container_id: str) -> None:
        found = await self.h.records.containers.get("t1", container_id)
        model = self.engines.get(container_id)
        self.stops.append(
            StopSeen(
                container_id,
                self.h.clock.now(),
                model is not None and model.healthy,
                None if found is None else found.value.state,
                () if found is None else found.value.in_flight,
            )
        )

    # ------------------------------------------------------------------ model upkeep

    async def _handle(self, who: int) -> None:
        await self._serve(who)
        while await self._sync():  # an engine told to drain said it exited: handle that
            await self._serve(who)

    async def _serve(self, who: int) -> None:
        """Instance ``who`` handles the inbox one message at a time until it is empty. If it
        dies, it restarts at once (it is stateless); what it held comes back after the lease."""
        conductor = self.conductors[who]
        bus = conductor.ports.bus
        inbox = Queue(self.h.settings.inbox_queue)
        for _ in range(1000):
            try:
                leases = await bus.receive(
                    source=inbox, max_messages=1, visibility_timeout_s=VISIBILITY_S
                )
                if not leases:
                    return
                await process_lease(conductor, bus, leases[0])
            except InstanceKilled:
                self.deaths += 1
        raise AssertionError("the inbox never drains: handlers keep producing messages")

    async def _housekeep(self, who: int) -> None:
        try:
            await Housekeeper(self.conductors[who]).run()
        except InstanceKilled:
            self.deaths += 1
        await self._handle(who)

    async def _sync(self) -> int:
        """Learn about new containers, stops, and the work each ready container received;
        healthy engines told to drain exit (as the real one does). Returns how many did."""
        for spec in self.h.runtime.started:
            if spec.container_id not in self.engines:
                engine = self.h.engine(spec.container_id)
                model = EngineModel(engine)
                if spec.container_id in self.h.runtime.refused:  # no process: never speaks
                    model.status = "refused"
                self.engines[spec.container_id] = model
        now = self.h.clock.now()
        for container_id in set(self.h.runtime.stopped):
            model = self.engines.get(container_id)  # None: stopped before it was started
            if model is not None and model.status not in ("stopped", "refused"):
                model.status, model.runs = "stopped", {}
        for model in self.engines.values():
            if model.status != "ready":
                continue
            for message in await model.engine.work():
                if isinstance(message, CancelCrawl):
                    model.runs.pop(message.crawl_id, None)
                else:  # a duplicate of a run it has changes nothing
                    model.runs[message.crawl_id] = max(
                        message.attempt, model.runs.get(message.crawl_id, 0)
                    )
            model.note(now)
            assert model.engine.foreign == [], "work for another container reached this one"
        drained = 0
        for cid, model in self.engines.items():
            if model.healthy and model.engine.drained:
                record = await self.h.container(cid)
                assert record.in_flight == (), ("told to drain with work", record)
                assert model.runs == {}, ("told to drain while running", cid, model.runs)
                assert model.idle_since is not None
                assert now - model.idle_since >= TTL, ("drained early", cid, now, model)
                await model.engine.take_drain()
                model.status, drained = "stopped", drained + 1
        return drained

    def _with_status(self, *statuses: str) -> list[str]:
        return sorted(cid for cid, m in self.engines.items() if m.status in statuses)

    def _running(self) -> list[tuple[str, str]]:
        return sorted(
            (cid, crawl_id)
            for cid, model in self.engines.items()
            if model.healthy
            for crawl_id in model.runs
        )

    async def _beat(self) -> None:
        for model in self.engines.values():
            if model.healthy:
                await model.engine.heartbeat()

    async def _advance(self, seconds: float, who: int, *, housekeeping: bool) -> None:
        """Time passes in steps; healthy containers heartbeat before each."""
        remaining = seconds
        while remaining > 0:
            step = min(remaining, 10.0)
            await self._beat()
            self.h.clock.advance(step)
            remaining -= step
            await self._handle(who)
            if housekeeping:
                await self._housekeep(who)

    # ------------------------------------------------------------------ rules

    @rule(session=st.sampled_from(SESSIONS), who=WHO)
    def submit(self, session: str | None, who: int) -> None:
        async def step() -> None:
            crawl_id = await self.h.submit("t1", session=session)
            self.crawls[crawl_id] = session
            await self._handle(who)

        self._run(step())

    @rule(n=st.integers(min_value=BATCH + 1, max_value=2 * BATCH + 1), who=WHO)
    def submit_burst(self, n: int, who: int) -> None:
        """More crawls at once than one backlog batch and the fleet's slots hold."""

        async def step() -> None:
            for _ in range(n):
                self.crawls[await self.h.submit("t1")] = None
            await self._handle(who)

        self._run(step())

    def _may_say_ready(self) -> list[str]:
        """Starting containers, and slow ones reaped before they said ready (late ready)."""
        return sorted(
            cid
            for cid, m in self.engines.items()
            if m.status == "starting" or (m.status == "stopped" and not m.was_ready)
        )

    @precondition(lambda self: self._may_say_ready())
    @rule(data=st.data(), who=WHO)
    def container_ready(self, data: st.DataObject, who: int) -> None:
        container_id = data.draw(st.sampled_from(self._may_say_ready()))
        model = self.engines[container_id]

        async def step() -> None:
            await model.engine.ready()
            await self._handle(who)
            record = await self.h.container(container_id)
            if record.state is ContainerState.ready and model.status == "starting":
                model.status, model.was_ready = "ready", True
                model.note(self.h.clock.now())
                await self._sync()

        self._run(step())

    @rule()
    def runtime_refuses_next_start(self) -> None:
        self.h.runtime.fail_starts = 1

    @rule()
    def runtime_fails_next_stop(self) -> None:
        self.h.runtime.fail_stops = 1

    @rule(who=WHO, at=st.integers(min_value=0, max_value=40))
    def instance_will_die(self, who: int, at: int) -> None:
        """Instance ``who`` dies at its ``at``-th await point from now (before or after one
        of its port calls), in whatever it handles next."""
        self.plans[who].die_at_call(at)

    @precondition(lambda self: self._running())
    @rule(data=st.data(), outcome=st.sampled_from(["done", "retry", "fail"]), who=WHO)
    def crawl_ends(self, data: st.DataObject, outcome: str, who: int) -> None:
        container_id, crawl_id = data.draw(st.sampled_from(self._running()))
        model = self.engines[container_id]

        async def step() -> None:
            model.runs.pop(crawl_id)
            model.note(self.h.clock.now())
            if outcome == "done":
                await model.engine.complete(crawl_id)
            else:
                await model.engine.fail(crawl_id, retryable=outcome == "retry")
            await self._handle(who)

        self._run(step())

    @precondition(lambda self: self._with_status("starting", "ready"))
    @rule(data=st.data(), who=WHO)
    def container_exits(self, data: st.DataObject, who: int) -> None:
        container_id = data.draw(st.sampled_from(self._with_status("starting", "ready")))
        model = self.engines[container_id]

        async def step() -> None:
            model.status, model.runs = "crashed", {}
            await model.engine.exited(137)
            await self._handle(who)

        self._run(step())

    @precondition(lambda self: self._with_status("ready"))
    @rule(data=st.data(), who=WHO)
    def container_hangs(self, data: st.DataObject, who: int) -> None:
        container_id = data.draw(st.sampled_from(self._with_status("ready")))
        model = self.engines[container_id]

        async def step() -> None:
            model.status = "silent"  # the runtime still says running; it keeps its work
            timeout = SETTINGS["heartbeat_timeout_s"]
            for _ in range(int(3 * timeout / 10)):  # a dead instance or a failed stop delays it
                await self._advance(10, who, housekeeping=True)
                record = await self.h.container(container_id)
                if not record.state.live:
                    break
            # reaped, unless it was idle and stopped (or told to drain) before it was missed
            assert not record.state.live, record
            assert record.state is ContainerState.failed or record.reason == "idle", record
            assert record.state is not ContainerState.failed or record.reason in (
                "no heartbeat for 40s",
                "not ready within 60s",
            ), record

        self._run(step())

    @precondition(lambda self: self.crawls)
    @rule(data=st.data(), who=WHO)
    def cancel(self, data: st.DataObject, who: int) -> None:
        crawl_id = data.draw(st.sampled_from(sorted(self.crawls)))

        async def step() -> None:
            if (await self.h.crawl(crawl_id)).state.terminal:
                return
            await self.h.cancel("t1", crawl_id)
            await self._handle(who)

        self._run(step())

    @precondition(lambda self: self.h.sent or self.h.scheduler.scheduled)
    @rule(data=st.data(), who=WHO)
    def duplicate(self, data: st.DataObject, who: int) -> None:
        earlier = [*self.h.sent, *(m for _, m in self.h.scheduler.scheduled)]
        message = data.draw(st.sampled_from(earlier))

        async def step() -> None:
            await self.h.resend(message)
            await self._handle(who)

        self._run(step())

    @rule(seconds=st.sampled_from([1.0, 5.0, 15.0, 35.0]), who=WHO)
    def time_passes(self, seconds: float, who: int) -> None:
        self._run(self._advance(seconds, who, housekeeping=False))

    @rule(who=WHO)
    def housekeeping(self, who: int) -> None:
        self._run(self._housekeep(who))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def nothing_is_lost_and_limits_hold(self) -> None:
        self._run(self._check(exact=self.deaths == 0))

    async def _check(self, *, exact: bool) -> None:
        """What holds after every step; ``exact``: also what a death may leave half done
        until a redelivery or housekeeping repairs it."""
        h = self.h
        containers = {c.id: c for c in await h.containers()}
        live = {cid: c for cid, c in containers.items() if c.state.live}
        active = await h.active_ids()
        holders: dict[str, list[str]] = {}
        for container in live.values():
            for crawl_id in container.in_flight:
                holders.setdefault(crawl_id, []).append(container.id)
        for crawl_id, session in self.crawls.items():
            crawl = await h.crawl(crawl_id)  # exists: no request is lost
            where = holders.get(crawl_id, [])
            assert len(where) <= 1, (crawl_id, crawl.state, where)
            if crawl.state is CrawlState.dispatched and crawl.container_id in live:
                assert where == [crawl.container_id], (crawl_id, crawl.container_id, where)
            assert crawl.attempts <= SETTINGS["max_attempts"], crawl
            if crawl.state is CrawlState.dead_lettered:
                assert "gave up after" in (crawl.reason or ""), crawl.reason
            if not exact:
                continue
            if crawl.state is CrawlState.dispatched:
                assert where == [crawl.container_id], (crawl_id, crawl.container_id, where)
            else:
                assert where == [], (crawl_id, crawl.state, where)
            assert (crawl.state is CrawlState.pending) == (crawl.container_id is None) or (
                crawl.state.terminal
            ), crawl
            assert (crawl_id in active) == (not crawl.state.terminal), (crawl_id, crawl.state)
        # the tenant's limit: records, fleet and processes (a death between creating a
        # record and claiming its fleet slot leaves a record that holds no slot and never
        # starts, until its startup watchdog reaps it: not a container, except to ``exact``)
        fleet = await h.fleet()
        started = set(h.runtime.started_ids)
        counted = [cid for cid in live if exact or cid in fleet or cid in started]
        assert len(counted) <= LIMIT, sorted(live)
        assert len(fleet) <= LIMIT
        assert len(await h.runtime.list_running(egress=Egress(name="local"))) <= LIMIT
        # no crawl runs on two containers at once (a hung one may still be running it)
        running = Counter(c for m in self.engines.values() if m.holds_work for c in m.runs)
        assert [c for c, n in running.items() if n > 1] == [], running
        # a healthy container is only ever stopped idle, drained first
        for stop in self.stops:
            if stop.healthy:
                assert stop.state is ContainerState.draining, stop
                assert stop.in_flight == (), stop
        # a session's unfinished work is on one container at most
        unfinished = {c for c in self.crawls if not (await h.crawl(c)).state.terminal}
        for session in {s for s in self.crawls.values() if s}:
            on = {
                cid
                for crawl_id, s in self.crawls.items()
                if s == session and crawl_id in unfinished
                for cid in holders.get(crawl_id, [])
            }
            assert len(on) <= 1, (session, on)
        # no subscription outlives its container
        for cid, container in containers.items():
            if exact and not container.state.live:
                assert not await h.subscription_exists(cid), cid

    # ------------------------------------------------------------------ the end

    def teardown(self) -> None:
        try:
            if not self.broken:
                self._run(self._final_drive())
        finally:
            router.BACKLOG_BATCH = self._batch
            self._loop.run(self.h.close())
            self._loop.close()
            self._tmp.cleanup()

    async def _final_drive(self) -> None:
        """No more faults: every container comes up and finishes its work; the leases of
        dead instances run out; then everything is idle and scales to zero."""
        h = self.h
        for plan in self.plans:
            plan.die_at_call(None)
        h.runtime.fail_starts = h.runtime.fail_stops = 0
        for _ in range(60):
            for cid in self._with_status("starting"):
                if (await h.container(cid)).state is ContainerState.starting:
                    await self.engines[cid].engine.ready()
            await self._handle(0)
            for cid in self._with_status("starting"):
                if (await h.container(cid)).state is ContainerState.ready:
                    self.engines[cid].status = "ready"
                    self.engines[cid].note(h.clock.now())
            await self._sync()
            states = [(await h.crawl(c)).state for c in self.crawls]
            if all(s.terminal for s in states) and not self._with_status("starting"):
                break
            for cid, crawl_id in self._running():
                model = self.engines[cid]
                model.runs.pop(crawl_id)
                model.note(h.clock.now())
                await model.engine.complete(crawl_id)
            await self._handle(1)  # handled as it is sent: idle from now, by either account
            await self._advance(5, 1, housekeeping=True)
        for crawl_id in self.crawls:
            crawl = await h.crawl(crawl_id)
            assert crawl.state.terminal, crawl
        if self.deaths:  # what the dead held comes back; records they left half made go
            wait = VISIBILITY_S + SETTINGS["startup_timeout_s"]
            await self._advance(wait, 1, housekeeping=True)
        await self._check(exact=True)

        idle_since = {}  # by the container's own account (the records' times are skewed)
        for container in await h.live():
            assert container.in_flight == ()
            model = self.engines.get(container.id)  # None: never started (a death came first)
            if model is not None and model.healthy and container.state is ContainerState.ready:
                assert model.idle_since is not None
                idle_since[container.id] = model.idle_since
        await self._advance((TTL + PERIOD).total_seconds(), 0, housekeeping=True)

        assert await h.live() == []
        assert await h.fleet() == ()
        stopped_at = {s.container_id: s.at for s in self.stops}
        for container_id, since in idle_since.items():
            assert stopped_at[container_id] - since <= TTL + PERIOD, container_id
        for container_id, model in self.engines.items():
            assert not await h.subscription_exists(container_id)
            if model.status != "crashed":
                status = await h.runtime.describe(
                    container_id=container_id, egress=Egress(name="local")
                )
                assert status.state is not RunState.running, container_id


PROFILES = {
    # ``make test``: about a minute on a busy 2-core machine
    "ci": settings(max_examples=20, stateful_step_count=30),
    # ``SKYCRAWL_MACHINE_PROFILE=deep``: minutes, for a change to the conductor
    "deep": settings(max_examples=300, stateful_step_count=60),
}
ConductorMachine.TestCase.settings = settings(
    PROFILES[os.environ.get("SKYCRAWL_MACHINE_PROFILE", "ci")],
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestConductorMachine = ConductorMachine.TestCase


class _Chosen:
    """``st.data()`` for a scripted story: draws the value it was given."""

    def __init__(self, value: object) -> None:
        self.value = value

    def draw(self, strategy: object) -> object:
        return self.value


def test_an_instance_dying_around_a_refused_start_loses_nothing() -> None:
    """The runtime refuses a start and the instance dies at any point of that placement
    (before or after it recorded the refusal); the containers that did start say ready and
    one of them hangs: the work still runs elsewhere, nothing runs twice, a refused
    container never counts as healthy, and everything scales to zero. Hypothesis found
    this story once; it runs here at every death point."""
    stories: Counter[tuple[bool, bool]] = Counter()
    for at in range(41):
        machine = ConductorMachine()
        try:
            machine.instances([0.0, 0.0, 0.0])
            machine.instance_will_die(who=0, at=at)
            machine.runtime_refuses_next_start()
            machine.submit_burst(n=BATCH + 1, who=0)
            machine.nothing_is_lost_and_limits_hold()
            for _ in range(2):
                for container_id in machine._may_say_ready():
                    machine.container_ready(_Chosen(container_id), who=1)  # type: ignore[arg-type]
                    machine.nothing_is_lost_and_limits_hold()
                machine.housekeeping(who=1)
                machine.nothing_is_lost_and_limits_hold()
            if ready := machine._with_status("ready"):
                machine.container_hangs(_Chosen(ready[0]), who=1)  # type: ignore[arg-type]
                machine.nothing_is_lost_and_limits_hold()
            stories[(bool(machine.h.runtime.refused), machine.deaths > 0)] += 1
        finally:
            machine.teardown()  # the final drive: all terminal, each idle container stopped
    assert stories[(True, True)] >= 10, stories  # most of them: refused, and a death
