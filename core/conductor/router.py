"""Routing: which container a pending crawl goes to (the brief's story, step 3).

* a crawl with a ``session`` goes to the container bound to that session (sticky egress);
* otherwise to the least-loaded ready/starting container of its egress with a free slot;
* otherwise a new container is started and the crawl waits, reserved on it, for ``ready``;
* at the tenant's container limit the crawl stays ``pending`` in the tenant's backlog.

Every step is a compare-and-set (fleet slot, container slot, session binding); a lost race
means deciding again with fresh records.
"""

from __future__ import annotations

import contextlib
import logging

from core.conductor.fleet import ContainerFleet
from core.conductor.placement import choose_egress, egress_health, pick_container
from core.conductor.transitions import CrawlTransitions
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
    ) -> None:
        self.ports = ports
        self.records = records
        self.settings = settings
        self.fleet = fleet
        self._t = transitions

    async def place(self, tenant: Tenant, crawl: Crawl) -> bool:
        """Put a pending crawl on a container. False when it stays in the backlog."""
        if tenant.state is not TenantState.active:  # being torn down: start nothing for it
            await self._t.finish(crawl, CrawlState.cancelled, reason="tenant deleted")
            return True
        try:
            health = egress_health(await self.records.live_containers(tenant.id))
            egress = choose_egress(crawl.spec, self.settings.egresses, health)
        except InvalidRequest as exc:
            await self._t.finish(crawl, CrawlState.failed, reason=exc.detail)
            return True
        for _ in range(10):
            containers = await self._candidates(tenant.id)
            holder = next((c for c in containers if crawl.id in c.in_flight), None)
            if holder is not None:  # reserved before a crash or a duplicate: finish the job
                await self._t.commit_dispatch(crawl, holder)
                return True
            target, sticky = await self._session_target(tenant, crawl, containers)
            if target is None:
                target = pick_container(containers, egress)
            if target is None:
                try:
                    target, bound = await self._start(tenant, crawl, egress)
                except Conflict:
                    continue  # the session was bound elsewhere meanwhile: follow it
                sticky = sticky or bound
            if target is None:  # the limit may be full of containers started meanwhile, with room
                target = pick_container(await self._candidates(tenant.id), egress)
            if target is None:
                log.info("tenant %s at its container limit; crawl %s waits", tenant.id, crawl.id)
                return False
            reserved = await self.fleet.reserve(tenant.id, target.id, crawl.id, force=sticky)
            if reserved is None:
                continue  # it filled up or began draining meanwhile: decide again
            if crawl.spec.session and not sticky and not await self._bind(crawl, reserved):
                await self.fleet.release(tenant.id, reserved.id, crawl.id)
                continue  # another instance bound this session elsewhere: follow it
            await self._t.commit_dispatch(crawl, reserved)
            return True
        raise Conflict(f"could not place crawl {crawl.id}: too much contention")

    async def _start(
        self, tenant: Tenant, crawl: Crawl, egress: Egress
    ) -> tuple[Container | None, bool]:
        """Start a container for ``crawl`` -> (container or None at the limit, session bound).
        A session is bound to the new container before it runs, so that two instances never
        start one each for the same session (``Conflict`` if it went elsewhere meanwhile)."""
        if not crawl.spec.session:
            return await self.fleet.start(tenant, egress), False
        claimed: list[bool] = []

        async def bind_first(new: Container) -> bool:
            claimed.append(await self._bind(crawl, new))
            return claimed[-1]

        container = await self.fleet.start(tenant, egress, claim=bind_first)
        if claimed and not claimed[-1]:  # started anyway, for work it got meanwhile
            raise Conflict(f"session {crawl.spec.session!r} was bound elsewhere meanwhile")
        return container, bool(claimed)

    async def _candidates(self, tenant_id: str) -> list[Container]:
        """Live containers that hold a fleet slot. A container whose start lost the race for
        the last slot has a record for a moment, and must take no work before it is gone."""
        containers = await self.records.live_containers(tenant_id)
        fleet = await self.records.fleets.get(tenant_id, "fleet")
        slots = set() if fleet is None else set(fleet.value.containers)
        return [c for c in containers if c.id in slots]

    async def _session_target(
        self, tenant: Tenant, crawl: Crawl, containers: list[Container]
    ) -> tuple[Container | None, bool]:
        if not crawl.spec.session:
            return None, False
        binding = await self.records.sessions.get(tenant.id, crawl.spec.session)
        if binding is None:
            return None, False
        bound = next((c for c in containers if c.id == binding.value.container_id), None)
        if bound is None:  # maybe started after ``containers`` was read: ask its record
            fresh = await self.records.containers.get(tenant.id, binding.value.container_id)
            bound = None if fresh is None else fresh.value
        if bound is not None and bound.state in (ContainerState.ready, ContainerState.starting):
            return bound, True
        with contextlib.suppress(Conflict):  # its container is gone: the session starts afresh
            await self.records.sessions.delete(binding)
        return None, False

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
        """Place the tenant's oldest pending crawls while there is room. Returns how many."""
        tenant = await self.records.tenants.get("tenants", tenant_id)
        if tenant is None:
            return 0
        entries = sorted(
            (v.value for v in await self.records.active.query(tenant_id)),
            key=lambda a: (a.created_at, a.crawl_id),
        )
        placed = 0
        for entry in entries[:BACKLOG_BATCH]:
            crawl = await self.records.crawls.get(tenant_id, entry.crawl_id)
            if crawl is None:
                await self.records.active.discard(tenant_id, entry.crawl_id)
                continue
            if crawl.value.state is not CrawlState.pending:
                continue
            if not await self.place(tenant.value, crawl.value):
                if not crawl.value.spec.session:
                    break
                continue
            placed += 1
        return placed
