"""Egress health and session routes in the StateStore, for ``core.egress_scoring``.

=================  ==========  ============  ==========================================
table              partition   key           holds
=================  ==========  ============  ==========================================
egress_health      "fleet"     egress name   ``EgressHealthRecord``: each proxy's health,
                                             fleet-wide (every tenant's heartbeats)
session_routes     tenant id   session key   ``SessionRoute``: the egress and proxy a
                                             session leaves from, kept across containers
=================  ==========  ============  ==========================================

A heartbeat folds its per-proxy numbers into the egress's record (a compare-and-set); the
write that scores a proxy out carries, in its outbox, a ``ProxyCooldown`` timer of
``proxy_cooldown_s`` -- a relative delay, measured by the scheduler, so no instance's clock
decides when a proxy comes back. When the timer arrives and the proxy is still out at the
same epoch, it is back on probation with fresh numbers; a duplicate timer changes nothing.

A session's route is written once, when the session is first placed, and outlives its
containers: the next container of the session gets the same egress and proxy (so the same
IP), and while that proxy is out the session waits rather than move. Routes go with the
tenant's teardown.

Limit: every heartbeat with traffic is one compare-and-set on its egress's record, so a
very large fleet on one egress contends on that record (the mutate loop retries).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from datetime import datetime

from core.conductor.outbox import Outbox, schedule, with_entries
from core.egress_scoring import (
    HEALTH_PARTITION,
    HEALTH_TABLE,
    EgressHealthRecord,
    ProxyHealth,
    Sample,
    ScoringPolicy,
    StickyRoute,
    fold,
    judge,
    proxies_of,
    recovered,
)
from core.errors import Conflict
from core.messages import ProxyCooldown, ProxyStats
from core.models import Egress, Frozen
from core.ports.state_store import StateStore
from core.records import Table
from core.settings import SkycrawlSettings

log = logging.getLogger("skycrawl.conductor")

PARTITION = HEALTH_PARTITION


class SessionRoute(Frozen):
    """Where a session leaves from, whichever container holds it."""

    tenant_id: str
    session: str
    egress: str
    proxy: str
    bound_at: datetime


class EgressHealthKeeper:
    def __init__(
        self,
        *,
        state: StateStore,
        settings: SkycrawlSettings,
        outbox: Outbox,
        policy: ScoringPolicy | None = None,
    ) -> None:
        self.health = Table(state, HEALTH_TABLE, EgressHealthRecord)
        self.routes = Table(state, "session_routes", SessionRoute)
        self._settings = settings
        self._outbox = outbox
        self.policy = policy or ScoringPolicy()

    async def snapshot(self) -> dict[str, EgressHealthRecord]:
        """Every egress's health record, by egress name."""
        return {v.value.egress: v.value for v in await self.health.query(PARTITION)}

    async def observe(self, egress: Egress, stats: Mapping[str, ProxyStats]) -> None:
        """Fold one (fresh) heartbeat's per-proxy numbers into the egress's record."""
        known = proxies_of(egress)
        samples = {
            pid: Sample(s.requests, s.errors, s.bans, s.mean_latency_ms)
            for pid, s in stats.items()
            if pid in known and s.requests > 0
        }
        if not samples:
            return
        await self._ensure(egress.name)

        def change(record: EgressHealthRecord) -> EgressHealthRecord | None:
            proxies = dict(record.proxies)
            timers = []
            for pid, sample in samples.items():
                current = proxies.get(pid, ProxyHealth())
                if current.out:
                    continue  # out: nothing new is sent through it until it is back
                new = fold(current, sample, self.policy)
                reason = judge(new, self.policy)
                if reason is not None:
                    new = new.model_copy(
                        update={"out": True, "reason": reason, "epoch": new.epoch + 1}
                    )
                    due = ProxyCooldown(egress=egress.name, proxy=pid, epoch=new.epoch)
                    timers.append(
                        schedule(self._settings.inbox_queue, due, self._settings.proxy_cooldown_s)
                    )
                    log.warning("egress %s proxy %s scored out: %s", egress.name, pid, reason)
                proxies[pid] = new
            return with_entries(record.model_copy(update={"proxies": proxies}), *timers)

        await self._outbox.mutate(self.health, PARTITION, egress.name, change)

    async def on_cooldown(self, msg: ProxyCooldown) -> bool:
        """Bring a proxy back after its cool-down; True if it came back."""

        def back(record: EgressHealthRecord) -> EgressHealthRecord | None:
            current = record.proxies.get(msg.proxy)
            if current is None or not current.out or current.epoch != msg.epoch:
                return None  # back already, or out again since: a stale timer
            return record.model_copy(
                update={"proxies": {**record.proxies, msg.proxy: recovered(current)}}
            )

        _, changed = await self.health.mutate(PARTITION, msg.egress, back)
        if changed:
            log.info("egress %s proxy %s is back after its cool-down", msg.egress, msg.proxy)
        return changed

    async def relay(self) -> None:
        """Relay timers a crashed instance left on the records (housekeeping)."""
        for found in await self.health.query(PARTITION):
            if found.value.outbox:
                await self._outbox.relay(self.health, PARTITION, found.value.egress, found.value)

    async def _ensure(self, name: str) -> None:
        if await self.health.get(PARTITION, name) is None:
            with contextlib.suppress(Conflict):  # another instance made it
                await self.health.create(PARTITION, name, EgressHealthRecord(egress=name))

    # ------------------------------------------------------------------ session routes

    async def route_of(self, tenant_id: str, session: str) -> StickyRoute | None:
        found = await self.routes.get(tenant_id, session)
        if found is None:
            return None
        return StickyRoute(session=session, egress=found.value.egress, proxy=found.value.proxy)

    async def remember(self, route: SessionRoute) -> None:
        """Store a session's first route (the first one written wins)."""
        with contextlib.suppress(Conflict):
            await self.routes.create(route.tenant_id, route.session, route)

    async def forget_tenant(self, tenant_id: str) -> None:
        for found in await self.routes.query(tenant_id):
            with contextlib.suppress(Conflict):
                await self.routes.delete(found)
