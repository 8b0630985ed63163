"""A working fake of Azure Service Bus at the SDK client boundary (no emulator runs here).

``FakeServiceBusNamespace`` is an in-memory broker; ``FakeServiceBusClient`` and
``FakeAdministrationClient`` (in ``fakes_admin.py``) expose exactly the methods of ``azure.servicebus.aio.
ServiceBusClient`` / ``ServiceBusAdministrationClient`` that ``adapters.azure.message_bus``
calls, with the same signatures, the same exceptions (``MessagingEntityNotFoundError``,
``MessageLockLostError``, ``MessageAlreadySettled``, ``MessageNotFoundError``,
``MessageSizeExceededError``, ``azure.core`` ``ResourceExistsError`` /
``ResourceNotFoundError``) and the SDK's own rule models (``CorrelationRuleFilter``,
``TrueRuleFilter``, ``RuleProperties``, ``QueueProperties``).

What it models
    Queues with peek-lock (lock tokens, lock duration per entity, renewal, complete, abandon,
    dead-letter with reason and description), the AMQP delivery count (0 on the first
    delivery; +1 per abandon or lock expiry), max delivery count → dead-letter sub-queue
    (reason ``MaxDeliveryCountExceeded``), scheduled messages and their cancellation
    (``MessageNotFoundError`` once enqueued), topics fanning out copies to every subscription
    that has a matching rule (a subscription without rules gets nothing), ``$Default``
    (match-all) on every new subscription, correlation filters on application properties,
    forwarding of a subscription's dead letters, the 256 KiB Standard-tier size limit, and
    received messages shaped like ``ServiceBusReceivedMessage`` (body as an iterator of
    bytes, application properties with ``bytes`` keys and values, ``DeadLetterReason`` in
    them).

Limits (what a real namespace does that this does not)
    Time: lock expiry, scheduled enqueue times and ``locked_until_utc`` follow the injected
    ``core.clock.Clock`` (a ``FakeClock`` in the contract suite, so tests need not sleep),
    while ``receive_messages(max_wait_time=)`` waits in real time; any lock duration is
    accepted (Service Bus allows 5 s to 5 min). No sessions, transactions, duplicate
    detection, TTL expiry, partitions, prefetch, SQL filters or actions, auto-forwarding of
    active messages, or quotas; no AMQP links (settling through another receiver of the same
    entity works here and does not on Azure); no network faults or throttling; one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.exceptions import (
    MessageAlreadySettled,
    MessageLockLostError,
    MessageNotFoundError,
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
)
from azure.servicebus.management import (
    CorrelationRuleFilter,
    SqlRuleFilter,
    TrueRuleFilter,
)

from core.clock import Clock

MAX_MESSAGE_BYTES = 256 * 1024
DEFAULT_LOCK = timedelta(seconds=60)


def _seconds(value: timedelta | str | None, default: timedelta) -> timedelta:
    return value if isinstance(value, timedelta) else default


@dataclass
class _Stored:
    sequence_number: int
    message_id: str
    body: bytes
    properties: dict[str, str]
    visible_at: datetime
    delivery_count: int = 0
    lock_token: str | None = None
    locked_until: datetime | None = None


@dataclass
class _Entity:
    name: str
    max_delivery_count: int | None
    lock_duration: timedelta
    forward_dead_letters_to: str | None = None
    messages: list[_Stored] = field(default_factory=list)
    dead_letters: list[_Stored] = field(default_factory=list)
    rules: dict[str, SqlRuleFilter | CorrelationRuleFilter] = field(default_factory=dict)


class FakeReceivedMessage:
    """Shaped like ``azure.servicebus.ServiceBusReceivedMessage`` (the attributes read)."""

    def __init__(self, stored: _Stored) -> None:
        self._body = stored.body
        self.message_id = stored.message_id
        self.sequence_number = stored.sequence_number
        self.delivery_count = stored.delivery_count
        self.lock_token = stored.lock_token
        self.locked_until_utc = stored.locked_until
        self.application_properties = {
            k.encode(): v.encode() for k, v in stored.properties.items()
        } or None
        self.dead_letter_reason = stored.properties.get("DeadLetterReason")
        self.dead_letter_error_description = stored.properties.get("DeadLetterErrorDescription")
        self.dead_letter_source = stored.properties.get("DeadLetterSource")

    @property
    def body(self) -> Iterator[bytes]:
        return iter([self._body])


class FakeServiceBusNamespace:
    """The broker: entities, messages and a wake-up event for waiting receivers."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.queues: dict[str, _Entity] = {}
        self.topics: dict[str, dict[str, _Entity]] = {}
        self._sequence = itertools.count(1)
        self._changed: asyncio.Event | None = None

    # ------------------------------------------------------------------ plumbing

    def changed(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def notify(self) -> None:
        self.changed().set()
        self._changed = asyncio.Event()

    def queue(self, name: str) -> _Entity:
        entity = self.queues.get(name)
        if entity is None:
            raise MessagingEntityNotFoundError(message=f"queue {name} not found")
        return entity

    def subscription(self, topic: str, name: str) -> _Entity:
        entity = self.topics.get(topic, {}).get(name)
        if entity is None:
            raise MessagingEntityNotFoundError(message=f"subscription {topic}/{name} not found")
        return entity

    def stored(self, message: ServiceBusMessage, at: datetime) -> _Stored:
        body = b"".join(message.body) if not isinstance(message.body, bytes) else message.body
        properties = {
            (k.decode() if isinstance(k, bytes) else str(k)): str(v)
            for k, v in (message.application_properties or {}).items()
        }
        size = len(body) + sum(len(k) + len(v) for k, v in properties.items())
        if size > MAX_MESSAGE_BYTES:
            raise MessageSizeExceededError(message=f"message of {size} bytes is too large")
        return _Stored(next(self._sequence), str(message.message_id), body, properties, at)

    def enqueue(self, entity_path: tuple[str, str | None], stored: _Stored) -> None:
        topic_or_queue, _ = entity_path
        if topic_or_queue in self.topics:
            for subscription in self.topics[topic_or_queue].values():
                if any(_matches(rule, stored.properties) for rule in subscription.rules.values()):
                    copy = _Stored(
                        next(self._sequence),
                        stored.message_id,
                        stored.body,
                        dict(stored.properties),
                        stored.visible_at,
                    )
                    subscription.messages.append(copy)
        else:
            self.queue(topic_or_queue).messages.append(stored)
        self.notify()

    # ------------------------------------------------------------------ locks

    def acquire(self, entity: _Entity, dead: bool, count: int) -> list[FakeReceivedMessage]:
        now = self.clock.now()
        pool = entity.dead_letters if dead else entity.messages
        taken: list[FakeReceivedMessage] = []
        for stored in list(pool):
            if len(taken) >= count:
                break
            if stored.visible_at > now:
                continue
            if stored.lock_token is not None:
                if stored.locked_until is not None and stored.locked_until > now:
                    continue
                stored.lock_token, stored.locked_until = None, None
                stored.delivery_count += 1  # the lock expired: a failed delivery
                if not dead and self._exhausted(entity, stored):
                    continue
            stored.lock_token = str(uuid.uuid4())
            stored.locked_until = now + entity.lock_duration
            taken.append(FakeReceivedMessage(stored))
        return taken

    def _exhausted(self, entity: _Entity, stored: _Stored) -> bool:
        limit = entity.max_delivery_count
        if limit is not None and stored.delivery_count >= limit:
            self.dead_letter(entity, stored, "MaxDeliveryCountExceeded", "too many deliveries")
            return True
        return False

    def dead_letter(self, entity: _Entity, stored: _Stored, reason: str, description: str) -> None:
        entity.messages.remove(stored)
        stored.lock_token, stored.locked_until = None, None
        stored.properties["DeadLetterReason"] = reason
        stored.properties["DeadLetterErrorDescription"] = description
        if entity.forward_dead_letters_to and entity.forward_dead_letters_to in self.queues:
            stored.properties["DeadLetterSource"] = entity.name
            self.queues[entity.forward_dead_letters_to].messages.append(stored)
        else:
            entity.dead_letters.append(stored)
        self.notify()

    def locked(self, entity: _Entity, dead: bool, message: FakeReceivedMessage) -> _Stored:
        """The stored message ``message`` holds a live lock on; raises like the SDK."""
        pool = entity.dead_letters if dead else entity.messages
        stored = next((s for s in pool if s.sequence_number == message.sequence_number), None)
        if stored is None:
            raise MessageAlreadySettled(action="settle")
        if stored.lock_token != message.lock_token or (
            stored.locked_until is not None and stored.locked_until <= self.clock.now()
        ):
            raise MessageLockLostError()
        return stored


def _matches(rule: SqlRuleFilter | CorrelationRuleFilter, properties: Mapping[str, str]) -> bool:
    if isinstance(rule, TrueRuleFilter):
        return True
    if isinstance(rule, CorrelationRuleFilter):
        wanted = rule.properties or {}
        return all(properties.get(k) == str(v) for k, v in wanted.items())
    return False


class FakeSender:
    def __init__(self, namespace: FakeServiceBusNamespace, entity: str) -> None:
        self._ns, self._entity = namespace, entity

    def _check(self) -> None:
        if self._entity not in self._ns.queues and self._entity not in self._ns.topics:
            raise MessagingEntityNotFoundError(message=f"entity {self._entity} not found")

    async def send_messages(self, message: ServiceBusMessage | list[ServiceBusMessage]) -> None:
        self._check()
        for one in message if isinstance(message, list) else [message]:
            self._ns.enqueue((self._entity, None), self._ns.stored(one, self._ns.clock.now()))

    async def schedule_messages(
        self, messages: ServiceBusMessage | list[ServiceBusMessage], schedule_time_utc: datetime
    ) -> list[int]:
        self._check()
        numbers = []
        for one in messages if isinstance(messages, list) else [messages]:
            stored = self._ns.stored(one, schedule_time_utc)
            numbers.append(stored.sequence_number)
            self._ns.enqueue((self._entity, None), stored)
        return numbers

    async def cancel_scheduled_messages(self, sequence_numbers: int | list[int]) -> None:
        self._check()
        wanted = {sequence_numbers} if isinstance(sequence_numbers, int) else set(sequence_numbers)
        entity = self._ns.queues.get(self._entity)
        now = self._ns.clock.now()
        pending = [
            s
            for s in (entity.messages if entity else [])
            if s.sequence_number in wanted and s.visible_at > now
        ]
        if len(pending) != len(wanted):
            raise MessageNotFoundError(message="scheduled message not found or enqueued")
        for stored in pending:
            entity.messages.remove(stored)  # type: ignore[union-attr]

    async def close(self) -> None:
        return None


class FakeReceiver:
    def __init__(
        self, namespace: FakeServiceBusNamespace, queue_or_topic: str, sub: str | None, dead: bool
    ) -> None:
        self._ns, self._path, self._dead = namespace, (queue_or_topic, sub), dead

    def _entity(self) -> _Entity:
        topic_or_queue, subscription = self._path
        if subscription is None:
            return self._ns.queue(topic_or_queue)
        return self._ns.subscription(topic_or_queue, subscription)

    async def receive_messages(
        self, max_message_count: int | None = 1, max_wait_time: float | None = None
    ) -> list[FakeReceivedMessage]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (60.0 if max_wait_time is None else max_wait_time)
        while True:
            event = self._ns.changed()
            taken = self._ns.acquire(self._entity(), self._dead, max_message_count or 1)
            remaining = deadline - loop.time()
            if taken or remaining <= 0:
                return taken
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.05))

    async def complete_message(self, message: FakeReceivedMessage) -> None:
        entity = self._entity()
        stored = self._ns.locked(entity, self._dead, message)
        (entity.dead_letters if self._dead else entity.messages).remove(stored)

    async def abandon_message(self, message: FakeReceivedMessage) -> None:
        entity = self._entity()
        stored = self._ns.locked(entity, self._dead, message)
        stored.lock_token, stored.locked_until = None, None
        stored.delivery_count += 1
        if not self._dead:
            self._ns._exhausted(entity, stored)
        self._ns.notify()

    async def dead_letter_message(
        self,
        message: FakeReceivedMessage,
        reason: str | None = None,
        error_description: str | None = None,
    ) -> None:
        entity = self._entity()
        stored = self._ns.locked(entity, self._dead, message)
        self._ns.dead_letter(entity, stored, reason or "", error_description or "")

    async def renew_message_lock(self, message: FakeReceivedMessage) -> datetime:
        entity = self._entity()
        stored = self._ns.locked(entity, self._dead, message)
        stored.locked_until = self._ns.clock.now() + entity.lock_duration
        message.locked_until_utc = stored.locked_until
        return stored.locked_until

    async def close(self) -> None:
        return None


class FakeServiceBusClient:
    """``azure.servicebus.aio.ServiceBusClient`` on a ``FakeServiceBusNamespace``."""

    def __init__(self, namespace: FakeServiceBusNamespace) -> None:
        self.namespace = namespace
        self.closed = False

    def get_queue_sender(self, queue_name: str, **_: Any) -> FakeSender:
        return FakeSender(self.namespace, queue_name)

    def get_topic_sender(self, topic_name: str, **_: Any) -> FakeSender:
        return FakeSender(self.namespace, topic_name)

    def get_queue_receiver(
        self, queue_name: str, *, sub_queue: ServiceBusSubQueue | None = None, **_: Any
    ) -> FakeReceiver:
        return FakeReceiver(self.namespace, queue_name, None, sub_queue is not None)

    def get_subscription_receiver(
        self, topic_name: str, subscription_name: str, **_: Any
    ) -> FakeReceiver:
        return FakeReceiver(self.namespace, topic_name, subscription_name, False)

    async def close(self) -> None:
        self.closed = True
