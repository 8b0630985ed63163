"""Pub/Sub topics and subscriptions as ``PubSubMessageBus`` lays them out (see its docstring):
names, filter expressions, and subscription settings -- exactly-once delivery, ack deadline
60 s, a dead-letter policy whose ``max_delivery_attempts`` is Pub/Sub's 5..100 while the exact
``max_deliveries`` goes into the label ``skycrawl-max-deliveries``, and an expiration policy
(queues never expire; a container subscription expires after 24 h without activity, so one
leaked by a crash cleans itself up). Creating what exists is a no-op; deleting what is missing
too. A caller refused ``create`` (a tenant's engine, whose subscription the control plane made
and granted to it alone) gets the existing subscription, checked as any existing one. Needs
``pubsub.topics.create`` and ``pubsub.subscriptions.create/delete/get/update``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from datetime import timedelta

from google.api_core import exceptions as gexc
from google.pubsub_v1 import PublisherAsyncClient, SubscriberAsyncClient, types

from adapters.gcp.errors import translating
from core.errors import Conflict, InvalidRequest, NotFound
from core.ports.message_bus import dead_letter_queue

MAX_DELIVERIES_LABEL = "skycrawl-max-deliveries"
CONTAINER_SUBSCRIPTION_TTL_S = 86400
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
_FILTER_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")


def check_name(kind: str, name: str) -> None:
    if not _NAME.fullmatch(name) or name.startswith("goog"):
        raise InvalidRequest(f"invalid Pub/Sub {kind} name {name!r}")


def subscription_filter(wanted: Mapping[str, str]) -> str:
    """The Pub/Sub filter expression matching every attribute of ``wanted`` exactly."""
    clauses = []
    for key, value in sorted(wanted.items()):
        if not _FILTER_KEY.fullmatch(key) or '"' in value or "\\" in value:
            raise InvalidRequest(f"unsupported filter {key}={value!r}")
        clauses.append(f'attributes.{key} = "{value}"')
    return " AND ".join(clauses)


class PubSubAdmin:
    """Creates and removes the bus's topics and subscriptions in one project."""

    def __init__(
        self, *, project: str, publisher: PublisherAsyncClient, subscriber: SubscriberAsyncClient
    ) -> None:
        self._project = project
        self._pub = publisher
        self._sub = subscriber

    @property
    def publisher(self) -> PublisherAsyncClient:
        return self._pub

    @property
    def subscriber(self) -> SubscriberAsyncClient:
        return self._sub

    def topic_path(self, name: str) -> str:
        return f"projects/{self._project}/topics/{name}"

    def subscription_path(self, name: str) -> str:
        return f"projects/{self._project}/subscriptions/{name}"

    async def _create_topic(self, name: str) -> None:
        check_name("topic", name)
        with contextlib.suppress(gexc.AlreadyExists):
            await self._pub.create_topic(name=self.topic_path(name))

    async def _create_subscription(self, spec: types.Subscription) -> types.Subscription | None:
        """Create ``spec``; the existing subscription if there is one already."""
        try:
            await self._sub.create_subscription(request=spec)
        except gexc.AlreadyExists:
            return await self._sub.get_subscription(subscription=spec.name)
        except gexc.NotFound as exc:
            raise NotFound(f"topic of subscription {spec.name} does not exist") from exc
        except gexc.PermissionDenied as refused:
            # a tenant's engine may not create subscriptions: the control plane made its own
            # for it (``tenant_iam.ContainerSubscriptions``) and granted it that one
            try:
                return await self._sub.get_subscription(subscription=spec.name)
            except gexc.NotFound:
                raise refused from None
        return None

    def _spec(
        self, name: str, topic: str, *, dead_letter: str | None, limit: int | None
    ) -> types.Subscription:
        spec = types.Subscription(
            name=self.subscription_path(name),
            topic=self.topic_path(topic),
            ack_deadline_seconds=60,
            enable_exactly_once_delivery=True,
            expiration_policy=types.ExpirationPolicy(),  # never expires
        )
        if dead_letter is not None:
            attempts = min(max(limit or 5, 5), 100)
            spec.dead_letter_policy = types.DeadLetterPolicy(
                dead_letter_topic=self.topic_path(dead_letter), max_delivery_attempts=attempts
            )
            spec.labels = {MAX_DELIVERIES_LABEL: str(limit or 5)}
        return spec

    @translating("Pub/Sub")
    async def ensure_queue(self, name: str, max_deliveries: int) -> None:
        check_name("queue", name)
        if max_deliveries < 1:
            raise InvalidRequest("max_deliveries must be at least 1")
        dlq = dead_letter_queue(name)
        for topic in (name, dlq):
            await self._create_topic(topic)
        await self._create_subscription(self._spec(dlq, dlq, dead_letter=None, limit=None))
        spec = self._spec(name, name, dead_letter=dlq, limit=max_deliveries)
        existing = await self._create_subscription(spec)
        if existing is not None and dict(existing.labels) != dict(spec.labels):
            mask = {"paths": ["labels", "dead_letter_policy"]}
            await self._sub.update_subscription(
                request=types.UpdateSubscriptionRequest(subscription=spec, update_mask=mask)
            )

    @translating("Pub/Sub")
    async def ensure_topic(self, topic: str) -> None:
        dlq = dead_letter_queue(topic)
        for name in (topic, dlq):
            await self._create_topic(name)
        await self._create_subscription(self._spec(dlq, dlq, dead_letter=None, limit=None))

    @translating("Pub/Sub")
    async def ensure_container_subscription(
        self, topic: str, name: str, wanted: Mapping[str, str]
    ) -> None:
        check_name("subscription", name)
        spec = self._spec(name, topic, dead_letter=dead_letter_queue(topic), limit=5)
        spec.filter = subscription_filter(wanted)
        spec.expiration_policy = types.ExpirationPolicy(
            ttl=timedelta(seconds=CONTAINER_SUBSCRIPTION_TTL_S)
        )
        existing = await self._create_subscription(spec)
        if existing is not None and existing.filter != spec.filter:
            raise Conflict(f"subscription {name} exists with filter {existing.filter!r}")

    @translating("Pub/Sub")
    async def delete_topic(self, topic: str) -> None:
        """Remove what ``ensure_topic`` made -- the topic, its dead-letter topic and that
        topic's subscription -- and every subscription still on the topic."""
        dlq = dead_letter_queue(topic)
        with contextlib.suppress(gexc.NotFound):
            pager = await self._pub.list_topic_subscriptions(topic=self.topic_path(topic))
            async for path in pager:
                with contextlib.suppress(gexc.NotFound):
                    await self._sub.delete_subscription(subscription=path)
        with contextlib.suppress(gexc.NotFound):
            await self._sub.delete_subscription(subscription=self.subscription_path(dlq))
        for name in (topic, dlq):
            with contextlib.suppress(gexc.NotFound):
                await self._pub.delete_topic(topic=self.topic_path(name))

    @translating("Pub/Sub")
    async def delete_subscription(self, name: str) -> None:
        with contextlib.suppress(gexc.NotFound):
            await self._sub.delete_subscription(subscription=self.subscription_path(name))

    @translating("Pub/Sub")
    async def max_deliveries(self, path: str) -> int | None:
        """The subscription's ``max_deliveries`` label (None: no limit of ours)."""
        try:
            found = await self._sub.get_subscription(subscription=path)
        except gexc.NotFound as exc:
            raise NotFound(f"no such queue or subscription: {path}") from exc
        label = found.labels.get(MAX_DELIVERIES_LABEL)
        return int(label) if label and label.isdigit() else None
