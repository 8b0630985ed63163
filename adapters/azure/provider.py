"""The Azure provider: builds every port from ``SkycrawlSettings`` + ``AzureSettings``.

============  =========================================================================
port          adapter (module)
============  =========================================================================
bus           ``ServiceBusMessageBus`` (``message_bus``) or, with
              ``SKYCRAWL_AZURE_BUS=storage-queue``, ``StorageQueueMessageBus``
              (``message_bus_storage_queue``)
scheduler     ``ServiceBusScheduler`` / ``StorageQueueScheduler`` (``scheduler``), on that bus
state         ``TableStateStore`` (``state_store``)
blobs         ``BlobStorageBlobStore`` (``blob_store``)
runtime       ``ContainerInstancesRuntime`` (``container_runtime``)
provisioner   ``ArmProvisioner`` (``provisioner``)
tenant stores ``TableTenantStores`` (``tenant_stores``): a table per tenant, with
              ``SKYCRAWL_TENANT_DATA=dedicated`` only
============  =========================================================================

Clients are built here, lazily: each port, its adapter module and its SDK on the port's first
use (``core.ports.deferred``; the settings are checked by ``build_ports`` at once), so a
function worker whose first request touches no port imports none of the Azure SDKs (about
500 ms, ``bench/coldstart_bench.py``). They are built from connection strings when set, else
with ``azure.identity.aio.DefaultAzureCredential`` (the managed identity in Azure; pick a
user-assigned one with ``SKYCRAWL_AZURE_MANAGED_IDENTITY_CLIENT_ID``). Each adapter owns and
closes its clients and its credential. The management clients (Container Instances,
Resource Manager) are only built when ``SUBSCRIPTION_ID`` and ``RESOURCE_GROUP`` are set;
without them the runtime and provisioner raise ``ConfigurationError`` when used, so an
engine or a test needs neither.

Engine containers get ``engine_env``: the provider name, which bus, and how to reach the bus
and the blob container (connection strings, or account and namespace names plus the managed
identity's client id) -- passed by ``ContainerInstancesRuntime`` as secure variables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from adapters.azure.settings import AzureSettings
from core.clock import Clock, SystemClock
from core.errors import ConfigurationError
from core.models import Egress
from core.ports import (
    BlobStore,
    ContainerRuntime,
    ContainerSpec,
    ContainerStatus,
    MessageBus,
    Ports,
    Provisioner,
    RunState,
    RuntimeCapabilities,
    Scheduler,
    deferred,
)
from core.ports.tenant_stores import TenantStores
from core.settings import SkycrawlSettings
from core.tenant_data import routed_state

if TYPE_CHECKING:  # the SDKs are imported where a client is first built (see above)
    from azure.identity.aio import DefaultAzureCredential
    from azure.mgmt.resource.resources.aio import ResourceManagementClient

    from adapters.azure.blob_store import BlobStorageBlobStore
    from adapters.azure.message_bus_storage_queue import StorageQueueMessageBus
    from adapters.azure.state_store import TableStateStore
    from adapters.azure.tenant_stores import TableTenantStores


def credential(azure: AzureSettings) -> DefaultAzureCredential:
    """Entra ID credential: managed identity in Azure, developer credentials elsewhere."""
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=azure.managed_identity_client_id)


def check_storage(azure: AzureSettings) -> None:
    """``ConfigurationError`` unless the storage account is reachable by string or name."""
    if not (azure.storage_connection_string or azure.storage_account):
        raise ConfigurationError(
            "set SKYCRAWL_AZURE_STORAGE_CONNECTION_STRING or SKYCRAWL_AZURE_STORAGE_ACCOUNT"
        )


def check_servicebus(azure: AzureSettings) -> None:
    """``ConfigurationError`` unless Service Bus is reachable, when it is the bus."""
    if azure.bus == "servicebus" and not (
        azure.servicebus_connection_string or azure.servicebus_namespace
    ):
        raise ConfigurationError(
            "set SKYCRAWL_AZURE_SERVICEBUS_CONNECTION_STRING or SKYCRAWL_AZURE_SERVICEBUS_NAMESPACE"
            " (or SKYCRAWL_AZURE_BUS=storage-queue)"
        )


def _account_url(azure: AzureSettings, service: str) -> str:
    check_storage(azure)
    return f"https://{azure.storage_account}.{service}.core.windows.net"


def blob_store(azure: AzureSettings) -> BlobStorageBlobStore:
    from azure.storage.blob.aio import ContainerClient

    from adapters.azure.blob_store import BlobStorageBlobStore

    if azure.storage_connection_string:
        secret = azure.storage_connection_string.get_secret_value()
        return BlobStorageBlobStore(
            ContainerClient.from_connection_string(secret, azure.blob_container)
        )
    url, token = _account_url(azure, "blob"), credential(azure)
    container = ContainerClient(url, azure.blob_container, credential=token)
    return BlobStorageBlobStore(container, credential=token)


def state_store(azure: AzureSettings, clock: Clock) -> TableStateStore:
    from azure.data.tables.aio import TableClient

    from adapters.azure.state_store import TableStateStore

    if azure.storage_connection_string:
        secret = azure.storage_connection_string.get_secret_value()
        table = TableClient.from_connection_string(secret, table_name=azure.state_table)
        return TableStateStore(table, clock=clock)
    url, token = _account_url(azure, "table"), credential(azure)
    table = TableClient(url, azure.state_table, credential=token)
    return TableStateStore(table, clock=clock, credential=token)


def _storage_queue_bus(azure: AzureSettings, clock: Clock) -> StorageQueueMessageBus:
    from azure.storage.queue.aio import QueueServiceClient

    from adapters.azure.message_bus_storage_queue import StorageQueueMessageBus

    if azure.storage_connection_string:
        secret = azure.storage_connection_string.get_secret_value()
        return StorageQueueMessageBus(
            QueueServiceClient.from_connection_string(secret), clock=clock
        )
    url, token = _account_url(azure, "queue"), credential(azure)
    service = QueueServiceClient(url, credential=token)
    return StorageQueueMessageBus(service, clock=clock, credential=token)


def message_bus(azure: AzureSettings, clock: Clock) -> MessageBus:
    """The bus ``SKYCRAWL_AZURE_BUS`` names."""
    if azure.bus == "storage-queue":
        return _storage_queue_bus(azure, clock)
    from azure.servicebus.aio import ServiceBusClient
    from azure.servicebus.aio.management import ServiceBusAdministrationClient

    from adapters.azure.message_bus import ServiceBusMessageBus

    check_servicebus(azure)
    token: DefaultAzureCredential | None = None
    if azure.servicebus_connection_string:
        secret = azure.servicebus_connection_string.get_secret_value()
        client = ServiceBusClient.from_connection_string(secret)
        admin = ServiceBusAdministrationClient.from_connection_string(secret)
    elif azure.servicebus_namespace:
        token = credential(azure)
        client = ServiceBusClient(azure.servicebus_namespace, token)
        admin = ServiceBusAdministrationClient(azure.servicebus_namespace, token)
    else:  # pragma: no cover - check_servicebus refused it
        raise AssertionError("no Service Bus settings")
    return ServiceBusMessageBus(
        client,
        admin,
        clock=clock,
        lock_duration_s=azure.servicebus_lock_duration_s,
        max_message_bytes=azure.servicebus_max_message_bytes,
        credential=token,
    )


def scheduler_for(bus: MessageBus) -> Scheduler:
    from adapters.azure.message_bus import ServiceBusMessageBus
    from adapters.azure.message_bus_storage_queue import StorageQueueMessageBus
    from adapters.azure.scheduler import ServiceBusScheduler, StorageQueueScheduler

    if isinstance(bus, ServiceBusMessageBus):
        return ServiceBusScheduler(bus)
    if isinstance(bus, StorageQueueMessageBus):
        return StorageQueueScheduler(bus)
    raise ConfigurationError(f"no Azure scheduler for {bus.__class__.__name__}")


class UnconfiguredRuntime:
    """Stands in for Container Instances when no subscription / resource group is set."""

    capabilities = RuntimeCapabilities(
        name="unconfigured", typical_start_s=0, max_grace_s=0, graceful_stop=False
    )

    def _fail(self) -> ConfigurationError:
        return ConfigurationError(
            "starting containers on Azure needs SKYCRAWL_AZURE_SUBSCRIPTION_ID and "
            "SKYCRAWL_AZURE_RESOURCE_GROUP"
        )

    async def start_container(self, *, spec: ContainerSpec) -> None:
        raise self._fail()

    async def stop_container(
        self, *, container_id: str, egress: Egress, grace_s: float = 10
    ) -> None:
        raise self._fail()

    async def describe(self, *, container_id: str, egress: Egress) -> ContainerStatus:
        return ContainerStatus(container_id, RunState.unknown, detail="no runtime configured")

    async def list_running(self, *, egress: Egress) -> list[ContainerStatus]:
        return []

    async def close(self) -> None:
        return None


class UnconfiguredProvisioner:
    """Stands in for ARM deployments when no subscription / resource group is set."""

    async def provision(self, *, tenant_id: str) -> dict[str, str]:
        raise ConfigurationError(
            "provisioning tenants on Azure needs SKYCRAWL_AZURE_SUBSCRIPTION_ID, "
            "SKYCRAWL_AZURE_RESOURCE_GROUP and SKYCRAWL_AZURE_STORAGE_ACCOUNT"
        )

    async def teardown(self, *, tenant_id: str, resources: Mapping[str, str]) -> None:
        await self.provision(tenant_id=tenant_id)

    async def close(self) -> None:
        return None


def container_runtime(settings: SkycrawlSettings, azure: AzureSettings) -> ContainerRuntime:
    if not (azure.subscription_id and azure.resource_group):
        return UnconfiguredRuntime()
    from azure.mgmt.containerinstance.aio import ContainerInstanceManagementClient

    from adapters.azure.container_runtime import ContainerInstancesRuntime

    token = credential(azure)
    client = ContainerInstanceManagementClient(token, azure.subscription_id)
    return ContainerInstancesRuntime(
        client, azure, default_image=settings.engine_image, credential=token
    )


def _aci_once(
    settings: SkycrawlSettings, azure: AzureSettings
) -> Callable[[Egress], ContainerRuntime]:
    made: list[ContainerRuntime] = []

    def build(egress: Egress) -> ContainerRuntime:
        if not made:
            made.append(deferred(lambda: container_runtime(settings, azure)))
        return made[0]

    return build


def build_runtime(settings: SkycrawlSettings, egress: Egress) -> ContainerRuntime:
    """Container Instances for an ``aci`` egress of another family's deployment
    (``SKYCRAWL_AZURE_*``)."""
    return container_runtime(settings, AzureSettings())


def tenant_stores(azure: AzureSettings, clock: Clock) -> TableTenantStores:
    """The tenants' own tables (``SKYCRAWL_TENANT_DATA=dedicated``), in the state's account."""
    from azure.data.tables.aio import TableServiceClient

    from adapters.azure.tenant_stores import TableTenantStores

    if azure.storage_connection_string:
        secret = azure.storage_connection_string.get_secret_value()
        return TableTenantStores(TableServiceClient.from_connection_string(secret), clock=clock)
    url, token = _account_url(azure, "table"), credential(azure)
    return TableTenantStores(
        TableServiceClient(url, credential=token), clock=clock, credential=token
    )


def arm_provisioner(
    azure: AzureSettings,
    *,
    bus: MessageBus | None = None,
    dispatch_topic: str = "skycrawl-dispatch",
    inbox_queue: str = "skycrawl-inbox",
    client: ResourceManagementClient | None = None,
    stores: TenantStores | None = None,
) -> Provisioner:
    """The ARM provisioner creating each tenant's resources, its dispatch topic on ``bus``
    and its own table in ``stores`` too; ``client`` replaces the Resource Manager client
    built from the settings (tests)."""
    from adapters.azure.provisioner import ArmProvisioner

    if client is not None:
        return ArmProvisioner(
            client,
            azure,
            bus=bus,
            dispatch_topic=dispatch_topic,
            inbox_queue=inbox_queue,
            stores=stores,
        )
    if not (azure.subscription_id and azure.resource_group):
        return UnconfiguredProvisioner()
    from azure.mgmt.resource.resources.aio import ResourceManagementClient

    token = credential(azure)
    return ArmProvisioner(
        ResourceManagementClient(token, azure.subscription_id),
        azure,
        credential=token,
        bus=bus,
        dispatch_topic=dispatch_topic,
        inbox_queue=inbox_queue,
        stores=stores,
    )


def build_ports(
    settings: SkycrawlSettings,
    azure: AzureSettings | None = None,
    *,
    clock: Clock | None = None,
    runtime: ContainerRuntime | None = None,
    provisioner: Provisioner | None = None,
    runtimes: Mapping[str, ContainerRuntime] | None = None,
    arm: ResourceManagementClient | None = None,
) -> Ports:
    """Every Azure adapter, from settings. One runtime per egress (``adapters.runtimes``):
    ``aci`` egresses share one Container Instances runtime (an egress's region is its
    groups' location), others get their family's. ``runtime`` replaces every egress's
    runtime, ``runtimes`` those it names, and ``provisioner`` the ARM deployments (tests, or
    engines run elsewhere); ``arm`` is a ready Resource Manager client for the ARM
    provisioner."""
    from adapters.runtimes import build_runtimes, same_runtime

    azure = azure or AzureSettings()
    clock = clock or SystemClock()
    check_storage(azure)  # what building would refuse, refused now; the rest on first use
    check_servicebus(azure)
    bus = deferred(lambda: message_bus(azure, clock))
    dedicated = settings.tenant_data == "dedicated"
    stores = deferred(lambda: tenant_stores(azure, clock)) if dedicated else None
    return Ports(
        bus=bus,
        scheduler=deferred(lambda: scheduler_for(bus)),
        state=deferred(lambda: routed_state(state_store(azure, clock), stores)),
        blobs=deferred(lambda: blob_store(azure)),
        runtimes=same_runtime(runtime, settings)
        if runtime is not None
        else build_runtimes(
            settings, home="azure", build_home=_aci_once(settings, azure), overrides=runtimes
        ),
        provisioner=provisioner
        or deferred(
            lambda: arm_provisioner(
                azure,
                bus=bus,
                dispatch_topic=settings.dispatch_topic,
                inbox_queue=settings.inbox_queue,
                client=arm,
                stores=stores,
            ),
            now=arm is not None,
        ),
        clock=clock,
        pool=tuple(settings.egresses),
    )


def engine_env(azure: AzureSettings | None = None) -> dict[str, str]:
    """What an engine container needs to reach the same bus and blobs."""
    azure = azure or AzureSettings()
    env = {
        "SKYCRAWL_PROVIDER": "azure",
        "SKYCRAWL_AZURE_BUS": azure.bus,
        "SKYCRAWL_AZURE_BLOB_CONTAINER": azure.blob_container,
        "SKYCRAWL_AZURE_SERVICEBUS_LOCK_DURATION_S": str(azure.servicebus_lock_duration_s),
        "SKYCRAWL_AZURE_SERVICEBUS_MAX_MESSAGE_BYTES": str(azure.servicebus_max_message_bytes),
    }
    optional = {
        "SKYCRAWL_AZURE_STORAGE_CONNECTION_STRING": azure.storage_connection_string,
        "SKYCRAWL_AZURE_STORAGE_ACCOUNT": azure.storage_account,
        "SKYCRAWL_AZURE_MANAGED_IDENTITY_CLIENT_ID": (
            azure.engine_identity_client_id or azure.managed_identity_client_id
        ),
    }
    if azure.bus == "servicebus":
        optional["SKYCRAWL_AZURE_SERVICEBUS_CONNECTION_STRING"] = azure.servicebus_connection_string
        optional["SKYCRAWL_AZURE_SERVICEBUS_NAMESPACE"] = azure.servicebus_namespace
    for name, value in optional.items():
        if value is not None:
            env[name] = value if isinstance(value, str) else value.get_secret_value()
    return env


def build_container_ports(settings: SkycrawlSettings) -> tuple[MessageBus, BlobStore]:
    """The bus and blob store an engine container uses, from its environment."""
    azure = AzureSettings()
    return message_bus(azure, SystemClock()), blob_store(azure)
