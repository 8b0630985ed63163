"""The Azure composition: settings, ``build_ports`` / ``engine_env`` / ``build_container_ports``,
the function app's request/response mapping and trigger registration."""

from __future__ import annotations

import importlib
import json
import uuid
from pathlib import Path

import azure.functions as func
import pytest
from azure.data.tables.aio import TableServiceClient

from adapters import load_provider
from adapters.azure import provider
from adapters.azure.blob_store import BlobStorageBlobStore
from adapters.azure.message_bus import ServiceBusMessageBus
from adapters.azure.message_bus_storage_queue import StorageQueueMessageBus
from adapters.azure.scheduler import ServiceBusScheduler, StorageQueueScheduler
from adapters.azure.settings import AzureSettings
from adapters.azure.state_store import TableStateStore
from core.api import ApiResponse
from core.errors import ConfigurationError
from core.models import Egress
from core.ports import ContainerSpec
from core.settings import SkycrawlSettings
from functions.azure import function_app
from tests.integration.azure.azurite import KEY, azurite
from tests.integration.azure.fakes_mgmt import FakeResourceManagementClient

SERVICEBUS = (
    "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0"
)
STORAGE = f"DefaultEndpointsProtocol=https;AccountName=example;AccountKey={KEY}"


def test_every_setting_is_documented() -> None:
    missing = [n for n, f in AzureSettings.model_fields.items() if not f.description]
    assert missing == []


async def test_build_ports_wires_the_configured_adapters() -> None:
    ports = provider.build_ports(
        SkycrawlSettings(provider="azure"),
        AzureSettings(servicebus_connection_string=SERVICEBUS, storage_connection_string=STORAGE),
    )
    try:
        assert isinstance(ports.bus, ServiceBusMessageBus)
        assert isinstance(ports.scheduler, ServiceBusScheduler)
        assert isinstance(ports.state, TableStateStore)
        assert isinstance(ports.blobs, BlobStorageBlobStore)
        spec = ContainerSpec("g", "t", Egress(name="local"))
        with pytest.raises(ConfigurationError, match="SUBSCRIPTION_ID"):
            await ports.runtime_for(spec.egress).start_container(spec=spec)
        with pytest.raises(ConfigurationError, match="SUBSCRIPTION_ID"):
            await ports.provisioner.provision(tenant_id="t")
    finally:
        await ports.close()

    queues = provider.build_ports(
        SkycrawlSettings(provider="azure"),
        AzureSettings(bus="storage-queue", storage_connection_string=STORAGE),
    )
    assert isinstance(queues.bus, StorageQueueMessageBus)
    assert isinstance(queues.scheduler, StorageQueueScheduler)
    await queues.close()


async def test_dedicated_tenant_data_goes_to_the_tenants_own_table() -> None:
    """SKYCRAWL_TENANT_DATA=dedicated, on Azurite and the Resource Manager fake: the tenant's
    deployment and the data plane get its table, the state the core is given puts its crawls
    there (nothing of the control plane), teardown deletes the table."""
    conn = azurite().connection_string
    account = (
        "/subscriptions/sub-1/resourceGroups/rg-skycrawl/providers/"
        "Microsoft.Storage/storageAccounts/skycrawlsa"
    )
    azure = AzureSettings(
        bus="storage-queue",
        storage_connection_string=conn,
        subscription_id="sub-1",
        resource_group="rg-skycrawl",
        storage_account="skycrawlsa",
        state_table=f"state{uuid.uuid4().hex[:12]}",
    )
    arm = FakeResourceManagementClient(subscription_id="sub-1", existing=[account])
    settings = SkycrawlSettings(provider="azure", tenant_data="dedicated")
    ports = provider.build_ports(settings, azure, arm=arm)  # type: ignore[arg-type]
    tenant = f"tn_{uuid.uuid4().hex}"
    service = TableServiceClient.from_connection_string(conn)
    try:
        resources = await ports.provisioner.provision(tenant_id=tenant)
        table = resources["tenant_store"]
        await ports.state.create(table="crawls", partition=tenant, key="c1", data={"n": 1})
        await ports.state.create(table="containers", partition=tenant, key="g1", data={})
        own = [e async for e in service.get_table_client(table).list_entities()]
        assert [(e["PartitionKey"], e["RowKey"]) for e in own] == [(f"crawls|{tenant}", "c1")]
        shared = service.get_table_client(azure.state_table).list_entities()
        assert [e["PartitionKey"] async for e in shared] == [f"containers|{tenant}"]

        await ports.provisioner.teardown(tenant_id=tenant, resources=resources)
        assert table not in {t.name async for t in service.list_tables()}
        assert not arm.exists(resources["table_id"])
    finally:
        await ports.close()
        await service.delete_table(azure.state_table)
        await service.close()


def test_missing_connection_settings_say_what_to_set() -> None:
    with pytest.raises(ConfigurationError, match="SERVICEBUS"):
        provider.build_ports(SkycrawlSettings(), AzureSettings(storage_connection_string=STORAGE))
    with pytest.raises(ConfigurationError, match="STORAGE"):
        provider.blob_store(AzureSettings())


def test_engine_env_carries_what_the_engine_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    azure = AzureSettings(
        bus="storage-queue",
        storage_connection_string=STORAGE,
        servicebus_connection_string=SERVICEBUS,
        managed_identity_client_id="control-id",
        engine_identity_client_id="engine-id",
        blob_container="results",
    )
    env = provider.engine_env(azure)
    assert env["SKYCRAWL_PROVIDER"] == "azure"
    assert env["SKYCRAWL_AZURE_STORAGE_CONNECTION_STRING"] == STORAGE
    assert env["SKYCRAWL_AZURE_MANAGED_IDENTITY_CLIENT_ID"] == "engine-id"
    assert "SKYCRAWL_AZURE_SERVICEBUS_CONNECTION_STRING" not in env  # not its bus
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_provider("azure") is provider
    bus, blobs = provider.build_container_ports(SkycrawlSettings())
    assert isinstance(bus, StorageQueueMessageBus)
    assert isinstance(blobs, BlobStorageBlobStore)
    assert blobs.container.container_name == "results"


def test_http_request_and_response_mapping() -> None:
    request = func.HttpRequest(
        method="post",
        url="https://app.azurewebsites.net/v1/crawls%2Fx?limit=5",
        headers={"Authorization": "Bearer k", "X-Thing": "1"},
        params={"limit": "5"},
        route_params={"path": "v1/crawls/x"},
        body=b'{"a": 1}',
    )
    mapped = function_app.to_api_request(request)
    assert (mapped.method, mapped.path, dict(mapped.query)) == (
        "POST",
        "/v1/crawls/x",
        {"limit": "5"},
    )
    assert mapped.header("authorization") == "Bearer k"
    assert mapped.body == b'{"a": 1}'
    unrouted = func.HttpRequest(method="GET", url="https://h/v1/a%20b", body=b"")
    assert function_app.to_api_request(unrouted).path == "/v1/a b"

    response = function_app.to_http_response(
        ApiResponse.json(429, {"title": "slow down"}, headers={"retry-after": "30"})
    )
    assert response.status_code == 429
    assert response.mimetype == "application/json"
    assert response.headers["retry-after"] == "30"
    assert json.loads(response.get_body()) == {"title": "slow down"}


@pytest.mark.parametrize(
    ("bus", "trigger"), [("servicebus", "serviceBusTrigger"), ("storage-queue", "queueTrigger")]
)
def test_the_inbox_trigger_follows_the_bus_setting(
    monkeypatch: pytest.MonkeyPatch, bus: str, trigger: str
) -> None:
    monkeypatch.setenv("SKYCRAWL_AZURE_BUS", bus)
    module = importlib.reload(function_app)
    try:
        functions = {f.get_function_name(): f for f in module.app.get_functions()}
        assert set(functions) == {"api", "inbox", "housekeeping"}
        bindings = json.loads(functions["inbox"].get_function_json())["bindings"]
        assert bindings[0]["type"] == trigger
        assert bindings[0]["queueName"] == "%SKYCRAWL_INBOX_QUEUE%"
        http = json.loads(functions["api"].get_function_json())["bindings"][0]
        assert (http["route"], http["authLevel"]) == ("{*path}", "ANONYMOUS")
    finally:
        monkeypatch.delenv("SKYCRAWL_AZURE_BUS")
        importlib.reload(function_app)


def test_host_json_serves_the_api_at_the_root_and_reads_raw_queue_text() -> None:
    host = json.loads((Path(function_app.__file__).parent / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == ""
    assert host["extensions"]["queues"]["messageEncoding"] == "none"
    requirements = (Path(function_app.__file__).parent / "requirements.txt").read_text()
    assert "boto3" not in requirements
    assert "google" not in requirements
