"""Random interleavings of the whole story, checked after every step (hypothesis stateful).

Steps: submit (with or without a session), a container says ready (also one already reaped),
completes or fails a crawl, crashes (``ContainerExited``, or hangs until the heartbeat
timeout reaps it), the tenant cancels, an earlier message is delivered again, time passes
(kill timers fire), housekeeping runs -- each handled by either of two conductor instances
over the same SQLite files. Every example runs on its own event loop and files.

Invariants after every step: every request exists in exactly one state and where that state
says (not lost); a tenant never has more containers than its limit; a healthy container is
never stopped while its record shows work; a session's work is never on two containers; no
subscription outlives its container. At the end every request is terminal and every idle
container stopped within ``idle_ttl + timer_period``.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from conductor_harness import FakeEngine, Harness
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from core.messages import CancelCrawl
from core.models import ContainerState, CrawlState
from core.ports import RunState

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
WHO = st.integers(min_value=0, max_value=1)  # which conductor instance handles the inbox


@dataclass
class EngineModel:
    """What the container process is doing, as far as the test knows."""

    engine: FakeEngine
    status: str = "starting"  # starting, ready, crashed, silent, stopped
    runs: dict[str, int] = field(default_factory=dict)  # crawl id -> attempt it runs
    was_ready: bool = False

    @property
    def healthy(self) -> bool:
        return self.status == "ready"


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
        self.conductors = [self.h.conductor, self.h.another_conductor()]
        self._run(self.h.add_tenant("t1", max_containers=LIMIT, parallel_per_container=PARALLEL))
        self.crawls: dict[str, str | None] = {}  # crawl id -> session
        self.engines: dict[str, EngineModel] = {}
        self.stops: list[StopSeen] = []
        self.h.runtime.on_stop = self._on_stop

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
        await self.h.pump(self.conductors[who], batch=1)
        while await self._sync():  # an engine told to drain said it exited: handle that
            await self.h.pump(self.conductors[who], batch=1)

    async def _sync(self) -> int:
        """Learn about new containers, stops, and the work each ready container received;
        healthy engines told to drain exit (as the real one does). Returns how many did."""
        for spec in self.h.runtime.started:
            if spec.container_id not in self.engines:
                engine = self.h.engine(spec.container_id)
                self.engines[spec.container_id] = EngineModel(engine)
        for container_id in set(self.h.runtime.stopped):
            model = self.engines[container_id]
            if model.status != "stopped":
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
            assert model.engine.foreign == [], "work for another container reached this one"
        drained = 0
        for cid, model in self.engines.items():
            if model.healthy and model.engine.drained:
                record = await self.h.container(cid)
                assert record.in_flight == (), ("told to drain with work", record)
                assert model.runs == {}, ("told to drain while running", cid, model.runs)
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
                await self.h.housekeeping(self.conductors[who])
                await self._handle(who)

    # ------------------------------------------------------------------ rules

    @rule(session=st.sampled_from(SESSIONS), who=WHO)
    def submit(self, session: str | None, who: int) -> None:
        async def step() -> None:
            crawl_id = await self.h.submit("t1", session=session)
            self.crawls[crawl_id] = session
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
                await self._sync()

        self._run(step())

    @rule()
    def runtime_refuses_next_start(self) -> None:
        self.h.runtime.fail_starts = 1

    @precondition(lambda self: self._running())
    @rule(data=st.data(), outcome=st.sampled_from(["done", "retry", "fail"]), who=WHO)
    def crawl_ends(self, data: st.DataObject, outcome: str, who: int) -> None:
        container_id, crawl_id = data.draw(st.sampled_from(self._running()))
        model = self.engines[container_id]

        async def step() -> None:
            model.runs.pop(crawl_id)
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
            model.status, model.runs = "silent", {}  # the runtime still says running
            await self._advance(SETTINGS["heartbeat_timeout_s"] + 10, who, housekeeping=True)
            record = await self.h.container(container_id)  # reaped, unless idle and stopped
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
        async def step() -> None:
            await self.h.housekeeping(self.conductors[who])
            await self._handle(who)

        self._run(step())

    # ------------------------------------------------------------------ invariants

    @invariant()
    def nothing_is_lost_and_limits_hold(self) -> None:
        self._run(self._check())

    async def _check(self) -> None:
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
            if crawl.state is CrawlState.dispatched:
                assert where == [crawl.container_id], (crawl_id, crawl.container_id, where)
            else:
                assert where == [], (crawl_id, crawl.state, where)
            assert (crawl.state is CrawlState.pending) == (crawl.container_id is None) or (
                crawl.state.terminal
            ), crawl
            assert (crawl_id in active) == (not crawl.state.terminal), (crawl_id, crawl.state)
            assert crawl.attempts <= SETTINGS["max_attempts"], crawl
            if crawl.state is CrawlState.dead_lettered:
                assert "gave up after" in (crawl.reason or ""), crawl.reason
        # the tenant's limit: records, fleet and processes
        assert len(live) <= LIMIT, sorted(live)
        assert len(await h.fleet()) <= LIMIT
        assert len(await h.runtime.list_running()) <= LIMIT
        # a healthy container is only ever stopped idle, drained first
        for stop in self.stops:
            if stop.healthy:
                assert stop.state is ContainerState.draining, stop
                assert stop.in_flight == (), stop
        # a session's unfinished work is on one container at most
        for session in {s for s in self.crawls.values() if s}:
            on = {
                cid
                for crawl_id, s in self.crawls.items()
                if s == session
                for cid in holders.get(crawl_id, [])
            }
            assert len(on) <= 1, (session, on)
        # no subscription outlives its container
        for cid, container in containers.items():
            if not container.state.live:
                assert not await h.subscription_exists(cid), cid

    # ------------------------------------------------------------------ the end

    def teardown(self) -> None:
        try:
            if not self.broken:
                self._run(self._final_drive())
        finally:
            self._loop.run(self.h.close())
            self._loop.close()
            self._tmp.cleanup()

    async def _final_drive(self) -> None:
        """Every container comes up and finishes its work; then everything is idle."""
        h = self.h
        for _ in range(40):
            for cid in self._with_status("starting"):
                if (await h.container(cid)).state is ContainerState.starting:
                    await self.engines[cid].engine.ready()
            await self._handle(0)
            for cid in self._with_status("starting"):
                if (await h.container(cid)).state is ContainerState.ready:
                    self.engines[cid].status = "ready"
            await self._sync()
            states = [(await h.crawl(c)).state for c in self.crawls]
            if all(s.terminal for s in states) and not self._with_status("starting"):
                break
            for cid, crawl_id in self._running():
                self.engines[cid].runs.pop(crawl_id)
                await self.engines[cid].engine.complete(crawl_id)
            await self._advance(5, 1, housekeeping=True)
        for crawl_id in self.crawls:
            crawl = await h.crawl(crawl_id)
            assert crawl.state.terminal, crawl
        await self._check()

        idle_since = {}  # idle and ready since
        for container in await h.live():
            assert container.state is ContainerState.ready, container
            assert container.in_flight == ()
            assert container.idle_since is not None
            assert container.ready_at is not None
            idle_since[container.id] = max(container.idle_since, container.ready_at)
        await self._advance((TTL + PERIOD).total_seconds(), 0, housekeeping=True)

        assert await h.live() == []
        assert await h.fleet() == ()
        stopped_at = {s.container_id: s.at for s in self.stops}
        for container_id, since in idle_since.items():
            assert stopped_at[container_id] - since <= TTL + PERIOD, container_id
        for container_id, model in self.engines.items():
            assert not await h.subscription_exists(container_id)
            if model.status != "crashed":
                status = await h.runtime.describe(container_id=container_id)
                assert status.state is not RunState.running, container_id


ConductorMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestConductorMachine = ConductorMachine.TestCase
