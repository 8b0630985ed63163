"""Opt-in tests against real Azure (marked ``live``; reported as skipped, with the reason,
unless configured):

* ``SKYCRAWL_AZURE_LIVE_SERVICEBUS`` -- a Service Bus connection string (Standard tier or
  above, Manage rights): the MessageBus and Scheduler contract suites run against
  ``ServiceBusMessageBus`` with 5 s locks, as they run against the fake -- what keeps the
  fake honest. Every queue and topic a test creates is deleted afterwards.
* ``SKYCRAWL_AZURE_LIVE_SUBSCRIPTION_ID`` and ``SKYCRAWL_AZURE_LIVE_RESOURCE_GROUP`` (with
  ``az login`` or another ``DefaultAzureCredential`` source): one container group on
  Container Instances (``SKYCRAWL_AZURE_LIVE_IMAGE``, default a small public busybox image);
  with ``SKYCRAWL_AZURE_LIVE_STORAGE_ACCOUNT`` (in that group) also a tenant deployment and
  its teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.aio.management import ServiceBusAdministrationClient

from adapters.azure.container_runtime import ContainerInstancesRuntime
from adapters.azure.message_bus import DLQ_SUFFIX, ServiceBusMessageBus
from adapters.azure.provider import credential
from adapters.azure.provisioner import ArmProvisioner
from adapters.azure.scheduler import ServiceBusScheduler
from adapters.azure.settings import AzureSettings
from core.clock import SystemClock
from core.models import Egress
from core.ports import ContainerSpec, RunState
from tests.contract import test_message_bus as bus_suite
from tests.contract import test_scheduler as scheduler_suite
from tests.contract.harness import BusHarness, SchedulerHarness

SERVICEBUS = os.environ.get("SKYCRAWL_AZURE_LIVE_SERVICEBUS", "")
SUBSCRIPTION = os.environ.get("SKYCRAWL_AZURE_LIVE_SUBSCRIPTION_ID", "")
RESOURCE_GROUP = os.environ.get("SKYCRAWL_AZURE_LIVE_RESOURCE_GROUP", "")
STORAGE_ACCOUNT = os.environ.get("SKYCRAWL_AZURE_LIVE_STORAGE_ACCOUNT", "")
IMAGE = os.environ.get("SKYCRAWL_AZURE_LIVE_IMAGE", "mcr.microsoft.com/azurelinux/busybox:1.36")
LOCK_S = 5.0

needs_servicebus = pytest.mark.skipif(
    not SERVICEBUS, reason="live: set SKYCRAWL_AZURE_LIVE_SERVICEBUS to a connection string"
)
needs_subscription = pytest.mark.skipif(
    not (SUBSCRIPTION and RESOURCE_GROUP),
    reason="live: set SKYCRAWL_AZURE_LIVE_SUBSCRIPTION_ID and SKYCRAWL_AZURE_LIVE_RESOURCE_GROUP",
)
pytestmark = pytest.mark.live


def _suite(module: Any) -> list[str]:
    return sorted(
        name
        for name, fn in vars(module).items()
        if name.startswith("test_") and "sqlite" not in name and inspect.iscoroutinefunction(fn)
    )


class _TrackingBus(ServiceBusMessageBus):
    """Remembers the entities it creates, so the test can delete them."""

    created: set[tuple[str, str]]

    async def ensure_queue(self, *, name: str, max_deliveries: int = 5) -> None:
        self.created.add(("queue", name))
        await super().ensure_queue(name=name, max_deliveries=max_deliveries)

    async def ensure_topic(self, *, topic: str) -> None:
        self.created.update({("topic", topic), ("queue", topic + DLQ_SUFFIX)})
        await super().ensure_topic(topic=topic)


@pytest.fixture
async def live_bus() -> AsyncIterator[Callable[[], _TrackingBus]]:
    created: set[tuple[str, str]] = set()
    opened: list[_TrackingBus] = []

    def open_bus() -> _TrackingBus:
        bus = _TrackingBus(
            ServiceBusClient.from_connection_string(SERVICEBUS),
            ServiceBusAdministrationClient.from_connection_string(SERVICEBUS),
            lock_duration_s=LOCK_S,
        )
        bus.created = created
        opened.append(bus)
        return bus

    try:
        yield open_bus
    finally:
        for bus in opened:
            await bus.close()
        async with ServiceBusAdministrationClient.from_connection_string(SERVICEBUS) as admin:
            for kind, name in created:
                delete = admin.delete_topic if kind == "topic" else admin.delete_queue
                with contextlib.suppress(Exception):  # best-effort cleanup
                    await delete(name)


@pytest.fixture
def unique() -> Callable[[str], str]:
    return lambda stem: f"live-{stem}-{uuid.uuid4().hex[:8]}"


@needs_servicebus
@pytest.mark.parametrize("name", _suite(bus_suite))
async def test_servicebus_passes_the_bus_contract(
    name: str, live_bus: Callable[[], _TrackingBus], unique: Callable[[str], str]
) -> None:
    harness = BusHarness(bus=live_bus(), clock=SystemClock(), reopen=live_bus, visibility_s=LOCK_S)
    test = getattr(bus_suite, name)
    extra = {"seed": 0} if "seed" in inspect.signature(test).parameters else {}
    await test(harness, unique, **extra)


@needs_servicebus
@pytest.mark.parametrize("name", _suite(scheduler_suite))
async def test_servicebus_passes_the_scheduler_contract(
    name: str, live_bus: Callable[[], _TrackingBus], unique: Callable[[str], str]
) -> None:
    bus = live_bus()
    harness = SchedulerHarness(scheduler=ServiceBusScheduler(bus), bus=bus, clock=SystemClock())
    await getattr(scheduler_suite, name)(harness, unique)


def _live_settings() -> AzureSettings:
    return AzureSettings(
        subscription_id=SUBSCRIPTION,
        resource_group=RESOURCE_GROUP,
        storage_account=STORAGE_ACCOUNT or None,
        engine_cpu=0.5,
        engine_memory_gb=0.5,
    )


@needs_subscription
async def test_container_instances_start_describe_stop() -> None:
    from azure.mgmt.containerinstance.aio import ContainerInstanceManagementClient

    settings = _live_settings()
    client = ContainerInstanceManagementClient(credential(settings), SUBSCRIPTION)
    runtime = ContainerInstancesRuntime(client, settings, default_image=IMAGE)
    guid = str(uuid.uuid4())
    spec = ContainerSpec(guid, "live", Egress(name="live"), env={"SKYCRAWL_LIVE": "1"})
    try:
        await runtime.start_container(spec=spec)
        status = await runtime.describe(container_id=guid, egress=spec.egress)
        for _ in range(90):
            if status.state is RunState.exited:
                break
            await asyncio.sleep(2)
            status = await runtime.describe(container_id=guid, egress=spec.egress)
        assert status.state is RunState.exited, status  # busybox's default command returns
    finally:
        await runtime.stop_container(container_id=guid, egress=spec.egress, grace_s=5)
    assert (await runtime.describe(container_id=guid, egress=spec.egress)).state is RunState.exited
    await runtime.close()


@needs_subscription
@pytest.mark.skipif(not STORAGE_ACCOUNT, reason="live: set SKYCRAWL_AZURE_LIVE_STORAGE_ACCOUNT")
async def test_tenant_deployment_and_teardown() -> None:
    from azure.mgmt.resource.resources.aio import ResourceManagementClient

    settings = _live_settings()
    client = ResourceManagementClient(credential(settings), SUBSCRIPTION)
    provisioner = ArmProvisioner(client, settings)
    tenant = f"live-{uuid.uuid4().hex[:8]}"
    try:
        resources = await provisioner.provision(tenant_id=tenant)
        assert resources == await provisioner.provision(tenant_id=tenant)
        found = await client.resources.get_by_id(
            resources["container_id"], api_version="2023-05-01"
        )
        assert found.id
    finally:
        await provisioner.teardown(tenant_id=tenant, resources={})
        await provisioner.close()
