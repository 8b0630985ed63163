"""Container Instances and ARM adapters beyond the contract suites: the container group they
ask for, instance-view mapping, the tenant deployment and its teardown, and that
``tenant.json`` is the compiled form of ``tenant.bicep``."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables.aio import TableServiceClient
from azure.mgmt.containerinstance.models import (
    Container,
    ContainerGroup,
    ContainerGroupPropertiesInstanceView,
    ContainerPropertiesInstanceView,
    ContainerState,
)

from adapters.azure.container_runtime import ContainerInstancesRuntime, group_name, status_of
from adapters.azure.provisioner import ArmProvisioner, tenant_names
from adapters.azure.settings import DEFAULT_TENANT_TEMPLATE, AzureSettings
from adapters.azure.tenant_stores import TableTenantStores
from core.errors import ConfigurationError, InvalidRequest, Retryable
from core.layout import tenant_topic
from core.models import Egress
from core.ports import ContainerSpec, RunState
from tests.integration.azure.azurite import azurite
from tests.integration.azure.fakes_mgmt import (
    FakeContainerInstanceClient,
    FakeResourceManagementClient,
)

RG = "/subscriptions/sub-1/resourceGroups/rg"
ACCOUNT = f"{RG}/providers/Microsoft.Storage/storageAccounts/skycrawlsa"
NAMESPACE = f"{RG}/providers/Microsoft.ServiceBus/namespaces/skycrawlns"


EGRESS = Egress(name="eu-west", region="westeurope", proxy_url="http://proxy:3128")


def settings(**overrides: Any) -> AzureSettings:
    values: dict[str, Any] = {
        "subscription_id": "sub-1",
        "resource_group": "rg",
        "storage_account": "skycrawlsa",
        "location": "northeurope",
    }
    return AzureSettings(**(values | overrides))


# --------------------------------------------------------------------------- container instances


async def test_the_container_group_asked_for(tmp_path: Path) -> None:
    client = FakeContainerInstanceClient(script="import time; time.sleep(30)", log_dir=tmp_path)
    runtime = ContainerInstancesRuntime(
        client,  # type: ignore[arg-type]
        settings(
            engine_identity_id="/subscriptions/sub-1/.../userAssignedIdentities/engine",
            registry_server="myacr.azurecr.io",
            engine_subnet_id="/subscriptions/sub-1/.../subnets/engines",
        ),
        default_image="myacr.azurecr.io/skycrawl-engine:1",
    )
    spec = ContainerSpec(
        "g-1", "tn_1", EGRESS, env={"SKYCRAWL_AZURE_STORAGE_CONNECTION_STRING": "s"}
    )
    try:
        await runtime.start_container(spec=spec)
        await runtime.start_container(spec=spec)  # running: a no-op
        assert len(client.container_groups.groups) == 1
        group = client.container_groups.groups[("rg", group_name("g-1"))].model
        assert (group.restart_policy, group.os_type, group.location) == (
            "Never",
            "Linux",
            "westeurope",
        )
        assert group.tags == {
            "skycrawl": "engine",
            "skycrawl-tenant": "tn_1",
            "skycrawl-egress": "eu-west",
        }
        engine = group.containers[0]
        assert engine.image == "myacr.azurecr.io/skycrawl-engine:1"
        env = {v.name: v for v in engine.environment_variables}
        assert all(v.value is None and v.secure_value for v in env.values())  # secure only
        assert env["SKYCRAWL_PROXY_URL"].secure_value == "http://proxy:3128"
        assert env["SKYCRAWL_CONTAINER_ID"].secure_value == "g-1"
        assert group.identity.type == "UserAssigned"
        assert group.image_registry_credentials[0].identity.endswith("/engine")
        assert group.subnet_ids[0].id.endswith("/engines")
        assert [s.container_id for s in await runtime.list_running(egress=EGRESS)] == ["g-1"]
        await runtime.stop_container(container_id="g-1", egress=EGRESS, grace_s=2)
        assert client.container_groups.groups == {}  # deleted on stop
        assert (await runtime.describe(container_id="g-1", egress=EGRESS)).state is RunState.exited
    finally:
        client.kill_all()
    fresh = ContainerInstancesRuntime(client, settings())  # type: ignore[arg-type]
    assert (await fresh.describe(container_id="g-1", egress=EGRESS)).state is RunState.unknown
    with pytest.raises(InvalidRequest):
        await fresh.describe(container_id="../etc", egress=EGRESS)


def _group(
    container_state: str | None, group_state: str | None, provisioning: str
) -> ContainerGroup:
    container = Container(name="engine", image="i", resources=None)
    if container_state is not None:
        container.instance_view = ContainerPropertiesInstanceView()
        current = ContainerState()
        current.state, current.exit_code, current.detail_status = container_state, 2, "d"
        container.instance_view.current_state = current
    group = ContainerGroup(containers=[container], os_type="Linux")
    group.provisioning_state = provisioning
    if group_state is not None:
        group.instance_view = ContainerGroupPropertiesInstanceView()
        group.instance_view.state = group_state
    return group


@pytest.mark.parametrize(
    ("container_state", "group_state", "provisioning", "expected", "code"),
    [
        (None, None, "Creating", RunState.pending, None),
        ("Waiting", "Pending", "Succeeded", RunState.pending, None),
        ("Running", "Running", "Succeeded", RunState.running, None),
        ("Terminated", "Succeeded", "Succeeded", RunState.exited, 2),
        (None, None, "Failed", RunState.exited, None),
        (None, "Stopped", "Succeeded", RunState.exited, None),
    ],
)
def test_instance_views_map_to_run_states(
    container_state: str | None,
    group_state: str | None,
    provisioning: str,
    expected: RunState,
    code: int | None,
) -> None:
    status = status_of("g", _group(container_state, group_state, provisioning))
    assert (status.state, status.exit_code) == (expected, code)


# --------------------------------------------------------------------------- ARM


async def test_tenant_deployment_outputs_and_teardown() -> None:
    client = FakeResourceManagementClient(subscription_id="sub-1", existing=[ACCOUNT])
    provisioner = ArmProvisioner(client, settings())  # type: ignore[arg-type]
    resources = await provisioner.provision(tenant_id="tn_0123456789abcdef")
    # pooled tenant data (no stores): no table of the tenant's own is deployed
    assert not {"table", "table_id", "tenant_store"} & set(resources)
    assert not [rid for rid in client.resources.items if "/tableServices/" in rid]
    topic = tenant_topic("skycrawl-dispatch", "tn_0123456789abcdef")
    assert resources["dispatch_topic"] == topic
    poison = f"{ACCOUNT}/queueServices/default/queues/{topic}-poison"
    assert resources["dispatch_dead_letter_id"] == poison  # the Storage-queue bus's topic
    assert re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}", resources["container"])
    assert client.exists(resources["container_id"])

    await provisioner.teardown(tenant_id="tn_0123456789abcdef", resources={"x_id": ACCOUNT})
    assert client.exists(ACCOUNT)  # only what the deployment created was deleted
    assert not any(client.exists(v) for k, v in resources.items() if k.endswith("_id") and v)


async def test_dedicated_tenant_data_deploys_the_tenants_table() -> None:
    """With tenant stores the deployment makes the tenant's table (and the data plane has it:
    Azurite here); teardown deletes it in both places."""
    client = FakeResourceManagementClient(subscription_id="sub-1", existing=[ACCOUNT])
    service = TableServiceClient.from_connection_string(azurite().connection_string)
    stores = TableTenantStores(service)
    provisioner = ArmProvisioner(client, settings(), stores=stores)  # type: ignore[arg-type]
    tenant = "tn_0123456789abcdee"
    try:
        resources = await provisioner.provision(tenant_id=tenant)
        name = tenant_names(tenant)["table"]
        assert resources["table"] == resources["tenant_store"] == name
        assert re.fullmatch(r"[a-z][a-z0-9]{2,62}", name)
        assert resources["table_id"].endswith(f"/tableServices/default/tables/{name}")
        assert client.exists(resources["table_id"])
        assert name in {t.name async for t in service.list_tables()}

        await provisioner.teardown(tenant_id=tenant, resources=resources)
        assert not client.exists(resources["table_id"])
        assert name not in {t.name async for t in service.list_tables()}
    finally:
        await provisioner.close()
        await stores.close()


async def test_a_service_bus_namespace_gets_the_tenant_dispatch_topic() -> None:
    client = FakeResourceManagementClient(subscription_id="sub-1", existing=[ACCOUNT, NAMESPACE])
    provisioner = ArmProvisioner(
        client,  # type: ignore[arg-type]
        settings(tenant_servicebus_namespace="skycrawlns"),
    )
    resources = await provisioner.provision(tenant_id="tenant-a")
    assert resources["dispatch_topic"] == "skycrawl-dispatch-tenant-a"
    assert resources["dispatch_topic_id"] == f"{NAMESPACE}/topics/skycrawl-dispatch-tenant-a"
    dead_letters = f"{NAMESPACE}/queues/skycrawl-dispatch-tenant-a-dlq"
    assert resources["dispatch_dead_letter_id"] == dead_letters
    assert client.exists(resources["dispatch_topic_id"])
    assert client.exists(dead_letters)


async def test_arm_errors_are_translated() -> None:
    client = FakeResourceManagementClient(subscription_id="sub-1")  # no storage account
    provisioner = ArmProvisioner(client, settings())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ParentResourceNotFound"):
        await provisioner.provision(tenant_id="tenant-a")

    class Throttled:
        async def begin_create_or_update_by_id(self, *args: Any, **kwargs: Any) -> None:
            error = HttpResponseError("too many requests")
            error.status_code = 429
            raise error

    client.resources = Throttled()  # type: ignore[assignment]
    with pytest.raises(Retryable):
        await provisioner.provision(tenant_id="tenant-a")
    with pytest.raises(ConfigurationError):
        ArmProvisioner(client, settings(tenant_template=Path("/nonexistent.json")))  # type: ignore[arg-type]


def test_tenant_json_is_the_compiled_tenant_bicep() -> None:
    template = json.loads(DEFAULT_TENANT_TEMPLATE.read_text())
    bicep = DEFAULT_TENANT_TEMPLATE.with_suffix(".bicep").read_text()
    params = re.findall(r"^param (\w+) ", bicep, re.MULTILINE)
    outputs = re.findall(r"^output (\w+) ", bicep, re.MULTILINE)
    created = re.findall(r"^resource \w+ '([\w./]+)@([\d-]+)' = ", bicep, re.MULTILINE)
    assert list(template["parameters"]) == params
    assert list(template["outputs"]) == outputs
    assert [(r["type"], r["apiVersion"]) for r in template["resources"]] == created
    defaults = re.findall(r"^param (\w+) \w+ = ", bicep, re.MULTILINE)
    assert [p for p, spec in template["parameters"].items() if "defaultValue" in spec] == defaults


def test_main_bicep_declares_what_the_function_app_reads() -> None:
    main = (DEFAULT_TENANT_TEMPLATE.parent / "main.bicep").read_text()
    app = (Path(__file__).parents[3] / "functions" / "azure" / "function_app.py").read_text()
    for setting in [*re.findall(r"%(\w+)%", app), "SKYCRAWL_SERVICEBUS", "SKYCRAWL_STORAGE"]:
        assert setting in main, setting
    assert sys.version_info >= (3, 11)
