"""The fake ``ServiceBusAdministrationClient`` (management of queues, topics, subscriptions
and rules) on a ``FakeServiceBusNamespace`` -- see ``fakes.py`` for what the fake models and
its limits. New subscriptions are born with the match-all ``$Default`` rule, as on Azure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.servicebus.management import (
    CorrelationRuleFilter,
    QueueProperties,
    RuleProperties,
    SqlRuleFilter,
    TrueRuleFilter,
)

from tests.integration.azure.fakes import (
    DEFAULT_LOCK,
    FakeServiceBusNamespace,
    _Entity,
    _seconds,
)

_UNMODELLED_QUEUE_PROPERTIES = (
    "authorization_rules",
    "auto_delete_on_idle",
    "dead_lettering_on_message_expiration",
    "default_message_time_to_live",
    "duplicate_detection_history_time_window",
    "availability_status",
    "enable_batched_operations",
    "enable_express",
    "enable_partitioning",
    "max_size_in_megabytes",
    "requires_duplicate_detection",
    "requires_session",
    "status",
    "forward_to",
    "user_metadata",
    "forward_dead_lettered_messages_to",
    "max_message_size_in_kilobytes",
)


class FakeAdministrationClient:
    """``azure.servicebus.aio.management.ServiceBusAdministrationClient``, fake."""

    def __init__(self, namespace: FakeServiceBusNamespace) -> None:
        self.namespace = namespace

    async def create_queue(
        self,
        queue_name: str,
        *,
        max_delivery_count: int | None = None,
        lock_duration: timedelta | str | None = None,
        **_: Any,
    ) -> None:
        if queue_name in self.namespace.queues or queue_name in self.namespace.topics:
            raise ResourceExistsError(f"queue {queue_name} exists")
        self.namespace.queues[queue_name] = _Entity(
            queue_name, max_delivery_count or 10, _seconds(lock_duration, DEFAULT_LOCK)
        )

    async def get_queue(self, queue_name: str, **_: Any) -> QueueProperties:
        entity = self.namespace.queues.get(queue_name)
        if entity is None:
            raise ResourceNotFoundError(f"queue {queue_name} not found")
        none: dict[str, Any] = dict.fromkeys(_UNMODELLED_QUEUE_PROPERTIES)
        return QueueProperties(
            queue_name,
            lock_duration=entity.lock_duration,
            max_delivery_count=entity.max_delivery_count,
            **none,
        )

    async def update_queue(self, queue: QueueProperties, **kwargs: Any) -> None:
        entity = self.namespace.queues.get(queue.name)
        if entity is None:
            raise ResourceNotFoundError(f"queue {queue.name} not found")
        entity.max_delivery_count = kwargs.get("max_delivery_count", queue.max_delivery_count)

    async def create_topic(self, topic_name: str, **_: Any) -> None:
        if topic_name in self.namespace.topics or topic_name in self.namespace.queues:
            raise ResourceExistsError(f"topic {topic_name} exists")
        self.namespace.topics[topic_name] = {}

    async def delete_topic(self, topic_name: str) -> None:
        if self.namespace.topics.pop(topic_name, None) is None:
            raise ResourceNotFoundError(f"topic {topic_name} not found")
        self.namespace.notify()

    async def delete_queue(self, queue_name: str) -> None:
        if self.namespace.queues.pop(queue_name, None) is None:
            raise ResourceNotFoundError(f"queue {queue_name} not found")
        self.namespace.notify()

    async def create_subscription(
        self,
        topic_name: str,
        subscription_name: str,
        *,
        max_delivery_count: int | None = None,
        lock_duration: timedelta | str | None = None,
        forward_dead_lettered_messages_to: str | None = None,
        **_: Any,
    ) -> None:
        subscriptions = self.namespace.topics.get(topic_name)
        if subscriptions is None:
            raise ResourceNotFoundError(f"topic {topic_name} not found")
        if subscription_name in subscriptions:
            raise ResourceExistsError(f"subscription {subscription_name} exists")
        subscriptions[subscription_name] = _Entity(
            f"{topic_name}/subscriptions/{subscription_name}",
            max_delivery_count or 10,
            _seconds(lock_duration, DEFAULT_LOCK),
            forward_dead_letters_to=forward_dead_lettered_messages_to,
            rules={"$Default": TrueRuleFilter()},
        )

    def _subscription(self, topic_name: str, subscription_name: str) -> _Entity:
        entity = self.namespace.topics.get(topic_name, {}).get(subscription_name)
        if entity is None:
            raise ResourceNotFoundError(f"subscription {topic_name}/{subscription_name} not found")
        return entity

    async def delete_subscription(self, topic_name: str, subscription_name: str) -> None:
        self._subscription(topic_name, subscription_name)
        del self.namespace.topics[topic_name][subscription_name]
        self.namespace.notify()

    async def create_rule(
        self,
        topic_name: str,
        subscription_name: str,
        rule_name: str,
        *,
        filter: CorrelationRuleFilter | SqlRuleFilter = TrueRuleFilter(),  # the SDK's default
        **_: Any,
    ) -> None:
        entity = self._subscription(topic_name, subscription_name)
        if rule_name in entity.rules:
            raise ResourceExistsError(f"rule {rule_name} exists")
        entity.rules[rule_name] = filter

    async def delete_rule(self, topic_name: str, subscription_name: str, rule_name: str) -> None:
        entity = self._subscription(topic_name, subscription_name)
        if entity.rules.pop(rule_name, None) is None:
            raise ResourceNotFoundError(f"rule {rule_name} not found")

    def list_rules(self, topic_name: str, subscription_name: str) -> AsyncIterator[RuleProperties]:
        entity = self._subscription(topic_name, subscription_name)
        now = self.namespace.clock.now()

        async def rules() -> AsyncIterator[RuleProperties]:
            for name, rule in list(entity.rules.items()):
                yield RuleProperties(name, filter=rule, action=None, created_at_utc=now)

        return rules()

    async def close(self) -> None:
        return None
