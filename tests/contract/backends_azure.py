"""Azure backends of the contract suites.

* Storage queues, Table storage and Blob storage run against Azurite (real wall-clock time:
  ``elapse`` sleeps; Storage queue visibility timeouts are whole seconds, hence
  ``visibility_s=1``). Azurite is installed and started lazily by the first factory that needs
  it (``tests/integration/azure/azurite.py``), never at import.
* Service Bus, Container Instances and ARM deployments have no emulator that runs here: they
  run against the working fakes of ``tests/integration/azure/fakes*.py`` at the SDK client
  boundary (a ``FakeClock`` for Service Bus, so its suites need not sleep).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from azure.data.tables.aio import TableClient, TableServiceClient
from azure.storage.blob.aio import ContainerClient
from azure.storage.queue.aio import QueueServiceClient

from adapters.azure.blob_store import BlobStorageBlobStore
from adapters.azure.container_runtime import ContainerInstancesRuntime
from adapters.azure.message_bus import ServiceBusMessageBus
from adapters.azure.message_bus_storage_queue import StorageQueueMessageBus
from adapters.azure.provisioner import ArmProvisioner
from adapters.azure.scheduler import ServiceBusScheduler, StorageQueueScheduler
from adapters.azure.settings import AzureSettings
from adapters.azure.state_store import TableStateStore
from adapters.azure.tenant_stores import TableTenantStores
from core.clock import FakeClock, SystemClock
from core.ports import BlobStore, ContainerRuntime, StateStore
from tests.contract.harness import (
    BusHarness,
    ProvisionerHarness,
    RuntimeHarness,
    SchedulerHarness,
    StateHarness,
    TenantStoresHarness,
)
from tests.integration.azure.azurite import azurite
from tests.integration.azure.fakes import FakeServiceBusClient, FakeServiceBusNamespace
from tests.integration.azure.fakes_admin import FakeAdministrationClient
from tests.integration.azure.fakes_mgmt import (
    FakeContainerInstanceClient,
    FakeResourceManagementClient,
)

#: Lock duration of the fake's entities: short, so that the suite's 0.5 s visibility timeout
#: lapses on the fake clock (Service Bus itself allows 5 s to 5 minutes).
FAKE_LOCK_S = 0.5


async def _connection_string() -> str:
    # Started from the main thread on purpose: the emulator dies with the thread that spawned
    # it (PR_SET_PDEATHSIG), and the test loop's worker threads come and go.
    return azurite().connection_string


# --------------------------------------------------------------------------- bus


@contextlib.asynccontextmanager
async def azurite_queues_bus(tmp: Path) -> AsyncIterator[BusHarness]:
    conn = await _connection_string()
    opened: list[StorageQueueMessageBus] = []

    def open_bus() -> StorageQueueMessageBus:
        opened.append(StorageQueueMessageBus(QueueServiceClient.from_connection_string(conn)))
        return opened[-1]

    try:
        yield BusHarness(bus=open_bus(), clock=SystemClock(), reopen=open_bus, visibility_s=1.0)
    finally:
        for bus in opened:
            await bus.close()


def fake_servicebus(namespace: FakeServiceBusNamespace) -> ServiceBusMessageBus:
    return ServiceBusMessageBus(
        FakeServiceBusClient(namespace),  # type: ignore[arg-type]
        FakeAdministrationClient(namespace),  # type: ignore[arg-type]
        clock=namespace.clock,
        lock_duration_s=FAKE_LOCK_S,
        min_wait_s=0.01,
    )


@contextlib.asynccontextmanager
async def servicebus_fake_bus(tmp: Path) -> AsyncIterator[BusHarness]:
    clock = FakeClock()
    namespace = FakeServiceBusNamespace(clock)
    opened: list[ServiceBusMessageBus] = []

    def open_bus() -> ServiceBusMessageBus:
        opened.append(fake_servicebus(namespace))
        return opened[-1]

    try:
        yield BusHarness(bus=open_bus(), clock=clock, reopen=open_bus, visibility_s=FAKE_LOCK_S)
    finally:
        for bus in opened:
            await bus.close()


# --------------------------------------------------------------------------- scheduler


@contextlib.asynccontextmanager
async def azurite_queues_scheduler(tmp: Path) -> AsyncIterator[SchedulerHarness]:
    conn = await _connection_string()
    bus = StorageQueueMessageBus(QueueServiceClient.from_connection_string(conn))
    try:
        yield SchedulerHarness(scheduler=StorageQueueScheduler(bus), bus=bus, clock=bus.clock)
    finally:
        await bus.close()


@contextlib.asynccontextmanager
async def servicebus_fake_scheduler(tmp: Path) -> AsyncIterator[SchedulerHarness]:
    clock = FakeClock()
    bus = fake_servicebus(FakeServiceBusNamespace(clock))
    try:
        yield SchedulerHarness(scheduler=ServiceBusScheduler(bus), bus=bus, clock=clock)
    finally:
        await bus.close()


# --------------------------------------------------------------------------- state


@contextlib.asynccontextmanager
async def azurite_tables_state(tmp: Path) -> AsyncIterator[StateHarness]:
    conn = await _connection_string()
    table = f"state{uuid.uuid4().hex[:12]}"
    opened: list[TableStateStore] = []

    def open_store() -> TableStateStore:
        client = TableClient.from_connection_string(conn, table_name=table)
        opened.append(TableStateStore(client))
        return opened[-1]

    try:
        yield StateHarness(store=open_store(), clock=SystemClock(), reopen=open_store)
    finally:
        for store in opened:
            await store.close()


# --------------------------------------------------------------------------- blobs


@contextlib.asynccontextmanager
async def azurite_blobs(tmp: Path) -> AsyncIterator[BlobStore]:
    conn = await _connection_string()
    name = f"blobs-{uuid.uuid4().hex[:12]}"
    store = BlobStorageBlobStore(ContainerClient.from_connection_string(conn, name))
    try:
        yield store
    finally:
        await store.close()


# --------------------------------------------------------------------------- runtime


@contextlib.asynccontextmanager
async def aci_fake_runtime(tmp: Path) -> AsyncIterator[RuntimeHarness]:
    out = tmp / "out"
    out.mkdir()
    clients: list[FakeContainerInstanceClient] = []
    settings = AzureSettings(subscription_id="sub-1", resource_group="rg-skycrawl")

    def make(script: str) -> ContainerRuntime:
        clients.append(FakeContainerInstanceClient(script=script, log_dir=tmp / "logs"))
        return ContainerInstancesRuntime(clients[-1], settings)  # type: ignore[arg-type]

    harness = RuntimeHarness(make=make, out_dir=out)
    try:
        yield harness
    finally:
        for runtime in harness.opened:
            await runtime.close()
        for client in clients:
            client.kill_all()


# --------------------------------------------------------------------------- provisioner


async def tenant_tables(service: TableServiceClient) -> set[str]:
    """The tenants' tables of the account (``tenant…``), from Table storage's own listing."""
    return {t.name async for t in service.list_tables() if t.name.startswith("tenant")}


@contextlib.asynccontextmanager
async def azurite_tenant_stores(tmp: Path) -> AsyncIterator[TenantStoresHarness]:
    conn = await _connection_string()
    listing = TableServiceClient.from_connection_string(conn)
    control_table = TableClient.from_connection_string(
        conn, table_name=f"state{uuid.uuid4().hex[:12]}"
    )
    control = TableStateStore(control_table)
    stores = TableTenantStores(TableServiceClient.from_connection_string(conn))
    try:
        yield TenantStoresHarness(stores, control, lambda: tenant_tables(listing))
    finally:
        await stores.close()
        await control_table.delete_table()
        await control.close()
        await listing.close()


@contextlib.asynccontextmanager
async def azurite_tenant_state(tmp: Path) -> AsyncIterator[StateHarness]:
    """A tenant's own table must keep every promise of the StateStore port."""
    conn = await _connection_string()
    stores = TableTenantStores(TableServiceClient.from_connection_string(conn))
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    await stores.create_store(tenant_id=tenant)
    opened: list[StateStore] = []

    def open_store() -> StateStore:
        opened.append(stores.open_store(tenant))
        return opened[-1]

    try:
        yield StateHarness(store=open_store(), clock=SystemClock(), reopen=open_store)
    finally:
        for store in opened:
            await store.close()
        await stores.drop_store(tenant_id=tenant)
        await stores.close()


@contextlib.asynccontextmanager
async def arm_fake_dedicated_provisioner(tmp: Path) -> AsyncIterator[ProvisionerHarness]:
    """The ARM deployment with dedicated tenant data: the tenant's table too, on Azurite's
    data plane and as an ARM resource."""
    async with arm_fake_provisioner(tmp, dedicated=True) as harness:
        yield harness


@contextlib.asynccontextmanager
async def arm_fake_provisioner(
    tmp: Path, *, dedicated: bool = False
) -> AsyncIterator[ProvisionerHarness]:
    account = (
        "/subscriptions/sub-1/resourceGroups/rg-skycrawl/providers/"
        "Microsoft.Storage/storageAccounts/skycrawlsa"
    )
    client = FakeResourceManagementClient(subscription_id="sub-1", existing=[account])
    settings = AzureSettings(
        subscription_id="sub-1", resource_group="rg-skycrawl", storage_account="skycrawlsa"
    )
    namespace = FakeServiceBusNamespace(FakeClock())
    bus = fake_servicebus(namespace)
    conn = await _connection_string() if dedicated else ""
    stores = TableTenantStores(TableServiceClient.from_connection_string(conn)) if conn else None
    provisioner = ArmProvisioner(client, settings, bus=bus, stores=stores)  # type: ignore[arg-type]

    async def tables() -> set[str]:
        return set() if stores is None else await tenant_tables(stores.service)

    async def exists(resources: Mapping[str, str]) -> bool:
        ids = [value for key, value in resources.items() if key.endswith("_id") and value]
        found = bool(ids) and all(client.exists(resource_id) for resource_id in ids)
        if "tenant_store" in resources:
            found = found and resources["tenant_store"] in await tables()
        return found

    async def inventory() -> set[str]:
        """Resource Manager's resources, the topics and queues of the bus's namespace, and
        the tenants' tables on Azurite."""
        found = {f"arm:{rid}" for rid in client.resources.items}
        found |= {f"topic:{t}" for t in namespace.topics}
        found |= {f"table:{t}" for t in await tables()}
        return found | {f"queue:{q}" for q in namespace.queues}

    try:
        yield ProvisionerHarness(provisioner=provisioner, exists=exists, inventory=inventory)
    finally:
        await provisioner.close()
        if stores is not None:
            await stores.close()
        await bus.close()


FACTORIES = {
    "bus": {"azurite-queues": azurite_queues_bus, "servicebus-fake": servicebus_fake_bus},
    "scheduler": {
        "azurite-queues": azurite_queues_scheduler,
        "servicebus-fake": servicebus_fake_scheduler,
    },
    "state": {"azurite-tables": azurite_tables_state, "azurite-tenant": azurite_tenant_state},
    "blob": {"azurite-blobs": azurite_blobs},
    "runtime": {"aci-fake": aci_fake_runtime},
    "provisioner": {
        "arm-fake": arm_fake_provisioner,
        "arm-fake-dedicated": arm_fake_dedicated_provisioner,
    },
    "tenant_stores": {"azurite-tables": azurite_tenant_stores},
}
