"""Container lifecycle: start, reserve and release slots, kill timers, stop and reap.

Every change goes through compare-and-set on the container record, so several conductor
instances can run at once:

* the tenant's container limit is a CAS on the ``fleets`` record (a list of live GUIDs);
* a slot is reserved by a CAS that re-checks state and free slots on the latest version;
* an idle stop first moves the container to ``draining`` by a CAS that requires
  ``in_flight == ()`` and the timer's generation — so a container that just got work is
  never killed (drain-before-kill); stale kill messages fail that check and are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

from core.errors import Conflict, Retryable
from core.layout import subscription_name
from core.messages import KillTimer, encode
from core.models import Container, ContainerState, Egress, Tenant
from core.ports import ContainerSpec, Ports
from core.records import Fleet, Records
from core.settings import SkycrawlSettings

log = logging.getLogger("skycrawl.conductor")


class ContainerFleet:
    def __init__(
        self,
        *,
        ports: Ports,
        records: Records,
        settings: SkycrawlSettings,
        engine_env: Mapping[str, str],
        new_id: Callable[[], str],
    ) -> None:
        self._ports = ports
        self._records = records
        self._settings = settings
        self._engine_env = dict(engine_env)
        self._new_id = new_id

    def _now(self) -> datetime:
        return self._ports.clock.now()

    # ------------------------------------------------------------------ start

    async def start(
        self,
        tenant: Tenant,
        egress: Egress,
        *,
        claim: Callable[[Container], Awaitable[bool]] | None = None,
    ) -> Container | None:
        """Start a new container for ``tenant`` in ``egress``; None at the container limit.

        ``claim`` runs once the container has its record and fleet slot, before the runtime
        starts it (a sticky session binds to it there, so that two instances never start a
        container each for one session). If it fails, the container is withdrawn unstarted
        and ``Conflict`` raised, unless other work was put on it meanwhile."""
        now = self._now()
        container = Container(
            id=self._new_id(),
            tenant_id=tenant.id,
            egress=egress,
            capacity=tenant.quotas.parallel_per_container,
            started_at=now,
            idle_since=now,
        )
        created = await self._records.containers.create(tenant.id, container.id, container)
        claimed = await self._claim_fleet_slot(tenant, container.id)
        if not claimed:
            await self._records.containers.discard(tenant.id, container.id)
            if claimed is None:  # contention, not the limit: the caller decides again
                raise Conflict(f"fleet of tenant {tenant.id}: too much contention")
            return None
        if claim is not None and not await claim(container):
            try:  # unchanged since created: nobody else uses it, withdraw it unstarted
                await self._records.containers.delete(created)
            except Conflict:
                pass  # another crawl was reserved on it meanwhile: start it for that one
            else:
                await self.release_fleet_slot(tenant.id, container.id)
                raise Conflict(f"container {container.id} is not needed after all")
        env = {
            **self._engine_env,
            "SKYCRAWL_CONTAINER_ID": container.id,
            "SKYCRAWL_TENANT_ID": tenant.id,
            "SKYCRAWL_EGRESS_NAME": egress.name,
            "SKYCRAWL_CAPACITY": str(container.capacity),
            "SKYCRAWL_INBOX_QUEUE": self._settings.inbox_queue,
            "SKYCRAWL_DISPATCH_TOPIC": self._settings.dispatch_topic,
            "SKYCRAWL_HEARTBEAT_INTERVAL_S": str(self._settings.heartbeat_interval_s),
            "SKYCRAWL_CHECKPOINT_INTERVAL_S": str(self._settings.checkpoint_interval_s),
        }
        if egress.proxy_url:
            env["SKYCRAWL_PROXY_URL"] = egress.proxy_url
        if self._settings.allow_cidrs:
            env["SKYCRAWL_ALLOW_CIDRS"] = ",".join(self._settings.allow_cidrs)
        spec = ContainerSpec(
            container_id=container.id,
            tenant_id=tenant.id,
            egress=egress,
            env=env,
            image=self._settings.engine_image,
        )
        try:
            await self._ports.runtime.start_container(spec=spec)
        except Exception as exc:
            await self.retire(container, ContainerState.failed, f"start failed: {exc}")
            raise Retryable(f"could not start a container: {exc}") from exc
        log.info("started container %s for tenant %s in %s", container.id, tenant.id, egress.name)
        return container

    async def _claim_fleet_slot(self, tenant: Tenant, container_id: str) -> bool | None:
        """True if claimed, False at the limit, None if every attempt lost a race."""
        fleets = self._records.fleets
        limit = tenant.quotas.max_containers
        for _ in range(20):
            current = await fleets.get(tenant.id, "fleet")
            if current is None:
                try:
                    await fleets.create(tenant.id, "fleet", Fleet(tenant_id=tenant.id))
                except Conflict:  # someone else created it; read again
                    continue
                continue
            if len(current.value.containers) >= limit:
                return False
            new = Fleet(tenant_id=tenant.id, containers=(*current.value.containers, container_id))
            try:
                await fleets.replace(current, new)
            except Conflict:  # lost the race; read again
                continue
            return True
        return None

    async def release_fleet_slot(self, tenant_id: str, container_id: str) -> None:
        def drop(fleet: Fleet) -> Fleet | None:
            if container_id not in fleet.containers:
                return None
            rest = tuple(c for c in fleet.containers if c != container_id)
            return fleet.model_copy(update={"containers": rest})

        await self._records.fleets.mutate(tenant_id, "fleet", drop)

    # ------------------------------------------------------------------ slots

    async def reserve(
        self, tenant_id: str, container_id: str, crawl_id: str, *, force: bool = False
    ) -> Container | None:
        """Add ``crawl_id`` to the container's work if it still accepts it (``force``: even
        when full, for sticky sessions). Returns the container, or None if it refused."""
        accepted: list[bool] = []

        def add(c: Container) -> Container | None:
            accepted.clear()  # a retry after a lost compare-and-set decides afresh
            if crawl_id in c.in_flight:
                accepted.append(True)
                return None
            if c.state not in (ContainerState.ready, ContainerState.starting):
                return None
            if c.free_slots <= 0 and not force:
                return None
            accepted.append(True)
            return c.model_copy(
                update={
                    "in_flight": (*c.in_flight, crawl_id),
                    "generation": c.generation + 1,
                    "idle_since": None,
                }
            )

        container, _ = await self._records.containers.mutate(tenant_id, container_id, add)
        return container if accepted and accepted[-1] else None

    async def release(self, tenant_id: str, container_id: str, crawl_id: str) -> Container | None:
        """Remove ``crawl_id`` from the container's work and arm a new kill timer."""
        now = self._now()

        def drop(c: Container) -> Container | None:
            if crawl_id not in c.in_flight:
                return None
            rest = tuple(x for x in c.in_flight if x != crawl_id)
            return c.model_copy(
                update={
                    "in_flight": rest,
                    "generation": c.generation + 1,
                    "idle_since": now if not rest else None,
                }
            )

        container, changed = await self._records.containers.mutate(tenant_id, container_id, drop)
        if container is not None and changed:
            await self.schedule_kill(container)
        return container

    # ------------------------------------------------------------------ kill timers

    async def schedule_kill(self, container: Container) -> None:
        """Arm a kill timer for ``now + idle_ttl`` at the container's current generation."""
        fire_at = self._now() + timedelta(seconds=self._settings.idle_ttl_s)
        timer = KillTimer(
            tenant_id=container.tenant_id,
            container_id=container.id,
            generation=container.generation,
            fire_at=fire_at,
        )
        await self._schedule_timer(timer)

    async def _schedule_timer(self, timer: KillTimer) -> None:
        scheduler = self._ports.scheduler
        longest = timedelta(seconds=scheduler.capabilities.max_delay_s)
        deliver_at = min(timer.fire_at, self._now() + longest)
        await scheduler.schedule(
            queue=self._settings.inbox_queue, message=encode(timer), deliver_at=deliver_at
        )

    async def on_kill_timer(self, timer: KillTimer) -> bool:
        """Stop the container if still idle at the timer's generation. True if stopped."""
        if self._now() < timer.fire_at:
            await self._schedule_timer(timer)  # the scheduler's native delay was shorter: chain
            return False
        current = await self._records.containers.get(timer.tenant_id, timer.container_id)
        if current is None or current.value.generation != timer.generation:
            return False
        return await self.stop_idle(current.value, generation=timer.generation)

    async def stop_idle(self, container: Container, *, generation: int | None = None) -> bool:
        """Drain then stop an idle ready container; refuses if it has work or moved on."""

        def drain(c: Container) -> Container | None:
            if c.state is not ContainerState.ready or c.in_flight:
                return None
            if generation is not None and c.generation != generation:
                return None
            return c.model_copy(
                update={"state": ContainerState.draining, "generation": c.generation + 1}
            )

        drained, changed = await self._records.containers.mutate(
            container.tenant_id, container.id, drain
        )
        if drained is None or not changed:
            return False
        await self.retire(drained, ContainerState.stopped, "idle")
        return True

    # ------------------------------------------------------------------ stop / reap

    async def retire(self, container: Container, state: ContainerState, reason: str) -> Container:
        """Stop the process, remove its subscription, free its fleet slot and sessions, and
        record ``state``. Returns the final record (``in_flight`` lists orphaned work)."""
        runtime, bus = self._ports.runtime, self._ports.bus
        try:
            await runtime.stop_container(
                container_id=container.id, grace_s=self._settings.stop_grace_s
            )
        except Exception as exc:  # the runtime may have lost it already; housekeeping retries
            log.warning("stopping container %s failed: %s", container.id, exc)
        await bus.delete_subscription(
            topic=self._settings.dispatch_topic, name=subscription_name(container.id)
        )
        now = self._now()

        def finish(c: Container) -> Container | None:
            if not c.state.live:
                return None
            return c.model_copy(
                update={"state": state, "stopped_at": now, "reason": reason, "idle_since": None}
            )

        final, _ = await self._records.containers.mutate(container.tenant_id, container.id, finish)
        await self.release_fleet_slot(container.tenant_id, container.id)
        await self._unbind_sessions(container.tenant_id, container.id)
        log.info("container %s %s: %s", container.id, state.value, reason)
        return final or container

    async def _unbind_sessions(self, tenant_id: str, container_id: str) -> None:
        for binding in await self._records.sessions.query(tenant_id):
            if binding.value.container_id == container_id:
                try:
                    await self._records.sessions.delete(binding)
                except Conflict:  # rebound or removed meanwhile
                    continue
