"""Tenant A's crawler containers on Azure run as A's own managed identity, which the tenant's
deployment (deploy/azure/tenant.json, on the Resource Manager fake) creates with its role
assignments: they may use A's topic, A's blobs in the results container and send to the
inbox -- and nothing of tenant B or of the control plane.

No emulator enforces Azure RBAC, so the role assignments ARM would store (scope, role,
principal, ABAC condition) are evaluated (``rbac_policy``): A on B's resources is denied, A
on its own allowed. The custom blob role is the one main.bicep defines.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest

from adapters.azure.container_runtime import ContainerInstancesRuntime, group_name
from adapters.azure.provisioner import ArmProvisioner
from adapters.azure.settings import AzureSettings
from core.layout import tenant_topic
from core.models import Egress
from core.ports.container_runtime import ContainerSpec
from tests.integration.azure.fakes_mgmt import (
    FakeContainerInstanceClient,
    FakeResourceManagementClient,
)
from tests.integration.azure.rbac_policy import BUILT_IN, Request, Role, allowed

SUB, GROUP = "sub-1", "rg-1"
RG = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers"
ACCOUNT = f"{RG}/Microsoft.Storage/storageAccounts/sa"
NAMESPACE = f"{RG}/Microsoft.ServiceBus/namespaces/ns"
RESULTS = f"{ACCOUNT}/blobServices/default/containers/skycrawl"
RELEASES = f"{ACCOUNT}/blobServices/default/containers/function-releases"
INBOX = f"{NAMESPACE}/queues/skycrawl-inbox"
BLOB_ROLE = "6b1e3c52-0000-4000-8000-000000000001"  # main.bicep's engineBlobDataRole
A, B = "tn_" + "a" * 32, "tn_" + "b" * 32
MAIN = Path(__file__).resolve().parents[3] / "deploy" / "azure" / "main.bicep"
BLOBS = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
SB = "Microsoft.ServiceBus/namespaces"


def _main_blob_role() -> Role:
    """main.bicep's engineBlobDataRole, as deployed."""
    block = re.search(r"^resource engineBlobDataRole .*?^\}", MAIN.read_text(), re.M | re.S)
    assert block is not None
    lists = {
        name: tuple(re.findall(r"'([^']+)'", body))
        for name, body in re.findall(r"(\w+): \[([^\[\]]*)\]", block.group())
    }
    assert lists["actions"] == ()
    assert lists["notDataActions"] == ()
    return Role(data_actions=lists["dataActions"])


ROLES = {**BUILT_IN, BLOB_ROLE: _main_blob_role()}


def _settings(**overrides: Any) -> AzureSettings:
    values: dict[str, Any] = {
        "subscription_id": SUB,
        "resource_group": GROUP,
        "storage_account": "sa",
        "tenant_servicebus_namespace": "ns",
        "tenant_blob_role_id": BLOB_ROLE,
    }
    return AzureSettings(**(values | overrides))


def _client() -> FakeResourceManagementClient:
    return FakeResourceManagementClient(subscription_id=SUB, existing=[ACCOUNT, NAMESPACE])


@functools.cache
def _deployed() -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    """Both tenants provisioned: every role assignment, and each tenant's resources."""
    import asyncio

    async def provision() -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
        client = _client()
        provisioner = ArmProvisioner(client, _settings())  # type: ignore[arg-type]
        made = {t: dict(await provisioner.provision(tenant_id=t)) for t in (A, B)}
        return client.role_assignments(), made

    return asyncio.run(provision())


def _principal(tenant: str) -> str:
    return _deployed()[1][tenant]["engine_identity_principal"]


def topic(tenant: str) -> str:
    return f"{NAMESPACE}/topics/{tenant_topic('skycrawl-dispatch', tenant)}"


def blob(tenant: str, key: str) -> tuple[str, dict[str, str]]:
    name = f"tenants/{tenant}/{key}"
    return f"{RESULTS}/blobs/{name}", {f"{BLOBS}:path": name}


def needs(tenant: str) -> list[Request]:
    """What a container of ``tenant`` does with its own tenant's resources."""
    sub = f"{topic(tenant)}/subscriptions/container-g1"
    checkpoint, at = blob(tenant, "crawls/c1/checkpoint.json")
    manifest, at_manifest = blob(tenant, "crawls/c1/manifest/00000000.jsonl")
    return [
        Request(f"{SB}/topics/subscriptions/write", sub),  # its filtered subscription
        Request(f"{SB}/topics/subscriptions/rules/write", f"{sub}/rules/own-guid"),
        Request(f"{SB}/messages/receive/action", sub),
        Request(f"{SB}/topics/subscriptions/delete", sub),  # removed when it stops
        Request(
            f"{SB}/messages/send/action",
            f"{NAMESPACE}/queues/{tenant_topic('skycrawl-dispatch', tenant)}-dlq",
        ),
        Request(f"{BLOBS}/write", manifest, attributes=at_manifest),
        Request(f"{BLOBS}/read", checkpoint, attributes=at),
        Request(f"{BLOBS}/delete", checkpoint, attributes=at),
        Request(
            f"{BLOBS}/read",
            RESULTS,
            sub_operation="Blob.List",
            attributes={f"{BLOBS}:prefix": f"tenants/{tenant}/crawls/c1/"},
        ),
    ]


@pytest.mark.parametrize("request_", needs(A), ids=lambda r: r.action.rsplit("/", 2)[-2])
def test_a_container_may_use_its_own_tenants_resources(request_: Request) -> None:
    assignments, _ = _deployed()
    assert allowed(assignments, _principal(A), request_, ROLES)


@pytest.mark.parametrize("request_", needs(B), ids=lambda r: r.action.rsplit("/", 2)[-2])
def test_a_container_of_a_may_not_touch_bs_topic_or_blobs(request_: Request) -> None:
    """Forged filters and guessed names do not help: B's topic refuses A's subscription and
    receive, B's path refuses A's reads, writes and listings."""
    assignments, _ = _deployed()
    assert not allowed(assignments, _principal(A), request_, ROLES)


def test_a_container_may_report_to_the_inbox_and_nothing_more_there() -> None:
    assignments, _ = _deployed()
    assert allowed(assignments, _principal(A), Request(f"{SB}/messages/send/action", INBOX), ROLES)
    assert not allowed(
        assignments, _principal(A), Request(f"{SB}/messages/receive/action", INBOX), ROLES
    )


@pytest.mark.parametrize(
    "request_",
    [
        Request(f"{SB}/messages/send/action", topic(B)),  # another tenant's work
        Request(f"{SB}/queues/write", f"{NAMESPACE}/queues/new"),
        Request(f"{SB}/topics/write", f"{NAMESPACE}/topics/guess"),
        Request(
            f"{BLOBS}/read", f"{RELEASES}/blobs/app.zip", attributes={f"{BLOBS}:path": "app.zip"}
        ),
        Request(
            f"{BLOBS}/write",
            f"{RESULTS}/blobs/bus-claims/x",
            attributes={f"{BLOBS}:path": "bus-claims/x"},
        ),
        Request(
            "Microsoft.Storage/storageAccounts/tableServices/tables/entities/read",
            f"{ACCOUNT}/tableServices/default/tables/skycrawlstate",
        ),
        Request("Microsoft.Storage/storageAccounts/blobServices/containers/delete", RESULTS),
        Request("Microsoft.Storage/storageAccounts/blobServices/containers/write", RESULTS),
        Request("Microsoft.Storage/storageAccounts/listKeys/action", ACCOUNT),
        Request(
            "Microsoft.ContainerInstance/containerGroups/write",
            f"{RG}/Microsoft.ContainerInstance/containerGroups/x",
        ),
        Request("Microsoft.Authorization/roleAssignments/write", f"{RG}/x"),
    ],
    ids=lambda r: r.action.split("/", 1)[1][:40],
)
def test_nothing_of_the_control_plane_is_in_reach(request_: Request) -> None:
    assignments, _ = _deployed()
    assert not allowed(assignments, _principal(A), request_, ROLES)


def test_data_owner_on_its_own_topic_lets_a_container_publish_there_too() -> None:
    """A remaining limit, within one tenant: creating a subscription takes Service Bus's
    Manage right (Data Owner), which includes sending to that topic; the containers drop
    messages not addressed to their own GUID (``container_id``), and nothing crosses tenants."""
    assignments, _ = _deployed()
    assert allowed(
        assignments, _principal(A), Request(f"{SB}/messages/send/action", topic(A)), ROLES
    )


def test_listing_outside_the_tenants_prefix_is_denied() -> None:
    assignments, _ = _deployed()
    for prefix in ("", "tenants/", f"tenants/{B}/", "tenants/tn_a", "bus-claims/"):
        request = Request(
            f"{BLOBS}/read",
            RESULTS,
            sub_operation="Blob.List",
            attributes={f"{BLOBS}:prefix": prefix},
        )
        assert not allowed(assignments, _principal(A), request, ROLES), prefix
    no_prefix = Request(f"{BLOBS}/read", RESULTS, sub_operation="Blob.List")
    assert not allowed(assignments, _principal(A), no_prefix, ROLES)


def test_with_the_built_in_blob_role_the_container_itself_is_exposed() -> None:
    """Why main.bicep defines its own blob role: Storage Blob Data Contributor carries
    control-plane actions that no path condition limits."""
    import asyncio

    client = _client()
    provisioner = ArmProvisioner(client, _settings(tenant_blob_role_id=None))  # type: ignore[arg-type]
    made = asyncio.run(provisioner.provision(tenant_id=A))
    delete = Request("Microsoft.Storage/storageAccounts/blobServices/containers/delete", RESULTS)
    principal = made["engine_identity_principal"]
    assert allowed(client.role_assignments(), principal, delete)
    _, at = blob(B, "crawls/c1/checkpoint.json")
    assert not allowed(
        client.role_assignments(),
        principal,
        Request(f"{BLOBS}/read", blob(B, "x")[0], attributes=at),
    )


async def test_teardown_removes_the_identity_and_its_role_assignments() -> None:
    client = _client()
    provisioner = ArmProvisioner(client, _settings())  # type: ignore[arg-type]
    a = await provisioner.provision(tenant_id=A)
    b = await provisioner.provision(tenant_id=B)
    assert await provisioner.provision(tenant_id=A) == a  # again: same identity, same grants
    assert client.exists(a["engine_identity_id"])
    mine = {x["principalId"] for x in client.role_assignments()}
    assert mine == {a["engine_identity_principal"], b["engine_identity_principal"]}
    await provisioner.teardown(tenant_id=A, resources=a)
    assert not client.exists(a["engine_identity_id"])
    assert {x["principalId"] for x in client.role_assignments()} == {b["engine_identity_principal"]}
    for key, value in a.items():
        if key.endswith("_role_id"):
            assert not client.exists(value), key


async def test_the_tenants_container_group_runs_as_the_tenants_identity(tmp_path: Path) -> None:
    shared = f"{RG}/Microsoft.ManagedIdentity/userAssignedIdentities/skycrawl-engine"
    client = _client()
    made = await ArmProvisioner(client, _settings()).provision(tenant_id=A)  # type: ignore[arg-type]
    aci = FakeContainerInstanceClient(script="import time; time.sleep(30)", log_dir=tmp_path)
    runtime = ContainerInstancesRuntime(
        aci,  # type: ignore[arg-type]
        _settings(engine_identity_id=shared, engine_identity_client_id="shared-client"),
    )
    egress = Egress(name="eu", runtime="azure")
    env = {"SKYCRAWL_AZURE_MANAGED_IDENTITY_CLIENT_ID": "shared-client"}  # engine_env's
    try:
        await runtime.start_container(spec=ContainerSpec("g-1", A, egress, env=env, resources=made))
        group = aci.container_groups.groups[(GROUP, group_name("g-1"))].model
        assert set(group.identity.user_assigned_identities) == {made["engine_identity_id"], shared}
        variables = {v.name: v.secure_value for v in group.containers[0].environment_variables}
        assert (
            variables["SKYCRAWL_AZURE_MANAGED_IDENTITY_CLIENT_ID"] == made["engine_identity_client"]
        )
    finally:
        aci.kill_all()


async def test_on_the_storage_queue_bus_the_queues_are_account_wide_the_blobs_are_not() -> None:
    """The remaining limit of that bus (README): its queues are named by a hash, so the
    tenant's identity gets every queue of the account; its blobs stay under its prefix."""
    client = _client()
    provisioner = ArmProvisioner(client, _settings(tenant_servicebus_namespace=None))  # type: ignore[arg-type]
    made = await provisioner.provision(tenant_id=A)
    principal, assignments = made["engine_identity_principal"], client.role_assignments()
    queue = f"{ACCOUNT}/queueServices/default/queues/sub-0a1b2c3d-container-g1"
    read = "Microsoft.Storage/storageAccounts/queueServices/queues/messages/read"
    contributor = Role(data_actions=("Microsoft.Storage/storageAccounts/queueServices/*",))
    roles = {**ROLES, "974c5e8b-45b9-4653-ba55-5f855dd0fb88": contributor}
    assert allowed(assignments, principal, Request(read, queue), roles)
    own, at_own = blob(A, "crawls/c1/checkpoint.json")
    other, at_other = blob(B, "crawls/c1/checkpoint.json")
    assert allowed(assignments, principal, Request(f"{BLOBS}/read", own, attributes=at_own), roles)
    assert not allowed(
        assignments, principal, Request(f"{BLOBS}/read", other, attributes=at_other), roles
    )
    await provisioner.teardown(tenant_id=A, resources=made)
    assert client.role_assignments() == []
