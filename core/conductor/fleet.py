"""Container lifecycle: start, reserve and release slots, timers, drain, stop.

Every change is a compare-and-set on the container record, and the messages a change implies
ride in the same write (``core.conductor.outbox``), so several conductor instances can run at
once and a crash between two writes strands nothing:

* the tenant's container limit is a CAS on the ``fleets`` record (a list of live GUIDs);
* a slot is reserved by a CAS that re-checks state and free slots on the latest version;
* a change that leaves a container idle bumps its ``generation`` and arms a kill timer for
  the keep-alive the ``IdlePolicy`` chose (``idle_policy.py``; stored on the record as
  ``keep_alive_s``; a relative delay, measured by the scheduler, chained through the idle
  histogram's edges when the policy learns); when it fires, the container is drained only
  if it is still idle at that generation (stale timers change nothing);
* draining sends ``DrainContainer`` down the container's own subscription (the engine
  checkpoints, says ``ContainerExited`` and exits) and arms ``StopDue``; only then is the
  runtime asked to stop it — some runtimes stop with SIGKILL and no SIGTERM;
* a stop is confirmed before the record says ``stopped`` and the fleet slot is freed: a stop
  that failed leaves the container live, holding its slot, and housekeeping tries again;
* liveness is a watchdog timer per container: reaped if its ``beats`` count did not move
  during ``heartbeat_timeout_s`` (or it is still starting after ``startup_timeout_s``), as
  counted by the scheduler — never a difference between two instances' clocks.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from core import metering, telemetry
from core.conductor.idle_gaps import IdleGaps
from core.conductor.idle_policy import bin_of, next_edge, policy_from
from core.conductor.outbox import Outbox, publish, schedule, with_entries
from core.errors import Conflict, Retryable
from core.layout import subscription_name, tenant_topic
from core.messages import DrainContainer, KillTimer, StopDue, Watchdog
from core.models import Container, ContainerState, Egress, OutboxEntry, Tenant
from core.ports import ContainerSpec, Ports, RunState
from core.records import Fleet, Records, Versioned
from core.settings import SkycrawlSettings

log = logging.getLogger("skycrawl.conductor")

#: The runtime must fail to know a container this many watchdog checks in a row before it is
#: taken as lost (a runtime may not list a container it was asked to start a moment ago).
RUNTIME_UNKNOWN_LIMIT = 2

#: The reason of a container the runtime refused to start: it never ran, so it is not billed.
START_FAILED = "start failed"

#: Watchdog checks per ``heartbeat_timeout_s``: a container is reaped after this many checks
#: in a row without a heartbeat (silent for 1 to 1 + 1/N timeouts).
WATCHDOG_CHECKS = 4


class ContainerFleet:
    def __init__(
        self,
        *,
        ports: Ports,
        records: Records,
        settings: SkycrawlSettings,
        engine_env: Mapping[str, str],
        new_id: Callable[[], str],
        outbox: Outbox,
    ) -> None:
        self._ports = ports
        self._records = records
        self._settings = settings
        self._engine_env = dict(engine_env)
        self._new_id = new_id
        self._outbox = outbox
        self.idle = IdleGaps(
            records=records,
            policy=policy_from(settings),
            egresses=list(settings.egresses),
            typical_start_s=lambda egress: ports.runtime_for(egress).capabilities.typical_start_s,
        )

    # ------------------------------------------------------------------ timers as entries

    def kill_timer(
        self, container: Container, delay_s: float | None = None, elapsed_s: float = 0.0
    ) -> OutboxEntry:
        """A kill timer for ``container`` at its current generation, its keep-alive away (or
        ``delay_s``, the rest of a chain at idle time ``elapsed_s``)."""
        keep = container.keep_alive_s
        total = (
            (self._settings.idle_ttl_s if keep is None else keep) if delay_s is None else delay_s
        )
        step = min(total, self._ports.scheduler.capabilities.max_delay_s)
        edge = next_edge(elapsed_s) if self.idle.policy.measures else None
        if edge is not None:  # one link per histogram edge: the gap is counted, not clocked
            step = min(step, edge - elapsed_s)
        timer = KillTimer(
            tenant_id=container.tenant_id,
            container_id=container.id,
            generation=container.generation,
            remaining_s=total - step,
            elapsed_s=elapsed_s + step,
        )
        return schedule(self._settings.inbox_queue, timer, step)

    def _watchdog(
        self, c: Container, *, startup: bool, misses: int = 0, unknown: int = 0
    ) -> OutboxEntry:
        s = self._settings
        dog = Watchdog(
            tenant_id=c.tenant_id,
            container_id=c.id,
            seq=c.watch_seq,
            beats=c.beats,
            startup=startup,
            misses=misses,
            runtime_unknown=unknown,
        )
        delay = s.startup_timeout_s if startup else s.heartbeat_timeout_s / WATCHDOG_CHECKS
        return schedule(s.inbox_queue, dog, delay)

    def arm_liveness(self, c: Container) -> Container:
        """``c`` with a new watchdog chain (the heartbeat one) in its outbox."""
        armed = c.model_copy(update={"watch_seq": c.watch_seq + 1})
        return with_entries(armed, self._watchdog(armed, startup=False))

    # ------------------------------------------------------------------ start

    async def start(
        self,
        tenant: Tenant,
        egress: Egress,
        *,
        claim: Callable[[Container], Awaitable[bool]] | None = None,
        prewarm_keep_s: float | None = None,
        expect_fleet: tuple[str, ...] | None = None,
    ) -> Container | None:
        """Start a new container for ``tenant`` in ``egress``; None at the container limit.
        ``prewarm_keep_s``: started ahead of predicted work, kept that long without any.
        ``expect_fleet``: the fleet's slots the caller chose ``egress`` on; if they changed
        meanwhile nothing starts and ``Conflict`` is raised, so the caller chooses again.

        ``claim`` runs once the container has its record and fleet slot, before the runtime
        starts it (a sticky session binds to it there, so that two instances never start a
        container each for one session). If it fails, the container is withdrawn unstarted
        and ``Conflict`` raised, unless other work was put on it meanwhile."""
        prewarm = prewarm_keep_s is not None
        with telemetry.span(
            "container.start", tenant_id=tenant.id, egress=egress.name, prewarm=prewarm
        ) as traceparent:
            return await self._start(
                tenant, egress, claim, prewarm_keep_s, expect_fleet, traceparent
            )

    async def _start(
        self,
        tenant: Tenant,
        egress: Egress,
        claim: Callable[[Container], Awaitable[bool]] | None,
        prewarm_keep_s: float | None,
        expect_fleet: tuple[str, ...] | None,
        traceparent: str | None,
    ) -> Container | None:
        now = self._ports.clock.now()
        container = Container(
            id=self._new_id(),
            tenant_id=tenant.id,
            egress=egress,
            capacity=tenant.quotas.parallel_per_container,
            started_at=now,
            idle_since=now,
            watch_seq=1,
            prewarm=prewarm_keep_s is not None,
            keep_alive_s=prewarm_keep_s,
            traceparent=traceparent,
        )
        telemetry.set_attributes(container_id=container.id)
        # the startup watchdog is stored with the record: whatever happens after this write,
        # a container that never says ready is reaped
        container = with_entries(
            container, self._watchdog(container, startup=True), metering.cold_start(container)
        )
        created = await self._records.containers.create(tenant.id, container.id, container)
        claimed = await self._claim_fleet_slot(tenant, container.id, expect_fleet)
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
        await self._outbox.relay(self._records.containers, tenant.id, container.id, container)
        try:
            runtime = self._ports.runtime_for(egress)
            await runtime.start_container(spec=self._spec(tenant, egress, container))
        except Exception as exc:
            log.warning("starting container %s failed: %s", container.id, exc)
            await self.request_stop(container, ContainerState.failed, f"{START_FAILED}: {exc}")
            with contextlib.suppress(Retryable):  # housekeeping retries a stop that failed
                await self.finalize(container)
            raise Retryable(f"could not start a container: {exc}") from exc
        log.info("started container %s for tenant %s in %s", container.id, tenant.id, egress.name)
        telemetry.count_start(tenant.id, egress.name)
        if prewarm_keep_s is None:  # work came: the tenant's open idle gap (if any) ends
            await self.idle.close(tenant.id, egress)
        return container

    def _spec(self, tenant: Tenant, egress: Egress, container: Container) -> ContainerSpec:
        env = {
            **self._engine_env,
            "SKYCRAWL_CONTAINER_ID": container.id,
            "SKYCRAWL_TENANT_ID": tenant.id,
            "SKYCRAWL_EGRESS_NAME": egress.name,
            "SKYCRAWL_CAPACITY": str(container.capacity),
            "SKYCRAWL_INBOX_QUEUE": self._settings.inbox_queue,
            "SKYCRAWL_DISPATCH_TOPIC": tenant_topic(self._settings.dispatch_topic, tenant.id),
            "SKYCRAWL_HEARTBEAT_INTERVAL_S": str(self._settings.heartbeat_interval_s),
            "SKYCRAWL_CHECKPOINT_INTERVAL_S": str(self._settings.checkpoint_interval_s),
        }
        if egress.proxy_pool:  # the pool; each RunCrawl names its proxy by id
            env["SKYCRAWL_PROXY_URL"] = egress.proxy_pool[0]
            env["SKYCRAWL_PROXY_URLS"] = json.dumps(list(egress.proxy_pool))
        if self._settings.allow_cidrs:
            env["SKYCRAWL_ALLOW_CIDRS"] = ",".join(self._settings.allow_cidrs)
        if self._settings.handlers:
            env["SKYCRAWL_HANDLERS"] = self._settings.handlers
        return ContainerSpec(
            container_id=container.id,
            tenant_id=tenant.id,
            egress=egress,
            env=env,
            image=self._settings.engine_image,
            resources=dict(tenant.resources),
        )

    async def _claim_fleet_slot(
        self, tenant: Tenant, container_id: str, expect: tuple[str, ...] | None = None
    ) -> bool | None:
        """True if claimed, False at the limit, None if every attempt lost a race (or, with
        ``expect``, if the fleet's slots are no longer those)."""
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
            if expect is not None and current.value.containers != expect:
                return None
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
        self,
        tenant_id: str,
        container_id: str,
        crawl_id: str,
        *,
        force: bool = False,
        current: Versioned[Container] | None = None,
    ) -> Container | None:
        """Add ``crawl_id`` to the container's work if it still accepts it (``force``: even
        when full, for sticky sessions). Returns the container, or None if it refused.
        ``current``: the container as the decision read it (tried first, without a read)."""
        container, taken = await self.reserve_many(
            tenant_id, container_id, [crawl_id], force=force, current=current
        )
        return container if taken else None

    async def reserve_many(
        self,
        tenant_id: str,
        container_id: str,
        crawl_ids: list[str],
        *,
        force: bool = False,
        current: Versioned[Container] | None = None,
    ) -> tuple[Container | None, set[str]]:
        """``reserve`` for several crawls in one compare-and-set: as many of ``crawl_ids``
        as the container has free slots for, in order (all with ``force``). Returns the
        container as stored and the ids it holds now (those it already held included)."""
        accepted: set[str] = set()
        gap: list[tuple[bool, int]] = []  # (pre-warmed, edges passed) of the idle gap it ends

        def add(c: Container) -> Container | None:
            accepted.clear()  # a retry after a lost compare-and-set decides afresh
            gap.clear()
            accepted.update(i for i in crawl_ids if i in c.in_flight)
            if c.state not in (ContainerState.ready, ContainerState.starting):
                return None
            new = [i for i in dict.fromkeys(crawl_ids) if i not in c.in_flight]
            if not force:
                new = new[: max(c.free_slots, 0)]
            if not new:
                return None
            accepted.update(new)
            if c.state is ContainerState.ready and not c.in_flight:
                gap.append((c.prewarm, c.idle_bin))
            return c.model_copy(
                update={
                    "in_flight": (*c.in_flight, *new),
                    "generation": c.generation + 1,
                    "idle_since": None,
                    "idle_bin": 0,
                    "prewarm": False,
                }
            )

        container, changed = await self._outbox.mutate(
            self._records.containers, tenant_id, container_id, add, current=current
        )
        if changed and container is not None and gap:
            prewarmed, idle_bin = gap[-1]
            if prewarmed:  # the predicted work came: the tenant's gap ends
                await self.idle.close(tenant_id, container.egress)
            else:
                await self.idle.observe(container, idle_bin)
        return container, set(accepted)

    async def release(
        self,
        tenant_id: str,
        container_id: str,
        crawl_id: str,
        *,
        also: tuple[OutboxEntry, ...] = (),
    ) -> Container | None:
        """Remove ``crawl_id`` from the container's work (with the messages in ``also``, in
        the same write); a container left idle gets a kill timer at its new generation."""
        now = self._ports.clock.now()
        stats = await self.idle.stats(tenant_id)

        def drop(c: Container) -> Container | None:
            if crawl_id not in c.in_flight:
                return None
            rest = tuple(x for x in c.in_flight if x != crawl_id)
            new = c.model_copy(
                update={
                    "in_flight": rest,
                    "generation": c.generation + 1,
                    "idle_since": now if not rest else None,
                    "unconfirmed": {k: v for k, v in c.unconfirmed.items() if k != crawl_id},
                }
            )
            live = new.state in (ContainerState.ready, ContainerState.starting)
            if not rest and live:
                new = self.idle.went_idle(new, stats)
            timers = (self.kill_timer(new),) if not rest and live else ()
            return with_entries(new, *also, *timers) if live else new

        container, _ = await self._outbox.mutate(
            self._records.containers, tenant_id, container_id, drop
        )
        return container

    # ------------------------------------------------------------------ idle: kill timers, drain

    async def on_kill_timer(self, timer: KillTimer) -> bool:
        """Drain the container if still idle at the timer's generation. True if drained."""
        current = await self._records.containers.get(timer.tenant_id, timer.container_id)
        if current is None or current.value.generation != timer.generation:
            return False  # it got work (or was stopped) since: a stale timer
        if timer.remaining_s > 0 and self.idle.policy.measures:  # a link: count the edge
            passed = bin_of(timer.elapsed_s)

            def count(c: Container) -> Container | None:
                if c.generation != timer.generation:
                    return None
                counted = c.model_copy(update={"idle_bin": max(c.idle_bin, passed)})
                return with_entries(counted, self.kill_timer(c, timer.remaining_s, timer.elapsed_s))

            await self._outbox.mutate(
                self._records.containers, timer.tenant_id, timer.container_id, count
            )
            return False
        if timer.remaining_s > 0:  # the scheduler's native delay was shorter: chain the rest
            entry = self.kill_timer(current.value, timer.remaining_s, timer.elapsed_s)
            await self._outbox.deliver(entry)
            return False
        with telemetry.span(
            "container.kill",
            current.value.traceparent,
            tenant_id=timer.tenant_id,
            container_id=timer.container_id,
            generation=timer.generation,
        ):
            drained = await self.stop_idle(current.value, generation=timer.generation)
            telemetry.set_attributes(drained=drained)
            return drained

    async def stop_idle(self, container: Container, *, generation: int | None = None) -> bool:
        """Drain an idle ready container: refuses if it has work or moved on. True if it
        started draining (the stop follows on ``ContainerExited`` or ``StopDue``)."""
        s = self._settings

        def drain(c: Container) -> Container | None:
            if c.state is not ContainerState.ready or c.in_flight:
                return None
            if generation is not None and c.generation != generation:
                return None
            new = c.model_copy(
                update={
                    "state": ContainerState.draining,
                    "generation": c.generation + 1,
                    "reason": "idle",
                }
            )
            told = DrainContainer(container_id=c.id, tenant_id=c.tenant_id)
            due = StopDue(tenant_id=c.tenant_id, container_id=c.id, generation=new.generation)
            return with_entries(
                new,
                publish(tenant_topic(s.dispatch_topic, c.tenant_id), told),
                schedule(s.inbox_queue, due, s.drain_timeout_s),
            )

        drained, changed = await self._outbox.mutate(
            self._records.containers, container.tenant_id, container.id, drain
        )
        return drained is not None and changed

    # ------------------------------------------------------------------ liveness

    async def on_watchdog(self, dog: Watchdog) -> str | None:
        """Check one container's liveness; the reason to reap it, or None (re-armed)."""
        found = await self._records.containers.get(dog.tenant_id, dog.container_id)
        c = None if found is None else found.value
        if c is None or not c.state.live or c.watch_seq != dog.seq:
            return None  # gone, or a stale chain (a duplicate): nothing to do
        if c.state is ContainerState.draining or c.stop_requested:
            return None  # its stop is under way; StopDue and housekeeping see it through
        s = self._settings
        if dog.startup:
            if c.state is ContainerState.starting:
                return f"not ready within {s.startup_timeout_s:g}s"
            return None
        misses = dog.misses + 1 if c.beats == dog.beats else 0
        if misses >= WATCHDOG_CHECKS:
            return f"no heartbeat for {s.heartbeat_timeout_s:g}s"
        unknown = 0
        try:
            status = await self._ports.runtime_for(c.egress).describe(
                container_id=c.id, egress=c.egress
            )
        except Exception as exc:  # the runtime's API is down: judge by heartbeats alone
            log.warning("describe %s failed: %s", c.id, exc)
        else:
            if status.state is RunState.exited:
                return f"exited with code {status.exit_code}"
            if status.state is RunState.unknown:
                unknown = dog.runtime_unknown + 1
                if unknown >= RUNTIME_UNKNOWN_LIMIT:
                    return "lost by the runtime"

        def rearm(current: Container) -> Container | None:
            if current.watch_seq != dog.seq or not current.state.live:
                return None
            armed = current.model_copy(update={"watch_seq": current.watch_seq + 1})
            entry = self._watchdog(armed, startup=False, misses=misses, unknown=unknown)
            return with_entries(armed, entry)

        await self._outbox.mutate(self._records.containers, c.tenant_id, c.id, rearm)
        return None

    # ------------------------------------------------------------------ stop

    async def request_stop(
        self, container: Container, final: ContainerState, reason: str
    ) -> Container | None:
        """Mark a live container to be stopped now (it takes no more work), to end as
        ``final``; returns the record, or None if it is no longer live."""

        def mark(c: Container) -> Container | None:
            if not c.state.live:
                return None
            if c.stop_requested:
                return None
            return c.model_copy(
                update={
                    "state": ContainerState.draining,
                    "stop_requested": True,
                    "final_state": final,
                    "reason": reason if c.final_state is None else c.reason,
                    "generation": c.generation + 1,
                }
            )

        marked, _ = await self._records.containers.mutate(container.tenant_id, container.id, mark)
        return marked if marked is not None and marked.state.live else None

    async def finalize(self, container: Container) -> Container | None:
        """Stop the process, remove its subscription, then record the final state and free
        its fleet slot and sessions. Returns the final record (``in_flight`` lists orphaned
        work) if this call made the change, None if it was done already. A failed stop
        raises ``Retryable`` and leaves the container live, holding its slot."""
        fresh = await self._records.containers.get(container.tenant_id, container.id)
        if fresh is not None and fresh.value.state.live and not fresh.value.stop_requested:
            return None  # not marked for stopping (a stale caller)
        if fresh is None or not fresh.value.state.live:  # done already: only tidy up
            await self.release_fleet_slot(container.tenant_id, container.id)
            await self._unbind_sessions(container.tenant_id, container.id)
            return None
        with telemetry.span(
            "container.stop",
            fresh.value.traceparent,
            kind="client",
            tenant_id=container.tenant_id,
            container_id=container.id,
            reason=fresh.value.reason,
        ):
            try:
                await self._ports.runtime_for(container.egress).stop_container(
                    container_id=container.id,
                    egress=container.egress,
                    grace_s=self._settings.stop_grace_s,
                )
            except Exception as exc:
                log.warning("stopping container %s failed: %s", container.id, exc)
                raise Retryable(f"stopping container {container.id} failed: {exc}") from exc
        await self._ports.bus.delete_subscription(
            topic=tenant_topic(self._settings.dispatch_topic, container.tenant_id),
            name=subscription_name(container.id),
        )
        now = self._ports.clock.now()

        def finish(c: Container) -> Container | None:
            if not c.state.live or not c.stop_requested:
                return None
            never_ran = (c.reason or "").startswith(START_FAILED)
            return c.model_copy(  # its timers are moot; its bill is stored with the change
                update={
                    "state": c.final_state or ContainerState.stopped,
                    "stopped_at": now,
                    "idle_since": None,
                    "outbox": () if never_ran else metering.container_time(c, now),
                }
            )

        final, changed = await self._outbox.mutate(
            self._records.containers, container.tenant_id, container.id, finish
        )
        if final is None or final.state.live:
            return None
        await self.release_fleet_slot(container.tenant_id, container.id)
        await self._unbind_sessions(container.tenant_id, container.id)
        if changed and final.state is ContainerState.stopped and final.reason == "idle":
            await self.idle.open(final)
        if changed:
            log.info("container %s %s: %s", container.id, final.state.value, final.reason)
        return final if changed else None

    async def _unbind_sessions(self, tenant_id: str, container_id: str) -> None:
        for binding in await self._records.sessions.query(tenant_id):
            if binding.value.container_id == container_id:
                try:
                    await self._records.sessions.delete(binding)
                except Conflict:  # rebound or removed meanwhile
                    continue
