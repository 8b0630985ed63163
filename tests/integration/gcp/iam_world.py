"""The world of the GCP identity tests: a project of its own on the Pub/Sub emulator, a
``FakeGcsServer`` bucket, the IAM fakes of ``fake_iam`` and the tenants' ``TenantIam`` on
them, with ``may``: what ``gcp_iam_eval`` says of a tenant's account on a resource."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.pubsub_v1 import PublisherAsyncClient

from adapters.gcp.message_bus import PubSubMessageBus
from adapters.gcp.provider import pubsub_clients
from adapters.gcp.tenant_iam import TenantIam, member
from core.layout import subscription_name, tenant_topic
from tests.integration.gcp import emulators
from tests.integration.gcp.fake_iam import FakeIamAdmin, FakePubSubIam
from tests.integration.gcp.fakes import FakeGcsServer
from tests.integration.gcp.gcp_iam_eval import allowed, from_bucket, from_pubsub

BUCKET = "skycrawl-iso"
INBOX = "skycrawl-inbox"
DISPATCH = "skycrawl-dispatch"
A, B = "acme", "acme-corp"  # A's id is a prefix of B's: the prefix condition must not leak


@dataclass
class World:
    project: str
    bus: PubSubMessageBus
    gcs: FakeGcsServer
    admin: FakeIamAdmin
    pubsub_iam: FakePubSubIam
    iam: TenantIam
    publisher: PublisherAsyncClient

    def policies(self) -> dict[str, Any]:
        found: dict[str, Any] = {r: from_pubsub(p) for r, p in self.pubsub_iam.bindings().items()}
        for bucket, policy in self.gcs.state.policies.items():
            found[f"projects/_/buckets/{bucket}"] = from_bucket(policy)
        return found

    def may(self, tenant: str, permission: str, resource: str) -> bool:
        who = member(self.project, tenant)
        return allowed(self.policies(), who, permission, resource, project=self.project)

    def topic(self, name: str) -> str:
        return f"projects/{self.project}/topics/{name}"

    def subscription(self, container_id: str) -> str:
        return f"projects/{self.project}/subscriptions/{subscription_name(container_id)}"

    def dispatch(self, tenant: str) -> str:
        return tenant_topic(DISPATCH, tenant)


def obj(key: str, bucket: str = BUCKET) -> str:
    return f"projects/_/buckets/{bucket}/objects/{key}"


def open_project_bus(project: str) -> tuple[PubSubMessageBus, FakePubSubIam]:
    """A bus on the emulator in its own project, and IAM policies for its resources."""
    publisher, subscriber = pubsub_clients(emulators.pubsub_host())

    async def exists(resource: str) -> bool:
        try:
            if "/subscriptions/" in resource:
                await subscriber.get_subscription(subscription=resource)
            else:
                await publisher.get_topic(topic=resource)
        except gexc.NotFound:
            return False
        return True

    bus = PubSubMessageBus(
        project=project, publisher=publisher, subscriber=subscriber, emulator=True
    )
    return bus, FakePubSubIam(exists)


def make_iam(
    project: str, bus: PubSubMessageBus, pubsub_iam: FakePubSubIam, gcs: FakeGcsServer
) -> World:
    admin = FakeIamAdmin()
    iam = TenantIam(
        project=project,
        bucket=BUCKET,
        iam=admin,  # type: ignore[arg-type]
        topics=pubsub_iam,
        subscriptions=pubsub_iam,
        storage_client=gcs.client(project),
        inbox_queue=INBOX,
        dispatch_topic=DISPATCH,
        backoff_s=0.01,
    )
    return World(project, bus, gcs, admin, pubsub_iam, iam, bus.admin.publisher)


@asynccontextmanager
async def open_world() -> AsyncIterator[World]:
    project = f"iso-{uuid.uuid4().hex[:8]}"
    bus, pubsub_iam = open_project_bus(project)  # a project per test: no name collides
    with FakeGcsServer(buckets=[BUCKET, "skycrawl-source"]) as gcs:
        try:
            await bus.admin.ensure_queue(INBOX, 5)
            yield make_iam(project, bus, pubsub_iam, gcs)
        finally:
            await bus.close()
