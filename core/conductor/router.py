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

import contextlib
import dataclasses
import logging

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
from core.records import Records
from core.settings import SkycrawlSettings

log = logging.getLogger("skycrawl.conductor")

BACKLOG_BATCH = 50


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

    async def place(self, tenant: Tenant, crawl: Crawl) -> bool:
        """Put a pending crawl on a container. False when it stays in the backlog."""
        if telemetry.in_trace(crawl.traceparent):  # off, or handling this crawl's message
            return await self._place(tenant, crawl)
        with telemetry.span(  # from the backlog, or a requeue: back into the crawl's trace
            "conductor place", crawl.traceparent, tenant_id=tenant.id, crawl_id=crawl.id
        ):
            placed = await self._place(tenant, crawl)
            telemetry.set_attributes(placed=placed)
            return placed

    async def _place(self, tenant: Tenant, crawl: Crawl) -> bool:
        if tenant.state is not TenantState.active:  # being torn down: start nothing for it
            await self._t.finish(crawl, CrawlState.cancelled, reason="tenant deleted")
            return True
        for attempt in range(10):
            snapshot = await self._snapshot(tenant, crawl)
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
                    if await self._reserve_and_commit(tenant, crawl, target, sticky=sticky):
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
                        tenant, crawl, started, sticky=bound
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
        self, tenant: Tenant, crawl: Crawl, target: Container, *, sticky: bool
    ) -> bool:
        """Apply a placement; False if a race was lost and the decision must be made again."""
        reserved = await self.fleet.reserve(tenant.id, target.id, crawl.id, force=sticky)
        if reserved is None:
            return False  # it filled up or began draining meanwhile
        if crawl.spec.session and not sticky and not await self._bind(crawl, reserved):
            await self.fleet.release(tenant.id, reserved.id, crawl.id)
            return False  # another instance bound this session elsewhere: follow it
        await self._t.commit_dispatch(crawl, reserved)
        return True

    async def _snapshot(self, tenant: Tenant, crawl: Crawl) -> Snapshot:
        containers = await self.records.live_containers(tenant.id)
        fleet = await self.records.fleets.get(tenant.id, "fleet")
        slots = () if fleet is None else fleet.value.containers
        # a container whose start lost the race for the last slot has a record for a
        # moment, and must take no work before it is gone
        candidates = tuple(c for c in containers if c.id in set(slots))
        bound = await self._session_target(tenant, crawl, list(candidates))
        return Snapshot(
            crawl=crawl,
            containers=candidates,
            bound=bound,
            fleet_size=len(slots),
            slots=tuple(slots),
            max_containers=tenant.quotas.max_containers,
            topic_limit=self.ports.bus.capabilities.max_subscriptions_per_topic,
        )

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
        if not crawl.spec.session:
            return await self.fleet.start(tenant, egress, expect_fleet=expect), False
        claimed: list[bool] = []

        async def bind_first(new: Container) -> bool:
            claimed.append(await self._bind(crawl, new))
            return claimed[-1]

        container = await self.fleet.start(tenant, egress, claim=bind_first, expect_fleet=expect)
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
        never starve behind dispatched ones however many those are."""
        tenant = await self.records.tenants.get("tenants", tenant_id)
        if tenant is None:
            return 0
        placed = 0
        for entry in await self.records.backlog.query(tenant_id, limit=BACKLOG_BATCH):
            crawl = await self.records.crawls.get(tenant_id, entry.value.crawl_id)
            if crawl is None or crawl.value.state is not CrawlState.pending:
                if crawl is not None and crawl.value.outbox:  # a dispatch whose send failed
                    await self._t.relay(crawl.value)
                await self.records.backlog.discard(tenant_id, entry.item.key)
                continue
            if not await self.place(tenant.value, crawl.value):
                if not crawl.value.spec.session:
                    break
                continue
            placed += 1
        return placed
