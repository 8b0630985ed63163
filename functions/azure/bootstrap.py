"""Composition root of the Azure function app: settings → ports → conductor, housekeeper and
API, built once per worker process, lazily, on the first invocation (never at import, so the
host can index ``function_app.py`` without any setting or network).

``get_stack()`` returns the process-wide ``AzureStack``; ``build_stack`` builds one explicitly
(tests pass their own runtime, e.g. engine subprocesses) and ``use_stack`` installs it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from adapters.azure.provider import build_ports, engine_env
from adapters.azure.settings import AzureSettings
from core.api import Api
from core.clock import Clock
from core.conductor import Conductor, Housekeeper
from core.control_plane import build_control_plane
from core.ports import ContainerRuntime, Ports, Provisioner
from core.records import Records
from core.settings import SkycrawlSettings
from core.tenancy import TenantService


@dataclass
class AzureStack:
    settings: SkycrawlSettings
    azure: AzureSettings
    ports: Ports
    records: Records
    conductor: Conductor
    housekeeper: Housekeeper
    tenants: TenantService
    api: Api

    async def prepare(self) -> None:
        """Create the inbox queue if missing (the Bicep stack creates it too; this makes a
        fresh or emulated account work as well). Each tenant's dispatch topic comes with the
        tenant (``ArmProvisioner``)."""
        bus = self.ports.bus
        await bus.ensure_queue(
            name=self.settings.inbox_queue, max_deliveries=self.settings.max_deliveries
        )

    async def close(self) -> None:
        await self.ports.close()


def build_stack(
    settings: SkycrawlSettings | None = None,
    azure: AzureSettings | None = None,
    *,
    runtime: ContainerRuntime | None = None,
    provisioner: Provisioner | None = None,
    clock: Clock | None = None,
    arm: Any = None,
) -> AzureStack:
    """The whole control plane on Azure adapters; ``runtime`` / ``provisioner`` replace
    Container Instances / ARM deployments (tests); ``arm`` is a ready Resource Manager client
    for the ARM provisioner (tests: the fake)."""
    settings = settings or SkycrawlSettings(provider="azure")
    azure = azure or AzureSettings()
    ports = build_ports(
        settings, azure, clock=clock, runtime=runtime, provisioner=provisioner, arm=arm
    )
    plane = build_control_plane(ports, settings, engine_env=engine_env(azure))
    return AzureStack(
        settings=settings,
        azure=azure,
        ports=ports,
        records=plane.records,
        conductor=plane.conductor,
        housekeeper=plane.housekeeper,
        tenants=plane.tenants,
        api=plane.api,
    )


class _Holder:
    """The worker's one stack and the lock that builds it once."""

    def __init__(self) -> None:
        self.stack: AzureStack | None = None
        self.lock: asyncio.Lock | None = None


_holder = _Holder()


async def get_stack() -> AzureStack:
    """The stack of this worker process, built and prepared on first use."""
    if _holder.stack is None:
        if _holder.lock is None:
            _holder.lock = asyncio.Lock()
        async with _holder.lock:
            if _holder.stack is None:
                stack = build_stack()
                await stack.prepare()
                _holder.stack = stack
    return _holder.stack


def use_stack(stack: AzureStack | None) -> None:
    """Install ``stack`` as this process's stack (None: build from settings on next use)."""
    _holder.stack = stack
    _holder.lock = None
