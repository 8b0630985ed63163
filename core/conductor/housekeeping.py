"""Housekeeping, run by a timer every ``timer_period_s``: the safety net under the events.

* reap containers that never became ready (``startup_timeout_s``), stopped heartbeating
  (``heartbeat_timeout_s``) or whose runtime says they exited — their work is re-dispatched;
* stop idle containers whose kill timer was lost (idle longer than ``idle_ttl_s``);
* finish stops left half-done in ``draining`` by a conductor that died;
* free fleet slots held by containers that are no longer live;
* requeue crawls still dispatched to a container that is no longer live;
* place backlogged crawls;
* forget records of containers stopped more than ``container_record_ttl_s`` ago.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core.conductor.conductor import Conductor
from core.errors import Conflict
from core.models import Container, ContainerState
from core.ports import RunState
from core.records import Fleet

log = logging.getLogger("skycrawl.housekeeping")

#: A runtime may not list a container it was asked to start a moment ago.
RUNTIME_GRACE_S = 10.0


@dataclass
class HousekeepingReport:
    reaped: list[str] = field(default_factory=list)
    stopped_idle: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)  # records of long-stopped containers
    placed: int = 0


class Housekeeper:
    def __init__(self, conductor: Conductor) -> None:
        self._c = conductor
        self._settings = conductor.settings

    async def run(self) -> HousekeepingReport:
        report = HousekeepingReport()
        for tenant in await self._c.records.tenants.query("tenants"):
            tenant_id = tenant.value.id
            try:  # a fault (a container that cannot start) must not hold up other tenants
                for versioned in await self._c.records.containers.query(tenant_id):
                    await self._check(versioned.value, report)
                await self._reconcile_fleet(tenant_id)
                await self._c.requeue_orphans(tenant_id)
                report.placed += await self._c.place_backlog(tenant_id)
            except Exception:
                log.exception("housekeeping of tenant %s failed; the next run retries", tenant_id)
        return report

    async def _check(self, container: Container, report: HousekeepingReport) -> None:
        now = self._c.ports.clock.now()
        if not container.state.live:
            retention = timedelta(seconds=self._settings.container_record_ttl_s)
            if container.stopped_at is not None and now - container.stopped_at > retention:
                await self._c.records.containers.discard(container.tenant_id, container.id)
                report.purged.append(container.id)
            return
        problem = await self._problem(container, now)
        if problem is not None:
            await self._c.reap(container, problem)
            report.reaped.append(container.id)
            return
        if container.state is ContainerState.draining:  # idle since before it was drained
            if now - (container.idle_since or container.started_at) > self._grace(2):
                await self._c.fleet.retire(container, ContainerState.stopped, "idle")
            return
        idle_since = container.idle_since
        ttl = timedelta(seconds=self._settings.idle_ttl_s)
        idle = container.state is ContainerState.ready and idle_since and now - idle_since >= ttl
        if idle and await self._c.fleet.stop_idle(container):
            report.stopped_idle.append(container.id)

    async def _problem(self, container: Container, now: datetime) -> str | None:
        s = self._settings
        if container.state is ContainerState.starting:
            if now - container.started_at > timedelta(seconds=s.startup_timeout_s):
                return f"not ready within {s.startup_timeout_s:g}s"
        else:
            last = container.last_heartbeat or container.ready_at or container.started_at
            if now - last > timedelta(seconds=s.heartbeat_timeout_s):
                return f"no heartbeat for {s.heartbeat_timeout_s:g}s"
        if now - container.started_at < timedelta(seconds=RUNTIME_GRACE_S):
            return None
        status = await self._c.ports.runtime.describe(container_id=container.id)
        if status.state is RunState.exited:
            return f"exited with code {status.exit_code}"
        if status.state is RunState.unknown:
            return "lost by the runtime"
        return None

    def _grace(self, factor: float) -> timedelta:
        return timedelta(seconds=max(self._settings.stop_grace_s, 1.0) * factor)

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
