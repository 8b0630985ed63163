"""The fast path: the conductor's decisions, without its I/O, on a virtual clock.

Real here: ``core.conductor.placement.decide`` on real ``Container`` and ``Crawl`` models
(sticky sessions, least-loaded container, start, backlog at the tenant's limit), and the ``IdlePolicy`` with its ``IdleStats`` records exactly as the
conductor feeds them (gaps observed when work lands on an idle container, rounded to the
kill-timer chain's edges; a tenant's open gap counted in housekeeping periods; pre-warming
decided at the housekeeping run the policy names). Modelled: the state store and the bus
(no latency, no lost races — ``simulator.full`` runs the real ones), the engine (a crawl
takes its trace duration), the runtime (``SimRuntime``: start latency, failures, stop
time, billing with a minimum duration). A rendering crawl that starts a container starts a
browser container (the egress's ``browser`` figures, as ``placement.decide`` says), which
says ``browser`` when ready and then takes the tenant's other rendering crawls; an always-on
fleet is of browser containers when the trace renders (it must take every crawl).

An event loop over a heap of (time, sequence) keeps runs deterministic: the same trace,
config and seed give the same numbers.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

from core.conductor.idle_policy import EDGES_S, FixedIdle, IdlePolicy
from core.conductor.placement import Dispatch, Snapshot, Start, Wait, decide
from core.models import Container, ContainerState, Crawl, CrawlSpec, Egress
from core.records import IdleStats
from simulator.metrics import RunResult, TenantResult
from simulator.model import PolicySpec, SimConfig, SimRuntime
from simulator.optimum import levels
from simulator.trace import Trace

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
_ARRIVE, _READY, _FAILED, _DONE, _KILL, _STOPPED, _TICK = range(7)
_LIVE = (ContainerState.ready, ContainerState.starting)


@dataclass(slots=True)
class _Container:
    """The fields of ``core.models.Container`` that placement and the idle policy read,
    mutable (a pydantic copy per change cost most of a run): ``decide`` gets these."""

    id: str
    tenant_id: str
    egress: Egress
    capacity: int
    started_at: datetime
    keep_alive_s: float | None = None
    prewarm: bool = False
    state: ContainerState = ContainerState.starting
    in_flight: tuple[str, ...] = ()
    generation: int = 0
    idle_bin: int = 0
    browser: bool = False  # said ready as a browser container
    for_render: bool = False  # started as one (the egress's browser figures)

    @property
    def free_slots(self) -> int:
        return self.capacity - len(self.in_flight)


@dataclass
class _Tenant:
    id: str
    max_containers: int
    live: list[str] = field(default_factory=list)  # GUIDs holding a fleet slot
    backlog: deque[int] = field(default_factory=deque)
    sessions: dict[str, str] = field(default_factory=dict)
    stats: IdleStats | None = None
    open_at: float | None = None  # when its open idle gap was opened
    open_s: float = 0.0  # the gap's length then (the stopped container's keep-alive)
    prewarmed: bool = False
    open_count: int = 0  # containers stopped idle while the gap was open
    tick_version: int = 0
    result: TenantResult = field(default_factory=TenantResult)


class FastFleet:
    """One policy over one trace."""

    def __init__(self, trace: Trace, config: SimConfig, spec: PolicySpec) -> None:
        self.trace = trace
        self.config = config
        self.spec = spec
        self.policy: IdlePolicy = spec.policy or FixedIdle(math.inf)
        self._always_on: dict[str, int] = {}
        self.runtime = config.runtime
        self.browser_runtime = config.runtime.for_browser()
        self.egress = config.runtime.egress
        self._renders = any(c.render for c in trace.crawls)
        self.latency = self.runtime.start_s
        self.rng = random.Random(config.seed)
        self._heap: list[tuple[float, int, int, str, int]] = []
        self._seq = 0
        self.containers: dict[str, _Container] = {}
        self._started_at: dict[str, float] = {}
        self._idle_at: dict[str, float] = {}
        self._waiting_cold: set[int] = set()
        self.tenants: dict[str, _Tenant] = {}
        self._crawls: dict[int, Crawl] = {}  # the crawls that arrived and are not done
        plain = CrawlSpec.model_construct(seeds=["https://example.com/"], session=None)
        self._plain = plain
        self._rendering = plain.model_copy(update={"render": "always"})
        self._template = Crawl.model_construct(
            id="", tenant_id="", spec=plain, created_at=EPOCH, updated_at=EPOCH
        )
        self.result = RunResult(label=spec.label)
        self._next_id = 0
        self._now = 0.0

    # ------------------------------------------------------------------ plumbing

    def _push(self, at: float, kind: int, key: str = "", n: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, key, n))

    def _tenant(self, tenant_id: str) -> _Tenant:
        found = self.tenants.get(tenant_id)
        if found is None:
            limit = self._always_on.get(tenant_id) or self.config.max_containers
            found = self.tenants[tenant_id] = _Tenant(tenant_id, limit)
        return found

    def _always_on_sizes(self) -> dict[str, int]:
        """Containers per tenant of an always-on fleet: fixed, or its busiest moment's."""
        if self.spec.always_on:
            return dict.fromkeys(self.trace.tenants, self.spec.always_on)
        if not self.spec.always_on_peak:
            return {}
        busy: dict[str, list[tuple[float, float]]] = {}
        for c in self.trace.crawls:
            busy.setdefault(c.tenant, []).append((c.at_s, c.at_s + c.duration_s))
        return {t: max(1, len(levels(b, self.config.capacity))) for t, b in busy.items()}

    def run(self) -> RunResult:
        if self.trace.crawls:  # arrivals enter the heap one by one (a day may hold millions)
            self._push(self.trace.crawls[0].at_s, _ARRIVE, self.trace.crawls[0].tenant, 0)
        self._always_on = self._always_on_sizes()
        if self._always_on:
            for tenant_id, size in self._always_on.items():
                for _ in range(size):
                    ts = self._tenant(tenant_id)
                    cid = self._start(ts, 0.0, ready_at=0.0, for_render=self._renders)
                    self.containers[cid].state = ContainerState.ready
                    self.containers[cid].browser = self._renders
        handlers = (
            self._on_arrive,
            self._on_ready,
            self._on_failed,
            self._on_done,
            self._on_kill,
            self._on_stopped,
            self._on_tick,
        )
        heap = self._heap
        while heap:
            at, _, kind, key, n = heapq.heappop(heap)
            self._now = at
            handlers[kind](at, key, n)
        end = max(self.trace.horizon_s, self._now)
        for cid in list(self.containers):  # always-on ones bill to the end
            self._bill(cid, end)
        self.result.horizon_s = end
        self.result.tenants = {t: ts.result for t, ts in sorted(self.tenants.items())}
        return self.result

    # ------------------------------------------------------------------ placement

    def _place(self, ts: _Tenant, i: int, at: float) -> bool:
        crawl = self._crawls[i]
        session = crawl.spec.session
        bound = None
        if session is not None and session in ts.sessions:
            held = self.containers.get(ts.sessions[session])
            if held is not None and held.state in _LIVE:
                bound = cast(Container, held)
            else:
                del ts.sessions[session]
        snapshot = Snapshot(
            crawl=crawl,
            containers=tuple(cast(Container, self.containers[c]) for c in ts.live),
            bound=bound,
            fleet_size=len(ts.live),
            max_containers=ts.max_containers,
        )
        match decide(snapshot, self.egress):  # one egress per run
            case Dispatch(container=target):
                self._reserve(ts, target.id, i, at)
                if session is not None and bound is None:
                    ts.sessions[session] = target.id
                return True
            case Start():
                cid = self._start(ts, at, for_render=crawl.spec.render != "never")
                self._close_gap(ts, at)
                self._reserve(ts, cid, i, at)
                if session is not None:
                    ts.sessions[session] = cid
                return True
            case Wait():
                return False
        raise AssertionError("a fresh crawl is never reserved already")

    def _reserve(self, ts: _Tenant, cid: str, i: int, at: float) -> None:
        c = self.containers[cid]
        if c.state is ContainerState.ready and not c.in_flight:
            if c.prewarm:
                self._close_gap(ts, at)
            elif self.policy.measures:
                self._observe(ts, at - self._idle_at[cid])
        was_ready = c.state is ContainerState.ready
        c.in_flight = (*c.in_flight, self._crawls[i].id)
        c.generation += 1
        c.idle_bin = 0
        c.prewarm = False
        if was_ready:
            self._dispatch(ts, cid, i, at)
        else:
            self._waiting_cold.add(i)

    def _dispatch(self, ts: _Tenant, cid: str, i: int, at: float) -> None:
        crawl = self.trace.crawls[i]
        wait = at - crawl.at_s
        cold = i in self._waiting_cold
        self._waiting_cold.discard(i)
        self.result.add_crawl(wait, cold, self.config.slo_s)
        ts.result.add_crawl(wait, cold, self.config.slo_s)
        self._push(at + crawl.duration_s, _DONE, cid, i)

    def _place_backlog(self, ts: _Tenant, at: float) -> None:
        waiting = ts.backlog
        for _ in range(len(waiting)):
            i = waiting[0]
            if self._place(ts, i, at):
                waiting.popleft()
            elif self._crawls[i].spec.session is None:
                return
            else:
                waiting.rotate(-1)

    # ------------------------------------------------------------------ containers

    def _runtime_of(self, c: _Container) -> SimRuntime:
        return self.browser_runtime if c.for_render else self.runtime

    def _start(
        self,
        ts: _Tenant,
        at: float,
        *,
        ready_at: float | None = None,
        keep: float | None = None,
        for_render: bool = False,
    ) -> str:
        self._next_id += 1
        cid = f"ctr-{self._next_id}"
        runtime = self.browser_runtime if for_render else self.runtime
        self.containers[cid] = _Container(
            id=cid,
            tenant_id=ts.id,
            egress=runtime.egress,
            capacity=self.config.capacity,
            started_at=EPOCH + timedelta(seconds=at),
            keep_alive_s=keep,
            prewarm=keep is not None,
            for_render=for_render,
        )
        self._started_at[cid] = at
        ts.live.append(cid)
        self.result.fleet_change(at, +1)
        if ready_at is None:
            boot = runtime.sample_start(self.rng)
            failed = self.rng.random() < runtime.failure_rate
            self._push(at + boot, _FAILED if failed else _READY, cid)
            if keep is None:
                self.result.starts += 1
                ts.result.starts += 1
                self.result.browser_starts += for_render
                ts.result.browser_starts += for_render
            else:
                self.result.prewarms += 1
        return cid

    def _went_idle(self, ts: _Tenant, cid: str, at: float) -> None:
        c = self.containers[cid]
        keep = c.keep_alive_s if c.prewarm and c.keep_alive_s is not None else None
        if keep is None:  # weighed with its own cold start, as the conductor does
            keep = self.policy.decide(ts.stats, self._runtime_of(c).start_s).keep_alive_s
        c.keep_alive_s, c.idle_bin = keep, 0
        self._idle_at[cid] = at
        if math.isfinite(keep):
            self._push(at + keep, _KILL, cid, c.generation)

    def _on_ready(self, at: float, cid: str, _: int) -> None:
        c = self.containers[cid]
        c.state = ContainerState.ready
        c.browser = c.for_render  # its ready says whether it can render
        ts = self.tenants[c.tenant_id]
        if not c.in_flight:
            self._went_idle(ts, cid, at)
            return
        for crawl_id in c.in_flight:
            self._dispatch(ts, cid, int(crawl_id[1:]), at)

    def _on_failed(self, at: float, cid: str, _: int) -> None:
        c = self.containers[cid]
        ts = self.tenants[c.tenant_id]
        self.result.failed_starts += 1
        self._remove(ts, cid, at)
        for crawl_id in c.in_flight:  # placed again, as the conductor does after a reap
            i = int(crawl_id[1:])
            if not self._place(ts, i, at):
                ts.backlog.appendleft(i)

    def _on_arrive(self, at: float, tenant_id: str, i: int) -> None:
        crawls = self.trace.crawls
        if i + 1 < len(crawls):
            self._push(crawls[i + 1].at_s, _ARRIVE, crawls[i + 1].tenant, i + 1)
        c = crawls[i]
        spec = self._rendering if c.render else self._plain
        if c.session is not None:
            spec = spec.model_copy(update={"session": c.session})
        update = {"id": f"c{i}", "tenant_id": c.tenant, "spec": spec}
        self._crawls[i] = self._template.model_copy(update=update)
        ts = self._tenant(tenant_id)
        if not self._place(ts, i, at):
            ts.backlog.append(i)

    def _on_done(self, at: float, cid: str, i: int) -> None:
        c = self.containers[cid]
        ts = self.tenants[c.tenant_id]
        crawl_id = self._crawls.pop(i).id
        rest = tuple(x for x in c.in_flight if x != crawl_id)
        c.in_flight = rest
        c.generation += 1
        if not rest and c.state in _LIVE:
            self._went_idle(ts, cid, at)
        self._place_backlog(ts, at)

    def _on_kill(self, at: float, cid: str, generation: int) -> None:
        c = self.containers.get(cid)
        if c is None or c.generation != generation or c.in_flight:
            return  # stale: it got work since
        if c.state is not ContainerState.ready:
            return
        c.state = ContainerState.draining
        c.generation += 1
        self._push(at + self.runtime.stop_s, _STOPPED, cid)

    def _on_stopped(self, at: float, cid: str, _: int) -> None:
        c = self.containers[cid]
        ts = self.tenants[c.tenant_id]
        self._remove(ts, cid, at)
        if self.policy.measures and c.keep_alive_s is not None:
            if ts.open_at is None:
                ts.open_at, ts.open_s, ts.prewarmed, ts.open_count = at, c.keep_alive_s, False, 1
                self._schedule_tick(ts)
            else:
                ts.open_count += 1
        self._place_backlog(ts, at)

    def _remove(self, ts: _Tenant, cid: str, at: float) -> None:
        ts.live.remove(cid)
        for session, held in list(ts.sessions.items()):
            if held == cid:
                del ts.sessions[session]
        self._bill(cid, at)
        self.result.fleet_change(at, -1)

    def _bill(self, cid: str, at: float) -> None:
        c = self.containers.pop(cid)
        self._idle_at.pop(cid, None)
        seconds = self._runtime_of(c).billed(at - self._started_at.pop(cid))
        for result in (self.result, self.tenants[c.tenant_id].result):
            result.container_s += seconds
            if c.for_render:
                result.browser_s += seconds

    # ------------------------------------------------------------------ idle gaps

    def _observe(self, ts: _Tenant, gap_s: float) -> None:
        # the conductor learns the edge its kill-timer chain passed, not the exact gap
        i = sum(1 for e in EDGES_S if e <= gap_s)
        rounded = 0.0 if i == 0 else EDGES_S[i - 1]
        stats = ts.stats or IdleStats(tenant_id=ts.id)
        ts.stats = self.policy.observe(stats, rounded, self.latency)
        if ts.open_at is not None:
            self._schedule_tick(ts)

    def _gap_now(self, ts: _Tenant, at: float) -> float:
        assert ts.open_at is not None
        period = self.config.housekeeping_s
        runs = math.floor(at / period) - math.floor(ts.open_at / period)
        return ts.open_s + runs * period

    def _close_gap(self, ts: _Tenant, at: float) -> None:
        if ts.open_at is None:
            return
        gap = self._gap_now(ts, at)
        ts.open_at = None
        ts.open_count = 0
        ts.tick_version += 1
        ts.stats = self.policy.observe(ts.stats or IdleStats(tenant_id=ts.id), gap, self.latency)

    def _schedule_tick(self, ts: _Tenant) -> None:
        """The next housekeeping run at which the open gap matters: a pre-warm, or 4 h."""
        assert ts.open_at is not None
        ts.tick_version += 1
        period = self.config.housekeeping_s
        runs = [math.ceil((EDGES_S[-1] - ts.open_s) / period)]
        plan = self.policy.decide(ts.stats, self.latency)
        if plan.prewarm_at_s is not None and not ts.prewarmed:
            due = plan.prewarm_at_s - self.latency
            runs.append(math.floor((due - ts.open_s - period) / period) + 1)
        k = max(1, min(runs))
        at = (math.floor(ts.open_at / period) + k) * period
        self._push(at, _TICK, ts.id, ts.tick_version)

    def _on_tick(self, at: float, tenant_id: str, version: int) -> None:
        ts = self.tenants[tenant_id]
        if ts.open_at is None or version != ts.tick_version:
            return
        period = self.config.housekeeping_s
        gap = self._gap_now(ts, at)
        if gap >= EDGES_S[-1]:
            self._close_gap(ts, at)
            return
        plan = self.policy.decide(ts.stats, self.latency)
        if plan.prewarm_at_s is not None and not ts.prewarmed:
            due = plan.prewarm_at_s - self.latency
            if gap + period > due:
                ts.prewarmed = True
                taking = sum(self.containers[c].state in _LIVE for c in ts.live)
                for _ in range(max(1, ts.open_count) - taking):
                    if len(ts.live) >= ts.max_containers:
                        break
                    self._start(ts, at, keep=plan.prewarm_keep_s + max(0.0, due - gap))
        self._schedule_tick(ts)
