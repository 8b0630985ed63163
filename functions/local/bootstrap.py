"""Composition root of the embedded local stack: ports, conductor, housekeeping and API,
built once from typed settings, plus the two loops that stand in for the clouds' queue and
timer triggers.

A stack holds its data directory's lock (``adapters.local.data_dir_lock``) from
``build_local_stack`` to ``close``: one control plane per data directory, because each one's
housekeeping would reap the containers of another as "lost by the runtime"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from adapters.local.data_dir_lock import DataDirLock
from adapters.local.provider import build_ports, engine_env
from core.api import Api
from core.conductor import Conductor, Housekeeper
from core.control_plane import build_control_plane
from core.inbox import drain_inbox
from core.ports import Ports
from core.records import Records
from core.settings import LocalSettings, SkycrawlSettings
from core.tenancy import TenantService

log = logging.getLogger("skycrawl.local")


@dataclass
class LocalStack:
    settings: SkycrawlSettings
    local: LocalSettings
    ports: Ports
    records: Records
    conductor: Conductor
    housekeeper: Housekeeper
    tenants: TenantService
    api: Api
    lock: DataDirLock | None = None

    async def prepare(self) -> None:
        """Create the inbox queue, and provision again every tenant (idempotent: a data
        directory from before tenants had their own dispatch topics gets them)."""
        bus = self.ports.bus
        await bus.ensure_queue(
            name=self.settings.inbox_queue, max_deliveries=self.settings.max_deliveries
        )
        for tenant in await self.tenants.list():
            await self.ports.provisioner.provision(tenant_id=tenant.id)

    async def conductor_loop(self, stop: asyncio.Event) -> None:
        """The queue trigger: handle inbox messages until ``stop`` is set."""
        while not stop.is_set():
            try:
                await drain_inbox(
                    self.conductor, self.ports.bus, queue=self.settings.inbox_queue, wait_s=0.25
                )
            except Exception:
                log.exception("conductor loop iteration failed")
                await _wait(stop, 1.0)

    async def timer_loop(self, stop: asyncio.Event) -> None:
        """The timer trigger: housekeeping every ``timer_period_s``."""
        while not stop.is_set():
            try:
                await self.housekeeper.run()
            except Exception:
                log.exception("housekeeping failed")
            await _wait(stop, self.settings.timer_period_s)

    async def run(self, stop: asyncio.Event) -> None:
        await self.prepare()
        await asyncio.gather(self.conductor_loop(stop), self.timer_loop(stop))

    async def close(self) -> None:
        """Stop every container this stack started, close the ports, then unlock."""
        try:
            await self.ports.close()
        finally:
            if self.lock is not None:
                self.lock.release()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def build_local_stack(
    settings: SkycrawlSettings,
    local: LocalSettings,
    *,
    runtime_command: Sequence[str] | None = None,
    lock_as: str | None = "skycrawl (embedded)",
) -> LocalStack:
    """The stack on ``local.data_dir``, holding the data directory's lock as ``lock_as``
    (``DataDirBusy`` if another process holds it). ``lock_as=None`` builds a stack without
    the lock, for reading only: its caller must not run its loops nor start containers."""
    lock = None
    if lock_as is not None:
        lock = DataDirLock.acquire(local.data_dir, lock_as, shown_as=local.data_dir)
    try:
        ports = build_ports(settings, local, runtime_command=runtime_command)
        plane = build_control_plane(ports, settings, engine_env=engine_env(local))
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return LocalStack(
        settings=settings,
        local=local,
        ports=ports,
        records=plane.records,
        conductor=plane.conductor,
        housekeeper=plane.housekeeper,
        tenants=plane.tenants,
        api=plane.api,
        lock=lock,
    )
