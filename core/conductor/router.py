"""Routing: which container a pending crawl goes to (the brief's story, step 3).

* a crawl with a ``session`` goes to the container bound to that session (sticky egress);
* otherwise to the least-loaded ready/starting container of its egress with a free slot;
* otherwise a new container is started and the crawl waits, reserved on it, for ``ready``;
* at the tenant's container limit, or when the tenant's dispatch topic holds as many
  subscriptions as the broker allows, the crawl stays ``pending`` in the tenant's backlog
  with the reason in its status.

Every step is a compare-and-set (fleet slot, container slot, session binding); a lost race
means deciding again with fresh records.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from core import telemetry
from core.conductor.egress_health import EgressHealthKeeper, SessionRoute
from core.conductor.fleet import ContainerFleet
from core.conductor.placement import (
    Commit,
    Dispatch,
    Snapshot,
    Start,
    Wait,
    accepts_work,
    decide,
)
from core.conductor.transitions import CrawlTransitions
from core.egress_scoring import DIRECT, Blocked, EgressLoad, Route, best_proxy, choose_route
from core.errors import Conflict, InvalidRequest
from core.models import (
    Container,
    ContainerState,
    Crawl,
    CrawlState,
    Egress,
    SessionBinding,
    Tenant,
    TenantState,
)
from core.ports import Ports
from core.records import Records, Versioned
from core.settings import SkycrawlSettings

log = logging.getLogger("skycrawl.conductor")

BACKLOG_BATCH = 50


@dataclass(slots=True)
class _Pending:
    """One handler's crawl waiting in a batch of placements, and where its answer goes."""

    crawl: Crawl
    current: Versioned[Crawl] | None
    placed: asyncio.Future[bool]

    def answer(self, placed: bool) -> None:
        if not self.placed.done():  # its handler may have been cancelled meanwhile
            self.placed.set_result(placed)

    def fail(self, exc: BaseException) -> None:
        if self.placed.done():
            return
        if isinstance(exc, asyncio.CancelledError):
            self.placed.cancel()
        else:
            self.placed.set_exception(exc)


class Router:
    def __init__(
        self,
        *,
        ports: Ports,
        records: Records,
        settings: SkycrawlSettings,
        fleet: ContainerFleet,
        transitions: CrawlTransitions,
        health: EgressHealthKeeper,
    ) -> None:
        self.ports = ports
        self.records = records
        self.settings = settings
        self.fleet = fleet
        self._t = transitions
        self.health = health
        self._joining: dict[str, list[_Pending]] = {}  # tenant -> the batch being gathered

    async def place(
        self, tenant: Tenant, crawl: Crawl, *, current: Versioned[Crawl] | None = None
    ) -> bool:
        """Put a pending crawl on a container. False when it stays in the backlog.
        ``current``: the crawl's record as the caller read it (saves a read when unchanged).

        Placements of one tenant that arrive together (the handlers of one inbox batch run
        concurrently) are applied together by the first of them (``_place_batch``): one
        read of the tenant's containers and one compare-and-set per container for all the
        crawls it takes, instead of one each. A lone placement, and every crawl with a
        session, takes ``_place_one``."""
        return await self._in_its_trace(
            tenant, crawl, partial(self._place, tenant, crawl, current=current)
        )

    async def _in_its_trace(
        self, tenant: Tenant, crawl: Crawl, placing: Callable[[], Awaitable[bool]]
    ) -> bool:
        """Run ``placing`` inside ``crawl``'s trace: as it is when this handler is the
        crawl's own; else (the backlog, a requeue, a batch placing another handler's crawl)
        in a ``conductor place`` span of the crawl's trace."""
        if telemetry.in_trace(crawl.traceparent):  # off, or handling this crawl's message
            return await placing()
        with telemetry.span(
            "conductor place", crawl.traceparent, tenant_id=tenant.id, crawl_id=crawl.id
        ):
            placed = await placing()
            telemetry.set_attributes(placed=placed)
            return placed

    async def _place(
        self, tenant: Tenant, crawl: Crawl, *, current: Versioned[Crawl] | None = None
    ) -> bool:
        if tenant.state is not TenantState.active or crawl.spec.session:
            return await self._place_one(tenant, crawl, current=current)
        mine = _Pending(crawl, current, asyncio.get_running_loop().create_future())
        joining = self._joining.get(tenant.id)
        if joining is not None:
            joining.append(mine)
            return await mine.placed
        batch = self._joining[tenant.id] = [mine]
        try:
            await asyncio.sleep(0)  # the other handlers of this batch of messages join here
        finally:
            del self._joining[tenant.id]
        try:
            await self._place_batch(tenant, batch)
        except BaseException:
            if mine.placed.done() and not mine.placed.cancelled():
                mine.placed.exception()  # raised here instead, not left unretrieved
            raise
        return await mine.placed

    async def _place_batch(
        self, tenant: Tenant, batch: list[_Pending], *, stop_on_wait: bool = False
    ) -> None:
        """Place ``batch`` (crawls of one tenant, without sessions): each crawl that the
        tenant's ready/starting containers can take is decided on one snapshot (updated in
        memory as slots are handed out, so the least-loaded rule spreads them), reserved by
        one compare-and-set per container, then committed one by one. The rest (a start, a
        wait, a lost race, a reservation left by a crash) go through ``_place_one``. Each
        handler gets its own crawl's answer or error; if the instance dies, all of them do.
        ``stop_on_wait``: once one crawl stays pending, leave the rest pending untried (the
        backlog: the tenant is full)."""
        try:
            together = len(batch) > 1 and tenant.state is TenantState.active
            rest = await self._place_together(tenant, batch) if together else batch
            full = False
            for pending in rest:
                if full:
                    pending.answer(False)
                    continue
                one = partial(self._place_one, tenant, pending.crawl, current=pending.current)
                placed = await self._settle(pending, self._in_its_trace(tenant, pending.crawl, one))
                full = stop_on_wait and placed is False
        except BaseException as exc:  # a shared read failed, or the instance died here
            for pending in batch:
                pending.fail(exc)
            if not isinstance(exc, Exception):
                raise

    @staticmethod
    async def _settle(pending: _Pending, placing: Awaitable[bool]) -> bool | None:
        """Run one crawl's placement; its handler gets the answer or the (ordinary) error.
        Returns the answer (None for an error)."""
        try:
            placed = await placing
        except Exception as exc:
            pending.fail(exc)
            return None
        pending.answer(placed)
        return placed

    async def _place_together(self, tenant: Tenant, batch: list[_Pending]) -> list[_Pending]:
        """The shared part of ``_place_batch``; returns the crawls left for ``_place_one``."""
        snapshot, versions = await self._snapshot(tenant, batch[0].crawl)
        containers = {c.id: c for c in snapshot.containers}
        chosen: dict[str, list[tuple[_Pending, Crawl]]] = {}
        rest: list[_Pending] = []
        for pending in batch:
            try:
                route = await self._route(tenant, pending.crawl, tuple(containers.values()))
            except InvalidRequest:
                rest.append(pending)  # ``_place_one`` fails it with the reason
                continue
            if isinstance(route, Blocked):
                rest.append(pending)
                continue
            crawl = await self._with_proxy(pending.crawl, route)
            view = dataclasses.replace(snapshot, crawl=crawl, containers=tuple(containers.values()))
            decision = decide(view, route.egress)
            if not isinstance(decision, Dispatch) or decision.sticky:
                rest.append(pending)
                continue
            target = decision.container
            containers[target.id] = target.model_copy(
                update={"in_flight": (*target.in_flight, crawl.id)}
            )
            chosen.setdefault(target.id, []).append((pending, crawl))
        commits: list[tuple[_Pending, Crawl, Container]] = []
        try:
            for container_id, group in chosen.items():
                reserved, taken = await self.fleet.reserve_many(
                    tenant.id,
                    container_id,
                    [crawl.id for _, crawl in group],
                    current=versions.get(container_id),
                )
                for pending, crawl in group:
                    if reserved is None or crawl.id not in taken:
                        rest.append(pending)  # it filled up or began draining meanwhile
                        continue
                    commits.append((pending, crawl, reserved))
        except Exception:
            # what was reserved before the failure is committed first, as when each
            # container's crawls were committed right after its reservation
            await self._commit_all(tenant, commits)
            raise
        await self._commit_all(tenant, commits)
        return rest

    async def _commit_all(
        self, tenant: Tenant, commits: list[tuple[_Pending, Crawl, Container]]
    ) -> None:
        """Commit the reserved crawls, each handler answered with its own outcome: together
        (``commit_dispatches``: one commit for their dispatches, one for their outbox clears
        and backlog deletes) those placed in the trace they run in -- all of them when
        tracing is off -- and one by one, each in a span of its own trace, the others."""
        together: list[tuple[_Pending, Crawl, Container]] = []
        alone: list[tuple[_Pending, Crawl, Container]] = []
        for placed in commits:
            (together if telemetry.in_trace(placed[1].traceparent) else alone).append(placed)
        if together:
            errors = await self._t.commit_dispatches(
                [(crawl, reserved, pending.current) for pending, crawl, reserved in together]
            )
            for (pending, _, _), error in zip(together, errors, strict=True):
                if error is None:
                    pending.answer(True)
                else:
                    pending.fail(error)
        for pending, crawl, reserved in alone:
            commit = partial(self._commit, crawl, reserved, pending.current)
            await self._settle(pending, self._in_its_trace(tenant, crawl, commit))

    async def _commit(
        self, crawl: Crawl, container: Container, current: Versioned[Crawl] | None
    ) -> bool:
        await self._t.commit_dispatch(crawl, container, current=current)
        return True

    async def _place_one(
        self, tenant: Tenant, crawl: Crawl, *, current: Versioned[Crawl] | None = None
    ) -> bool:
        """``place`` for one crawl on its own."""
        if tenant.state is not TenantState.active:  # being torn down: start nothing for it
            await self._t.finish(crawl, CrawlState.cancelled, reason="tenant deleted")
            return True
        for attempt in range(10):
            snapshot, versions = await self._snapshot(tenant, crawl)
            try:
                route = await self._route(tenant, crawl, snapshot.containers)
            except InvalidRequest as exc:
                await self._t.finish(crawl, CrawlState.failed, reason=exc.detail)
                return True
            if isinstance(route, Blocked):
                log.info("crawl %s of tenant %s: %s", crawl.id, tenant.id, route.reason)
                await self._note_wait(crawl, route.reason)
                return False
            crawl = await self._with_proxy(crawl, route)
            decision = decide(dataclasses.replace(snapshot, crawl=crawl), route.egress)
            match decision:
                case Commit(container=holder):
                    await self._t.commit_dispatch(await self.recover_proxy(crawl, holder), holder)
                    return True
                case Wait(reason=reason):
                    log.info("crawl %s of tenant %s: %s", crawl.id, tenant.id, reason)
                    await self._note_wait(crawl, reason)
                    return False
                case Dispatch(container=target, sticky=sticky):
                    if await self._reserve_and_commit(
                        tenant,
                        crawl,
                        target,
                        sticky=sticky,
                        read=versions.get(target.id),
                        current=current,
                    ):
                        return True
                case Start(egress=where):
                    # The egress was chosen on the pool's load as read in ``snapshot``: when
                    # another instance changed the fleet since (two crawls placed at once),
                    # the start is refused and the choice made again on the new load, so
                    # equal egresses share concurrent crawls. Not forever: after a few lost
                    # races the start goes ahead on a slightly stale load.
                    expect = snapshot.slots if self._load_matters() and attempt < 5 else None
                    try:
                        started, bound = await self._start(tenant, crawl, where, expect)
                    except Conflict:
                        continue  # the fleet or the session changed meanwhile: decide again
                    if started is not None and await self._reserve_and_commit(
                        tenant, crawl, started, sticky=bound, current=current
                    ):
                        return True
        raise Conflict(f"could not place crawl {crawl.id}: too much contention")

    def _load_matters(self) -> bool:
        """Whether the choice of egress depends on where the tenant's crawls already are."""
        return len(self.settings.egresses) > 1

    async def _route(
        self, tenant: Tenant, crawl: Crawl, containers: tuple[Container, ...]
    ) -> Route | Blocked:
        """Score the pool for ``crawl`` (``core.egress_scoring``) on the tenant's
        ``containers`` (those holding a fleet slot, freshly read)."""
        pool = self.settings.egresses
        if len(pool) == 1 and not pool[0].proxy_pool and not crawl.spec.session:
            return choose_route(crawl.spec, pool)  # nothing to choose: read nothing
        live = [c for c in containers if accepts_work(c)]
        load: dict[str, EgressLoad] = {}
        for c in live:
            seen = load.get(c.egress.name, EgressLoad())
            load[c.egress.name] = EgressLoad(
                crawls=seen.crawls + len(c.in_flight),
                free_slots=seen.free_slots + max(c.free_slots, 0),
            )
        pool = self.settings.egresses
        typical = {}
        for e in pool:
            with contextlib.suppress(Exception):  # a pool entry without a runtime: no hint
                typical[e.name] = self.ports.runtime_for(e).capabilities.typical_start_s
        session = crawl.spec.session
        sticky = None if not session else await self.health.route_of(tenant.id, session)
        return choose_route(
            crawl.spec,
            pool,
            health=await self.health.snapshot(),
            load=load,
            typical_start_s=typical,
            sticky=sticky,
        )

    async def _with_proxy(self, crawl: Crawl, route: Route) -> Crawl:
        """``crawl`` carrying the route's proxy (stored with the dispatch, and named by its
        ``RunCrawl``; None for a direct egress) and, for a session, the session's route
        stored (the first one stays)."""
        if crawl.spec.session:
            await self.health.remember(
                SessionRoute(
                    tenant_id=crawl.tenant_id,
                    session=crawl.spec.session,
                    egress=route.egress.name,
                    proxy=route.proxy,
                    bound_at=self.ports.clock.now(),
                )
            )
        proxy = None if route.proxy == DIRECT else route.proxy
        return crawl if crawl.proxy == proxy else crawl.model_copy(update={"proxy": proxy})

    async def recover_proxy(self, crawl: Crawl, container: Container) -> Crawl:
        """``crawl``, reserved on ``container`` by a dispatch that a crash cut short, with
        the proxy its route names: the session's stored one, else the egress's best."""
        if crawl.proxy is not None or not container.egress.proxy_pool:
            return crawl
        pid = None
        if crawl.spec.session:
            route = await self.health.route_of(crawl.tenant_id, crawl.spec.session)
            if route is not None and route.egress == container.egress.name:
                pid = route.proxy
        if pid is None:
            pid = best_proxy(
                container.egress, (await self.health.snapshot()).get(container.egress.name)
            )
        return crawl.model_copy(update={"proxy": None if pid == DIRECT else pid})

    async def _reserve_and_commit(
        self,
        tenant: Tenant,
        crawl: Crawl,
        target: Container,
        *,
        sticky: bool,
        read: Versioned[Container] | None = None,
        current: Versioned[Crawl] | None = None,
    ) -> bool:
        """Apply a placement; False if a race was lost and the decision must be made again.
        ``read``: ``target``'s record as the decision read it; ``current``: the crawl's."""
        reserved = await self.fleet.reserve(
            tenant.id, target.id, crawl.id, force=sticky, current=read
        )
        if reserved is None:
            return False  # it filled up or began draining meanwhile
        if crawl.spec.session and not sticky and not await self._bind(crawl, reserved):
            await self.fleet.release(tenant.id, reserved.id, crawl.id)
            return False  # another instance bound this session elsewhere: follow it
        await self._t.commit_dispatch(crawl, reserved, current=current)
        return True

    async def _snapshot(
        self, tenant: Tenant, crawl: Crawl
    ) -> tuple[Snapshot, dict[str, Versioned[Container]]]:
        """The decision's input, and the containers' records as read (for the writes)."""
        found = await self.records.containers.query(tenant.id)
        fleet = await self.records.fleets.get(tenant.id, "fleet")
        slots = () if fleet is None else fleet.value.containers
        # a container whose start lost the race for the last slot has a record for a
        # moment, and must take no work before it is gone
        in_fleet = set(slots)
        versions = {v.value.id: v for v in found if v.value.state.live and v.value.id in in_fleet}
        candidates = tuple(v.value for v in versions.values())
        bound = await self._session_target(tenant, crawl, list(candidates))
        snapshot = Snapshot(
            crawl=crawl,
            containers=candidates,
            bound=bound,
            fleet_size=len(slots),
            slots=tuple(slots),
            max_containers=tenant.quotas.max_containers,
            topic_limit=self.ports.bus.capabilities.max_subscriptions_per_topic,
        )
        return snapshot, versions

    async def _note_wait(self, crawl: Crawl, reason: str) -> None:
        """Show why a crawl waits in its status (written only when the reason changes)."""
        if crawl.reason == reason:
            return

        def note(c: Crawl) -> Crawl | None:
            if c.state is not CrawlState.pending or c.reason == reason:
                return None
            return c.model_copy(update={"reason": reason})

        await self.records.crawls.mutate(crawl.tenant_id, crawl.id, note)

    async def _start(
        self, tenant: Tenant, crawl: Crawl, egress: Egress, expect: tuple[str, ...] | None
    ) -> tuple[Container | None, bool]:
        """Start a container for ``crawl`` -> (container or None at the limit, session bound).
        A session is bound to the new container before it runs, so that two instances never
        start one each for the same session (``Conflict`` if it went elsewhere meanwhile).
        ``expect``: the fleet's slots the choice was made on (``Conflict`` if they changed)."""
        browser = crawl.spec.render != "never"  # from the browser image
        if not crawl.spec.session:
            started = await self.fleet.start(tenant, egress, expect_fleet=expect, browser=browser)
            return started, False
        claimed: list[bool] = []

        async def bind_first(new: Container) -> bool:
            claimed.append(await self._bind(crawl, new))
            return claimed[-1]

        container = await self.fleet.start(
            tenant, egress, claim=bind_first, expect_fleet=expect, browser=browser
        )
        if claimed and not claimed[-1]:  # started anyway, for work it got meanwhile
            raise Conflict(f"session {crawl.spec.session!r} was bound elsewhere meanwhile")
        return container, bool(claimed)

    async def _session_target(
        self, tenant: Tenant, crawl: Crawl, containers: list[Container]
    ) -> Container | None:
        if not crawl.spec.session:
            return None
        binding = await self.records.sessions.get(tenant.id, crawl.spec.session)
        if binding is None:
            return None
        bound = next((c for c in containers if c.id == binding.value.container_id), None)
        if bound is None:  # maybe started after ``containers`` was read: ask its record
            fresh = await self.records.containers.get(tenant.id, binding.value.container_id)
            bound = None if fresh is None else fresh.value
        if bound is not None and bound.state in (ContainerState.ready, ContainerState.starting):
            return bound
        if bound is not None and bound.state.live and bound.in_flight:
            return bound  # being stopped with work on it: the crawl waits (``decide``)
        with contextlib.suppress(Conflict):  # its container is gone: the session starts afresh
            await self.records.sessions.delete(binding)
        return None

    async def _bind(self, crawl: Crawl, container: Container) -> bool:
        assert crawl.spec.session is not None
        binding = SessionBinding(
            tenant_id=crawl.tenant_id,
            session=crawl.spec.session,
            container_id=container.id,
            egress=container.egress.name,
            bound_at=self.ports.clock.now(),
        )
        try:
            await self.records.sessions.create(crawl.tenant_id, crawl.spec.session, binding)
        except Conflict:
            existing = await self.records.sessions.get(crawl.tenant_id, crawl.spec.session)
            return existing is not None and existing.value.container_id == container.id
        return True

    async def place_backlog(self, tenant_id: str) -> int:
        """Place the tenant's oldest pending crawls while there is room. Returns how many.

        Reads the ``backlog`` index (pending crawls only, oldest first), so pending crawls
        never starve behind dispatched ones however many those are. The crawls without a
        session are placed as one batch (``_place_batch``), oldest first, until one has to
        wait; those with a session one by one after."""
        tenant = await self.records.tenants.get("tenants", tenant_id)
        if tenant is None:
            return 0
        loop = asyncio.get_running_loop()
        plain: list[_Pending] = []
        sessions: list[Versioned[Crawl]] = []
        for entry in await self.records.backlog.query(tenant_id, limit=BACKLOG_BATCH):
            crawl = await self.records.crawls.get(tenant_id, entry.value.crawl_id)
            if crawl is None or crawl.value.state is not CrawlState.pending:
                if crawl is not None and crawl.value.outbox:  # a dispatch whose send failed
                    await self._t.relay(crawl.value)
                await self.records.backlog.discard(tenant_id, entry.item.key, current=entry.item)
                continue
            if crawl.value.spec.session:
                sessions.append(crawl)
            else:
                plain.append(_Pending(crawl.value, crawl, loop.create_future()))
        placed = 0
        if plain:
            await self._place_batch(tenant.value, plain, stop_on_wait=True)
            errors = [p.placed.exception() for p in plain]  # each retrieved: none is lost
            failed = next((e for e in errors if e is not None), None)
            if failed is not None:
                raise failed  # after the batch's other crawls had their try, as before
            placed += sum(p.placed.result() for p in plain)
        for crawl in sessions:
            one = partial(self._place_one, tenant.value, crawl.value, current=crawl)
            placed += await self._in_its_trace(tenant.value, crawl.value, one)
        return placed
