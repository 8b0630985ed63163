"""The conductor and real engine workers over ``ServiceBusMessageBus`` (on the fake namespace,
wall clock) with Table and Blob storage on Azurite: handshake on a correlation-filtered
subscription, dispatch, completion, the kill timer as a Service Bus scheduled message, and
the subscription deleted when the container stops.

Engines are ``engine_container.worker.Worker`` instances running in this process (the fake
namespace lives here), with a stand-in crawl; the subprocess story is in
``tests/e2e/test_azure_story.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from azure.data.tables.aio import TableClient
from azure.storage.blob.aio import ContainerClient

from adapters.azure.blob_store import BlobStorageBlobStore
from adapters.azure.message_bus import RULE_NAME, ServiceBusMessageBus
from adapters.azure.provisioner import ArmProvisioner
from adapters.azure.scheduler import ServiceBusScheduler
from adapters.azure.settings import AzureSettings
from adapters.azure.state_store import TableStateStore
from core.api import Api, ApiRequest
from core.clock import SystemClock
from core.conductor import Conductor
from core.inbox import drain_inbox
from core.layout import tenant_topic
from core.messages import RunCrawl
from core.models import ContainerState, CrawlCounts, Egress, Quotas, TenantCreate
from core.ports import (
    ContainerSpec,
    ContainerStatus,
    MessageBus,
    Ports,
    RunState,
    RuntimeCapabilities,
)
from core.records import Records
from core.settings import SkycrawlSettings
from core.tenancy import TenantService
from engine_container.bus_crawl import Reporter
from engine_container.settings import EngineSettings
from engine_container.worker import Worker
from tests.integration.azure.fakes import FakeServiceBusClient, FakeServiceBusNamespace
from tests.integration.azure.fakes_admin import FakeAdministrationClient
from tests.integration.azure.fakes_mgmt import FakeResourceManagementClient


def bus_on(namespace: FakeServiceBusNamespace) -> ServiceBusMessageBus:
    return ServiceBusMessageBus(
        FakeServiceBusClient(namespace),  # type: ignore[arg-type]
        FakeAdministrationClient(namespace),  # type: ignore[arg-type]
        lock_duration_s=5.0,
        min_wait_s=0.05,
    )


async def pretend_to_crawl(
    run: RunCrawl, report: Reporter, pause: asyncio.Event | None = None
) -> CrawlCounts:
    await report(CrawlCounts(queued=2, fetched=1))
    await asyncio.sleep(0.2)
    return CrawlCounts(fetched=3)


@dataclass
class WorkerRuntime:
    """Starts ``Worker``s in this process, each on its own bus client."""

    namespace: FakeServiceBusNamespace
    settings: SkycrawlSettings
    capabilities: RuntimeCapabilities = field(
        default_factory=lambda: RuntimeCapabilities("in-process", 0.1, 10)
    )
    running: dict[str, tuple[asyncio.Event, asyncio.Task[int]]] = field(default_factory=dict)

    async def start_container(self, *, spec: ContainerSpec) -> None:
        engine = EngineSettings(
            container_id=spec.container_id,
            tenant_id=spec.tenant_id,
            capacity=int(spec.env["SKYCRAWL_CAPACITY"]),
            heartbeat_interval_s=0.5,
        )
        worker = Worker(
            bus=bus_on(self.namespace),
            engine=engine,
            control=self.settings.model_copy(  # as the engine reads its environment
                update={"dispatch_topic": spec.env["SKYCRAWL_DISPATCH_TOPIC"]}
            ),
            run_crawl=pretend_to_crawl,
        )
        stop = asyncio.Event()
        self.running[spec.container_id] = (stop, asyncio.create_task(worker.run(stop)))

    async def stop_container(
        self, *, container_id: str, egress: Egress | None = None, grace_s: float = 10
    ) -> None:
        if container_id in self.running:
            stop, task = self.running[container_id]
            stop.set()
            await asyncio.wait_for(asyncio.shield(task), grace_s)

    async def describe(self, *, container_id: str, egress: Egress | None = None) -> ContainerStatus:
        if container_id not in self.running:
            return ContainerStatus(container_id, RunState.unknown)
        task = self.running[container_id][1]
        if task.done():
            return ContainerStatus(container_id, RunState.exited, task.result())
        return ContainerStatus(container_id, RunState.running)

    async def list_running(self, *, egress: Egress | None = None) -> list[ContainerStatus]:
        statuses = [await self.describe(container_id=cid) for cid in self.running]
        return [s for s in statuses if s.state is RunState.running]

    async def close(self) -> None:
        for cid in list(self.running):
            with contextlib.suppress(Exception):
                await self.stop_container(container_id=cid)


@pytest.fixture
async def story(connection_string: str) -> AsyncIterator[tuple[Api, Conductor, Records]]:
    namespace = FakeServiceBusNamespace(SystemClock())
    tag = uuid.uuid4().hex[:8]
    settings = SkycrawlSettings(
        provider="azure",
        inbox_queue=f"inbox-{tag}",
        dispatch_topic=f"dispatch-{tag}",
        allow_cidrs=["127.0.0.0/8"],
        idle_ttl_s=1.0,
        heartbeat_interval_s=0.5,
    )
    bus = bus_on(namespace)
    state = TableStateStore(
        TableClient.from_connection_string(connection_string, table_name=f"state{tag}")
    )
    blobs = BlobStorageBlobStore(
        ContainerClient.from_connection_string(connection_string, f"results-{tag}")
    )
    runtime = WorkerRuntime(namespace, settings)
    provisioner = _provisioner(bus, settings.dispatch_topic)
    runtimes = {egress.name: runtime for egress in settings.egresses}
    ports = Ports(bus, ServiceBusScheduler(bus), state, blobs, runtimes, provisioner, SystemClock())
    records = Records(state)
    conductor = Conductor(ports=ports, settings=settings, engine_env={}, records=records)
    tenants = TenantService(
        records, provisioner, bus, blobs, ports.runtime_for, ports.clock, settings
    )
    api = Api(
        records=records, tenants=tenants, bus=bus, blobs=blobs, clock=ports.clock, settings=settings
    )
    await bus.ensure_queue(name=settings.inbox_queue)
    stop = asyncio.Event()

    async def host() -> None:  # the Service Bus queue trigger
        while not stop.is_set():
            await drain_inbox(conductor, bus, queue=settings.inbox_queue, wait_s=0.2)

    task = asyncio.create_task(host())
    try:
        yield api, conductor, records
    finally:
        stop.set()
        await task
        await ports.close()
        for topic, subscriptions in namespace.topics.items():  # no leaked subscription
            assert subscriptions == {}, topic


def _provisioner(bus: MessageBus, dispatch_topic: str) -> ArmProvisioner:
    account = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa"
    client = FakeResourceManagementClient(subscription_id="s", existing=[account])
    settings = AzureSettings(subscription_id="s", resource_group="rg", storage_account="sa")
    return ArmProvisioner(client, settings, bus=bus, dispatch_topic=dispatch_topic)  # type: ignore[arg-type]


async def test_crawl_over_service_bus_then_idle_stop(
    story: tuple[Api, Conductor, Records],
) -> None:
    api, conductor, records = story
    tenants = TenantService(
        records,
        conductor.ports.provisioner,
        conductor.ports.bus,
        conductor.ports.blobs,
        conductor.ports.runtime_for,
        conductor.ports.clock,
        conductor.settings,
    )
    tenant, key = await tenants.create(
        TenantCreate(name="fabrikam", quotas=Quotas(max_containers=1))
    )
    body = b'{"seeds": ["http://127.0.0.1:9/"], "max_pages": 5}'
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    submitted = await api.handle(ApiRequest("POST", "/v1/crawls", headers=headers, body=body))
    assert submitted.status == 202, submitted.body
    crawl_id = submitted.parsed()["id"]

    namespace = conductor.ports.bus.client.namespace  # type: ignore[attr-defined]
    topic = tenant_topic(conductor.settings.dispatch_topic, tenant.id)  # the tenant's own
    for _ in range(100):
        crawl = await records.crawls.get(tenant.id, crawl_id)
        if crawl is not None and crawl.value.state.terminal:
            break
        subscriptions = namespace.topics[topic]
        for subscription in subscriptions.values():  # only the correlation rule, ever seen
            assert list(subscription.rules) in ([RULE_NAME], [])
        await asyncio.sleep(0.1)
    assert crawl is not None
    assert (crawl.value.state.value, crawl.value.counts.fetched) == ("completed", 3)

    containers = await records.containers.query(tenant.id)
    guid = containers[0].value.id
    for _ in range(60):  # idle_ttl 1 s, then the scheduled kill message
        container = await records.containers.get(tenant.id, guid)
        if container is not None and container.value.state is ContainerState.stopped:
            break
        await asyncio.sleep(0.1)
    assert container is not None
    assert (container.value.state, container.value.reason) == (ContainerState.stopped, "idle")
    assert namespace.topics[topic] == {}
