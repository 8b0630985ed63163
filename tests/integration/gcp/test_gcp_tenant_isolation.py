"""Tenant A's crawler containers on GCP run as A's own service account, which holds only
publish on the inbox (and on A's dead-letter topic), consume on each of A's container
subscriptions, and A's ``tenants/A/`` objects -- nothing of tenant B or of the control plane.

No emulator enforces IAM, so the policies written (topics and subscriptions on
``FakePubSubIam``, whose resources are the real Pub/Sub emulator's; the bucket's on
``FakeGcsServer``, through the real storage client) are evaluated (``gcp_iam_eval``): A on
B's resources is denied, A on its own allowed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest

from adapters.gcp.tenant_iam import (
    ContainerSubscriptions,
    member,
    service_account_email,
    service_account_id,
)
from core.errors import NotFound
from core.layout import subscription_name
from core.ports.message_bus import dead_letter_queue
from tests.integration.gcp.gcp_iam_eval import Binding, allowed
from tests.integration.gcp.iam_world import BUCKET, INBOX, A, B, World, obj, open_world


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with open_world() as opened:
        yield opened


async def provision(world: World, *tenants: str) -> None:
    """Each tenant's topic and grants, and one live container ``g-<tenant>`` each."""
    for tenant in tenants:
        await world.bus.admin.ensure_topic(world.dispatch(tenant))
        await world.iam.ensure(tenant_id=tenant)
        prepare = ContainerSubscriptions(admin=world.bus.admin, iam=world.iam)
        await prepare.prepare(
            tenant_id=tenant, container_id=f"g-{tenant}", topic=world.dispatch(tenant)
        )


def needs(world: World, tenant: str) -> list[tuple[str, str]]:
    """What a container of ``tenant`` does with its own tenant's resources."""
    crawl = f"tenants/{tenant}/crawls/c1/"
    return [
        ("pubsub.subscriptions.consume", world.subscription(f"g-{tenant}")),  # pull, ack
        ("pubsub.subscriptions.get", world.subscription(f"g-{tenant}")),  # its labels
        ("pubsub.topics.publish", world.topic(dead_letter_queue(world.dispatch(tenant)))),
        ("storage.objects.create", obj(f"{crawl}manifest/00000000.jsonl")),
        ("storage.objects.get", obj(f"{crawl}checkpoint.json")),
        ("storage.objects.delete", obj(f"{crawl}checkpoint.json")),
        ("storage.objects.update", obj(f"tenants/{tenant}/latest/x.json")),
    ]


@pytest.mark.parametrize("tenant", ["acme", "tn_" + "a" * 32, "A", "9-lives", "X" * 64, "a_b-C"])
def test_service_account_ids_are_valid_and_distinct(tenant: str) -> None:
    account = service_account_id(tenant)
    assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", account), account
    assert account != service_account_id(tenant[:-1] + ("y" if tenant[-1] != "y" else "z"))
    assert account != service_account_id(tenant.swapcase())  # ids are case-sensitive
    assert service_account_email("p1", tenant) == f"{account}@p1.iam.gserviceaccount.com"


async def test_a_container_may_use_its_own_tenants_resources(world: World) -> None:
    await provision(world, A, B)
    for permission, resource in needs(world, A):
        assert world.may(A, permission, resource), (permission, resource)
    assert world.may(A, "pubsub.topics.publish", world.topic(INBOX))  # ready, heartbeats
    assert world.may(A, "storage.objects.list", "projects/_/buckets/" + BUCKET)


async def test_a_container_of_a_may_not_touch_bs_subscriptions_topics_or_objects(
    world: World,
) -> None:
    """Guessed names do not help: B's subscription refuses A's pull, B's dead-letter topic
    A's publish, B's prefix A's reads and writes -- though A's id is a prefix of B's."""
    await provision(world, A, B)
    for permission, resource in needs(world, B):
        assert not world.may(A, permission, resource), (permission, resource)
        assert world.may(B, permission, resource), (permission, resource)


CONTROL_PLANE = [
    ("pubsub.topics.publish", "dispatch:A"),  # work goes only from the conductor
    ("pubsub.topics.publish", "dispatch:B"),
    ("pubsub.topics.attachSubscription", "dispatch:B"),  # a forged subscription on B
    ("pubsub.topics.attachSubscription", "dispatch:A"),
    ("pubsub.subscriptions.create", "project"),
    ("pubsub.subscriptions.consume", "inbox-subscription"),  # the conductor's queue
    ("pubsub.subscriptions.consume", "guessed-subscription"),
    ("datastore.entities.get", "project"),  # Firestore: the control plane's state
    ("datastore.entities.update", "project"),
    ("storage.objects.get", "object:bus-claims/x"),
    ("storage.objects.create", "object:tenants/x"),
    ("storage.objects.get", "source:function.zip"),  # the functions' code
    ("storage.objects.list", "source"),
    ("storage.buckets.setIamPolicy", "bucket"),
    ("storage.buckets.delete", "bucket"),
    ("storage.objects.setIamPolicy", "object:tenants/acme-corp/x"),
    ("run.jobs.run", "project"),
    ("iam.serviceAccounts.actAs", "project"),
]


async def test_nothing_of_the_control_plane_is_in_reach(world: World) -> None:
    await provision(world, A, B)
    where = {
        "dispatch:A": world.topic(world.dispatch(A)),
        "dispatch:B": world.topic(world.dispatch(B)),
        "project": f"projects/{world.project}",
        "inbox-subscription": f"projects/{world.project}/subscriptions/{INBOX}",
        "guessed-subscription": world.subscription("g-guess"),
        "source": "projects/_/buckets/skycrawl-source",
        "bucket": f"projects/_/buckets/{BUCKET}",
    }
    for permission, resource in CONTROL_PLANE:
        kind, _, key = resource.partition(":")
        target = where.get(resource) or (
            obj(key) if kind == "object" else obj(key, "skycrawl-source")
        )
        assert not world.may(A, permission, target), (permission, target)


async def test_listing_is_bucket_wide_but_reading_is_not(world: World) -> None:
    """The remaining limit (module docstring of ``tenant_iam``): list is checked on the
    bucket, where an object-prefix condition never holds; A may list names, never read B's."""
    await provision(world, A, B)
    assert world.may(A, "storage.objects.list", f"projects/_/buckets/{BUCKET}")
    assert not world.may(A, "storage.objects.get", obj(f"tenants/{B}/crawls/c1/checkpoint.json"))
    assert not world.may(A, "storage.objects.list", "projects/_/buckets/skycrawl-source")


async def test_granting_twice_changes_nothing(world: World) -> None:
    await provision(world, A)
    before = world.policies()
    writes = sum(1 for call, _ in world.pubsub_iam.calls if call == "set_iam_policy")
    generation = world.gcs.state.generation
    await world.iam.ensure(tenant_id=A)
    assert world.policies() == before
    assert sum(1 for call, _ in world.pubsub_iam.calls if call == "set_iam_policy") == writes
    assert world.gcs.state.generation == generation  # no bucket policy write either
    assert world.admin.calls.count(("create_service_account", service_account_id(A))) == 2


async def test_tenants_granted_at_the_same_time_both_keep_their_bindings(world: World) -> None:
    """Policy writes race (one bucket policy for all tenants): a stale etag is retried."""
    for tenant in (A, B, "third"):
        await world.bus.admin.ensure_topic(world.dispatch(tenant))
    await asyncio.gather(*(world.iam.ensure(tenant_id=t) for t in (A, B, "third")))
    for tenant in (A, B, "third"):
        assert world.may(tenant, "storage.objects.get", obj(f"tenants/{tenant}/x"))
        assert world.may(tenant, "pubsub.topics.publish", world.topic(INBOX))


async def test_removing_a_tenant_takes_its_account_and_bindings_and_leaves_bs(
    world: World,
) -> None:
    """As teardown does it: the tenant's grants and account, then its topic with the container
    subscriptions on it (their policies go with them)."""
    await provision(world, A, B)
    await world.iam.remove(tenant_id=A)
    who = member(world.project, A)
    assert world.may(A, "pubsub.subscriptions.consume", world.subscription(f"g-{A}"))
    await world.bus.delete_topic(topic=world.dispatch(A))
    await world.pubsub_iam.prune()
    for bindings in world.policies().values():
        assert all(who not in b.members for b in bindings)
    assert service_account_email(world.project, A) not in world.admin.accounts
    assert world.may(B, "storage.objects.get", obj(f"tenants/{B}/x"))
    assert world.may(B, "pubsub.topics.publish", world.topic(INBOX))
    await world.iam.remove(tenant_id=A)  # again: nothing left, nothing fails


async def test_a_subscription_deleted_takes_its_grant_with_it(world: World) -> None:
    await provision(world, A)
    sub = world.subscription(f"g-{A}")
    await world.bus.delete_subscription(topic=world.dispatch(A), name=subscription_name(f"g-{A}"))
    with pytest.raises(NotFound):
        await world.iam.grant_subscription(tenant_id=A, container_id=f"g-{A}")
    assert not world.may(A, "pubsub.subscriptions.consume", sub)


def test_the_evaluator_sees_what_one_shared_engine_identity_leaks() -> None:
    """What GCP had before: one engine account, objectAdmin on the whole bucket and consume
    on the project -- B's objects and subscriptions were A's too."""
    who = "serviceAccount:skycrawl-engine@p.iam.gserviceaccount.com"
    shared = {
        "projects/_/buckets/b": [Binding("roles/storage.objectAdmin", frozenset({who}))],
        "projects/p": [Binding("roles/pubsub.subscriber", frozenset({who}))],
    }
    b_object = "projects/_/buckets/b/objects/tenants/B/crawls/c1/checkpoint.json"
    assert allowed(shared, who, "storage.objects.get", b_object, project="p")
    b_sub = "projects/p/subscriptions/container-g-b"
    assert allowed(shared, who, "pubsub.subscriptions.consume", b_sub, project="p")
    condition = 'resource.name.startsWith("projects/_/buckets/b/objects/tenants/A/")'
    scoped = {
        "projects/_/buckets/b": [Binding("roles/storage.objectAdmin", frozenset({who}), condition)]
    }
    assert not allowed(scoped, who, "storage.objects.get", b_object, project="p")
