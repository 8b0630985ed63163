"""Housekeeping, run by a timer every ``timer_period_s``: the safety net under the events.

It measures no time between two instances' clocks — liveness is the watchdog timers' job
(``fleet.py``). What it does, per tenant:

* evaluate the tenant's budget (``budget_guard.py``): warn once per threshold, at the
  limit pause its pending and running crawls (asking again until each engine answers), and
  below it (raised, removed, a new month) resume the crawls it paused;
* relay outbox entries a crashed instance left on container and crawl records;
* finish stops that failed (``stop_requested``): retry the runtime's stop until it confirms,
  and only then free the slot and take the work back;
* reconcile each live container's work with the crawl records: release slots of crawls
  cancelled, finished or placed elsewhere (a cancel that came while a slot was reserved),
  commit crawls reserved on a ready container but never dispatched;
* free fleet slots held by containers that are no longer live;
* requeue crawls still dispatched to a container that is no longer live; put pending crawls
  missing from the backlog back in it;
* place backlogged crawls;
* count one period of the tenant's open idle gap, and pre-warm a container when the
  adaptive idle policy predicts work (``idle_gaps.py``);
* measure the tenant's backlog and fleet size (``core.telemetry``'s gauges, when it is on);
* forget records of containers stopped more than ``container_record_ttl_s`` ago, and purge
  crawls (record and blobs) finished more than the tenant's ``retention_days`` ago.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from core import telemetry
from core.conductor.conductor import Conductor
from core.errors import Conflict
from core.layout import crawl_prefix
from core.models import Container, ContainerState, Tenant, TenantState
from core.records import Fleet, listing_key

log = logging.getLogger("skycrawl.housekeeping")

#: Finished crawls purged per tenant per run (the rest wait for the next run).
PURGE_BATCH = 100
#: The backlog gauge counts at most this many pending crawls per tenant and run.
BACKLOG_COUNTED = 10_000


@dataclass
class HousekeepingReport:
    reaped: list[str] = field(default_factory=list)  # stops finished (failed ones retried)
    stopped_idle: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)  # records of long-stopped containers
    purged_crawls: list[str] = field(default_factory=list)
    placed: int = 0
    prewarmed: list[str] = field(default_factory=list)  # started ahead of predicted work


class Housekeeper:
    def __init__(self, conductor: Conductor) -> None:
        self._c = conductor
        self._settings = conductor.settings

    async def run(self) -> HousekeepingReport:
        report = HousekeepingReport()
        try:  # cool-down timers a crashed instance left on an egress's health record
            await self._c.health.relay()
        except Exception:
            log.exception("relaying egress health timers failed; the next run retries")
        for tenant in await self._c.records.tenants.query("tenants"):
            tenant_id = tenant.value.id
            try:  # a fault (a container that cannot stop) must not hold up other tenants
                await self._c.budget.check(tenant_id)  # at the limit: its crawls stop
                for versioned in await self._c.records.containers.query(tenant_id):
                    await self._check(versioned.value, report)
                await self._reconcile_fleet(tenant_id)
                await self._c.requeue_orphans(tenant_id)
                report.placed += await self._c.place_backlog(tenant_id)
                await self._idle(tenant.value, report)
                await self._purge_crawls(tenant.value, report)
                if telemetry.enabled():
                    await self._observe(tenant_id)
            except Exception:
                log.exception("housekeeping of tenant %s failed; the next run retries", tenant_id)
        return report

    async def _observe(self, tenant_id: str) -> None:
        """Measure the tenant's backlog (counted up to ``BACKLOG_COUNTED``) and fleet size."""
        records = self._c.records
        backlog = await records.backlog.query(tenant_id, limit=BACKLOG_COUNTED)
        telemetry.record_backlog(tenant_id, len(backlog))
        telemetry.record_fleet(tenant_id, len(await records.live_containers(tenant_id)))

    async def _idle(self, tenant: Tenant, report: HousekeepingReport) -> None:
        """Count one period of the tenant's open idle gap; pre-warm if the policy says so,
        as many containers as stopped idle in the gap, less those that can take work."""
        prewarm = await self._c.fleet.idle.tick(tenant.id, self._settings.timer_period_s)
        if prewarm is None or tenant.state is not TenantState.active:
            return
        live = await self._c.records.live_containers(tenant.id)
        taking = sum(c.state in (ContainerState.ready, ContainerState.starting) for c in live)
        for _ in range(prewarm.count - taking):
            started = await self._c.fleet.start(
                tenant, prewarm.egress, prewarm_keep_s=prewarm.keep_s
            )
            if started is None:  # at the tenant's container limit
                return
            report.prewarmed.append(started.id)

    async def _check(self, container: Container, report: HousekeepingReport) -> None:
        c = self._c
        container = (
            await c.outbox.relay(c.records.containers, container.tenant_id, container.id, container)
            or container
        )
        now = c.ports.clock.now()
        if not container.state.live:
            retention = timedelta(seconds=self._settings.container_record_ttl_s)
            if container.stopped_at is not None and now - container.stopped_at > retention:
                await c.records.containers.discard(container.tenant_id, container.id)
                report.purged.append(container.id)
            return
        if container.stop_requested:  # a stop that failed (or was cut short): try again
            await c.complete_stop(container)
            if container.final_state is ContainerState.stopped:
                report.stopped_idle.append(container.id)
            else:
                report.reaped.append(container.id)
            return
        for crawl_id in container.in_flight:
            await c.reconcile(container, crawl_id)

    async def _reconcile_fleet(self, tenant_id: str) -> None:
        fleets = self._c.records.fleets
        for _ in range(5):
            current = await fleets.get(tenant_id, "fleet")
            if current is None:
                return
            # read after the fleet: a GUID claimed since then has a record, and makes the
            # replace below fail, so a container starting right now keeps its slot
            live = {c.id for c in await self._c.records.live_containers(tenant_id)}
            keep = tuple(c for c in current.value.containers if c in live)
            if keep == current.value.containers:
                return
            try:
                await fleets.replace(current, Fleet(tenant_id=tenant_id, containers=keep))
            except Conflict:
                continue
            return

    async def _purge_crawls(self, tenant: Tenant, report: HousekeepingReport) -> None:
        """Delete crawls finished more than the tenant's retention ago: blobs, then the
        record, then its index entries (a crash in between is finished by the next run)."""
        records = self._c.records
        horizon = self._c.ports.clock.now() - timedelta(days=tenant.quotas.retention_days)
        for entry in await records.finished.query(tenant.id, limit=PURGE_BATCH):
            finished_at, crawl_id = entry.value.created_at, entry.value.crawl_id
            if finished_at > horizon:
                return  # oldest first: the rest are younger
            found = await records.crawls.get(tenant.id, crawl_id)
            await self._c.ports.blobs.delete_prefix(prefix=crawl_prefix(tenant.id, crawl_id))
            if found is not None:
                await records.listing.discard(
                    tenant.id, listing_key(found.value.created_at, crawl_id)
                )
                await records.crawls.discard(tenant.id, crawl_id)
            await records.finished.discard(tenant.id, entry.item.key)
            report.purged_crawls.append(crawl_id)
