"""What a tenant's deployment (deploy/azure/tenant.json, on the Resource Manager fake) grants
the engine identity, evaluated: Data Owner on the tenant's own topic, Sender on its own
dead-letter queue, nothing on another tenant's topic, the inbox, or the storage account.

The role assignments are what ARM would store (scope, role, principal); an assignment
applies to its scope and everything below it, as Azure RBAC does (``grants``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.azure.provisioner import ArmProvisioner
from adapters.azure.settings import AzureSettings
from core.layout import tenant_topic
from tests.integration.azure.fakes_mgmt import FakeResourceManagementClient

SUB, GROUP, ENGINE = "sub-1", "rg-1", "11111111-2222-3333-4444-555555555555"
RG = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers"
ACCOUNT = f"{RG}/Microsoft.Storage/storageAccounts/sa"
NAMESPACE = f"{RG}/Microsoft.ServiceBus/namespaces/ns"
OWNER, SENDER = "090c5cfd-751d-490a-894a-3ce6f1109419", "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"
A, B = "tn_" + "a" * 32, "tn_" + "b" * 32


def grants(assignments: Sequence[dict[str, Any]], principal: str, role: str, target: str) -> bool:
    """Whether ``principal`` holds ``role`` on ``target`` (directly or on a parent scope)."""
    return any(
        a["principalId"] == principal
        and a["roleDefinitionId"].endswith(f"/{role}")
        and (
            target.lower() == a["scope"].lower()
            or target.lower().startswith(f"{a['scope'].lower()}/")
        )
        for a in assignments
    )


async def test_the_engine_gets_each_tenants_topic_and_nothing_wider() -> None:
    client = FakeResourceManagementClient(subscription_id=SUB, existing=[ACCOUNT, NAMESPACE])
    settings = AzureSettings(
        subscription_id=SUB,
        resource_group=GROUP,
        storage_account="sa",
        tenant_servicebus_namespace="ns",
        engine_identity_principal_id=ENGINE,
    )
    provisioner = ArmProvisioner(client, settings)  # type: ignore[arg-type]
    a = await provisioner.provision(tenant_id=A)
    assignments = client.role_assignments()
    topic_a = f"{NAMESPACE}/topics/{tenant_topic('skycrawl-dispatch', A)}"
    topic_b = f"{NAMESPACE}/topics/{tenant_topic('skycrawl-dispatch', B)}"
    assert a["dispatch_topic_id"] == topic_a
    assert grants(assignments, ENGINE, OWNER, topic_a)
    assert grants(assignments, ENGINE, OWNER, f"{topic_a}/subscriptions/container-g1")
    assert grants(assignments, ENGINE, SENDER, a["dispatch_dead_letter_id"])
    for elsewhere in (topic_b, NAMESPACE, f"{NAMESPACE}/queues/skycrawl-inbox", ACCOUNT):
        assert not grants(assignments, ENGINE, OWNER, elsewhere), elsewhere
        assert not grants(assignments, ENGINE, SENDER, elsewhere), elsewhere
    assert {x["scope"] for x in assignments} == {topic_a, a["dispatch_dead_letter_id"]}

    await provisioner.provision(tenant_id=B)
    assert grants(client.role_assignments(), ENGINE, OWNER, topic_b)
    await provisioner.teardown(tenant_id=A, resources=a)  # A's grants go with A's topic
    left = client.role_assignments()
    assert not grants(left, ENGINE, OWNER, topic_a)
    assert grants(left, ENGINE, OWNER, topic_b)


async def test_without_an_engine_principal_nothing_is_granted() -> None:
    client = FakeResourceManagementClient(subscription_id=SUB, existing=[ACCOUNT, NAMESPACE])
    settings = AzureSettings(
        subscription_id=SUB,
        resource_group=GROUP,
        storage_account="sa",
        tenant_servicebus_namespace="ns",
    )
    await ArmProvisioner(client, settings).provision(tenant_id=A)  # type: ignore[arg-type]
    assert client.role_assignments() == []
