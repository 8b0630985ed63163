"""GcpProvisioner gives each tenant its service account and bindings, idempotently, and its
teardown leaves nothing of them: topics on the Pub/Sub emulator, accounts and policies on the
IAM fakes (``fake_iam``), the bucket policy on ``FakeGcsServer``, listed before and after."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.gcp.provider import GcpClients, tenant_iam
from adapters.gcp.provisioner import GcpProvisioner
from adapters.gcp.settings import GcpSettings
from adapters.gcp.tenant_iam import (
    ContainerSubscriptions,
    member,
    service_account_email,
    service_account_id,
)
from core.settings import SkycrawlSettings
from tests.integration.gcp.fake_iam import FakeIamAdmin
from tests.integration.gcp.iam_world import BUCKET, DISPATCH, INBOX, A, B, World, obj, open_world


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with open_world() as opened:
        yield opened


def provisioner(world: World) -> GcpProvisioner:
    return GcpProvisioner(
        admin=world.bus.admin,
        storage_client=world.gcs.client(world.project),
        bucket=BUCKET,
        dispatch_topic=DISPATCH,
        iam=world.iam,
    )


async def topics(world: World) -> set[str]:
    pager = await world.publisher.list_topics(project=f"projects/{world.project}")
    return {topic.name.rsplit("/", 1)[-1] async for topic in pager}


async def test_provisioning_creates_the_account_and_its_bindings_once(world: World) -> None:
    made = await provisioner(world).provision(tenant_id=A)
    assert made["engine_service_account"] == service_account_email(world.project, A)
    assert world.admin.calls == [("create_service_account", service_account_id(A))]
    written = {r for call, r in world.pubsub_iam.calls if call == "set_iam_policy"}
    assert written == {world.topic(INBOX), world.topic(f"{world.dispatch(A)}-dlq")}
    assert set(world.gcs.state.policies) == {BUCKET}  # the data bucket's, not the source's
    assert made["engine_service_account"] in world.admin.accounts
    assert world.may(A, "pubsub.topics.publish", world.topic(INBOX))
    assert world.may(A, "storage.objects.create", obj(f"tenants/{A}/crawls/c1/checkpoint.json"))
    assert not world.may(A, "storage.objects.create", obj(f"tenants/{B}/crawls/c1/x.json"))
    before = world.policies()
    assert await provisioner(world).provision(tenant_id=A) == made  # again: the same
    assert world.policies() == before
    assert len(world.admin.accounts) == 1


async def test_teardown_removes_the_account_its_bindings_and_topics_and_keeps_bs(
    world: World,
) -> None:
    base = await topics(world)
    p = provisioner(world)
    a = await p.provision(tenant_id=A)
    await p.provision(tenant_id=B)
    subscriptions = ContainerSubscriptions(admin=world.bus.admin, iam=world.iam)
    await subscriptions.prepare(tenant_id=A, container_id="g-1", topic=world.dispatch(A))
    assert world.may(A, "pubsub.subscriptions.consume", world.subscription("g-1"))
    assert await topics(world) - base == {
        world.dispatch(A),
        f"{world.dispatch(A)}-dlq",
        world.dispatch(B),
        f"{world.dispatch(B)}-dlq",
    }
    await p.teardown(tenant_id=A, resources=a)
    path = f"projects/{world.project}/serviceAccounts/{service_account_email(world.project, A)}"
    assert world.admin.calls[-1] == ("delete_service_account", path)
    await world.pubsub_iam.prune()
    assert await topics(world) - base == {world.dispatch(B), f"{world.dispatch(B)}-dlq"}
    assert set(world.admin.accounts) == {service_account_email(world.project, B)}
    who = member(world.project, A)
    for resource, bindings in world.policies().items():
        assert all(who not in b.members for b in bindings), resource
    assert world.may(B, "storage.objects.get", obj(f"tenants/{B}/x"))
    assert world.may(B, "pubsub.topics.publish", world.topic(INBOX))
    await p.teardown(tenant_id=A, resources=a)  # again: gone is fine


def test_the_provider_gives_identities_off_the_emulator_or_with_an_iam_client() -> None:
    settings = SkycrawlSettings()
    on_emulator = GcpSettings(project="p", bucket="b", pubsub_emulator_host="127.0.0.1:1")
    clients = GcpClients(publisher=object(), subscriber=object())  # type: ignore[arg-type]
    assert tenant_iam(settings, on_emulator, clients, object()) is None
    off = GcpSettings(project="p", bucket="b", tenant_identities=False)
    assert tenant_iam(settings, off, clients, object()) is None
    clients.iam = FakeIamAdmin()  # type: ignore[assignment]
    made = tenant_iam(settings, on_emulator, clients, object())
    assert made is not None
    assert made.email(A) == service_account_email("p", A)
