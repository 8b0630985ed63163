"""ServiceBusMessageBus: the MessageBus on Azure Service Bus (async SDK, AMQP).

Features
    * Queues are Service Bus queues in peek-lock mode: a lease is a message lock (the receipt
      is its lock token), ``ack`` completes, ``release`` abandons (after ``delay_s``: the lock
      is kept, and renewed, until then), ``dead_letter`` moves the message to the queue's
      native dead-letter sub-queue with the reason. ``ensure_queue`` sets the queue's max
      delivery count, after which Service Bus dead-letters by itself (reason
      ``MaxDeliveryCountExceeded``). ``Queue(dead_letter_queue(name))`` reads that sub-queue.
      ``delivery_count`` counts from 1 (the SDK's AMQP count plus one).
    * Visibility timeouts map onto the entity's lock duration (``lock_duration_s``, set on the
      entities this adapter creates, 60 s by default, 5 min at most): a longer lease is kept by
      renewing the lock (a background task, plus a check at every call) until the timeout,
      after which the message reappears within one lock duration; a shorter one lasts the lock
      duration. Leases can be settled only by the bus instance that received them (Service
      Bus settles through the receiving link); on another instance ``ack`` is ``Conflict``.
    * The dispatch topic is a Service Bus topic. Each container's subscription gets exactly one
      rule, a *correlation filter* on the application properties (``container_id = GUID``),
      and forwards its dead letters to the queue ``<topic>-dlq`` (created by ``ensure_topic``),
      so they outlive the subscription. ``delete_subscription`` deletes the subscription and
      what it holds.
    * Scheduled messages: ``send(delay_s=...)`` and ``ServiceBusScheduler`` use
      ``schedule_messages``; ``cancel_scheduled`` is ``cancel_scheduled_messages``.

The $Default window
    azure-servicebus 7.15's ``ServiceBusAdministrationClient.create_subscription`` cannot
    create a subscription with its default rule (Azure/azure-sdk-for-python#15171 and #29553;
    the REST API and ARM can), so a new subscription is born with the match-all ``$Default``
    rule. This adapter deletes ``$Default`` in the very next call and only then adds the
    correlation rule, so the match-all rule lives for one management round trip (tens of
    milliseconds). Messages for other containers published in that window land in the new
    subscription as *copies* (their own subscriptions still get them); the engine drops every
    message whose ``container_id`` is not its own, as the brief requires of every container.
    ``capabilities.filters_applied`` is True and ``filter_propagation_s`` 0 accordingly.

Limits
    Body plus application properties at most ``max_message_bytes`` (default 192 KiB, as the
    Standard tier allows 256 KiB including headers); at most 5,000 messages per receive call;
    names of queues ending in ``-dlq`` are reserved for dead-letter queues. A receive waits at
    least ``min_wait_s`` (AMQP round trips make shorter waits miss messages in flight).

Settings and cost
    ``SKYCRAWL_AZURE_SERVICEBUS_CONNECTION_STRING`` or ``..._SERVICEBUS_NAMESPACE`` (Entra ID),
    ``..._SERVICEBUS_LOCK_DURATION_S``, ``..._SERVICEBUS_MAX_MESSAGE_BYTES``. Topics need the
    Standard tier: ~$10 a month base charge plus $0.80 per million operations beyond 13 M;
    idle receivers cost nothing more.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.servicebus import (
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender
from azure.servicebus.aio.management import ServiceBusAdministrationClient
from azure.servicebus.exceptions import (
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    ServiceBusError,
)
from azure.servicebus.management import CorrelationRuleFilter, TrueRuleFilter

from adapters.azure.errors import translated_errors
from adapters.azure.servicebus_locks import SETTLE_ERRORS, Held, LockKeeper
from core.clock import Clock, SystemClock
from core.errors import Conflict, InvalidRequest, NotFound
from core.ports.message_bus import (
    DEAD_LETTER_REASON,
    DEAD_LETTER_SOURCE,
    BusCapabilities,
    Lease,
    OutboundMessage,
    Queue,
    Source,
    Subscription,
    check_receive,
    cut_reason,
)

log = logging.getLogger("skycrawl.azure.servicebus")

DLQ_SUFFIX = "-dlq"
#: Service Bus allows 2,000 subscriptions per topic (each tenant's live containers at most).
MAX_SUBSCRIPTIONS_PER_TOPIC = 2000
RULE_NAME = "container"
SUBSCRIPTION_DELIVERIES = 5
MAX_RECEIVE = 5000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _body(message: ServiceBusReceivedMessage) -> bytes:
    body = message.body
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    return b"".join(bytes(chunk) for chunk in body)


def _attributes(message: ServiceBusReceivedMessage) -> dict[str, str]:
    attributes = {_text(k): _text(v) for k, v in (message.application_properties or {}).items()}
    if message.dead_letter_reason:
        attributes[DEAD_LETTER_REASON] = message.dead_letter_reason
    if message.dead_letter_source:
        attributes[DEAD_LETTER_SOURCE] = message.dead_letter_source
    return attributes


def _size(message: OutboundMessage) -> int:
    return len(message.body) + sum(
        len(k.encode()) + len(v.encode()) for k, v in message.attributes.items()
    )


@translated_errors("Service Bus")
class ServiceBusMessageBus:
    """MessageBus on Service Bus queues and a topic with correlation-filtered subscriptions."""

    def __init__(
        self,
        client: ServiceBusClient,
        admin: ServiceBusAdministrationClient,
        *,
        clock: Clock | None = None,
        lock_duration_s: float = 60.0,
        max_message_bytes: int = 192 * 1024,
        min_wait_s: float = 0.5,
        credential: AsyncTokenCredential | None = None,
    ) -> None:
        self.client = client
        self._credential = credential  # closed with the bus
        self.admin = admin
        self.clock: Clock = clock or SystemClock()
        self.lock_duration_s = lock_duration_s
        self.min_wait_s = min_wait_s
        self.capabilities = BusCapabilities(
            max_message_bytes=max_message_bytes,
            filters_applied=True,
            filter_propagation_s=0,
            max_visibility_timeout_s=12 * 3600.0,
            native_dead_letter=True,
            max_subscriptions_per_topic=MAX_SUBSCRIPTIONS_PER_TOPIC,
        )
        self._senders: dict[str, ServiceBusSender] = {}
        self._receivers: dict[Source, ServiceBusReceiver] = {}
        self._locks = LockKeeper(self.clock, lock_duration_s)
        self._real_queues: set[str] = set()  # "-dlq" names that are real queues (topic DLQs)

    # ------------------------------------------------------------------ plumbing

    def _lock(self) -> timedelta:
        return timedelta(seconds=self.lock_duration_s)

    def _check(self, message: OutboundMessage) -> ServiceBusMessage:
        size, limit = _size(message), self.capabilities.max_message_bytes
        if size > limit:
            raise InvalidRequest(f"message of {size} bytes exceeds {limit} bytes")
        properties: dict[str | bytes, Any] = {k: v for k, v in message.attributes.items()}
        return ServiceBusMessage(
            message.body, application_properties=properties, message_id=uuid.uuid4().hex
        )

    def _sender(self, entity: str, *, topic: bool) -> ServiceBusSender:
        key = f"{'topic' if topic else 'queue'}/{entity}"
        sender = self._senders.get(key)
        if sender is None:
            get = self.client.get_topic_sender if topic else self.client.get_queue_sender
            sender = self._senders[key] = get(entity)
        return sender

    async def _resolve(self, source: Source) -> ServiceBusReceiver:
        receiver = self._receivers.get(source)
        if receiver is not None:
            return receiver
        if isinstance(source, Subscription):
            receiver = self.client.get_subscription_receiver(
                source.topic, source.name, receive_mode=ServiceBusReceiveMode.PEEK_LOCK
            )
        elif source.name.endswith(DLQ_SUFFIX) and not await self._is_real_queue(source.name):
            receiver = self.client.get_queue_receiver(
                source.name[: -len(DLQ_SUFFIX)],
                sub_queue=ServiceBusSubQueue.DEAD_LETTER,
                receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
            )
        else:
            receiver = self.client.get_queue_receiver(
                source.name, receive_mode=ServiceBusReceiveMode.PEEK_LOCK
            )
        self._receivers[source] = receiver
        return receiver

    async def _is_real_queue(self, name: str) -> bool:
        if name not in self._real_queues:
            try:
                await self.admin.get_queue(name)
            except ResourceNotFoundError:
                return False
            self._real_queues.add(name)
        return True

    # ------------------------------------------------------------------ queues

    async def ensure_queue(self, *, name: str, max_deliveries: int = 5) -> None:
        if max_deliveries < 1:
            raise InvalidRequest("max_deliveries must be at least 1")
        if name.endswith(DLQ_SUFFIX):
            raise InvalidRequest(f"queue names ending in {DLQ_SUFFIX!r} are dead-letter queues")
        try:
            await self.admin.create_queue(
                name,
                max_delivery_count=max_deliveries,
                lock_duration=self._lock(),
                dead_lettering_on_message_expiration=True,
            )
        except ResourceExistsError:
            queue = await self.admin.get_queue(name)
            if queue.max_delivery_count != max_deliveries:
                await self.admin.update_queue(queue, max_delivery_count=max_deliveries)

    async def send(self, *, queue: str, message: OutboundMessage, delay_s: float = 0) -> str:
        if delay_s < 0:
            raise InvalidRequest("delay must not be negative")
        outbound = self._check(message)
        sender = self._sender(queue, topic=False)
        try:
            if delay_s > 0:
                at = self.clock.now() + timedelta(seconds=delay_s)
                await sender.schedule_messages(outbound, at)
            else:
                await sender.send_messages(outbound)
        except MessagingEntityNotFoundError as exc:
            raise NotFound(f"no such queue: {queue}") from exc
        except MessageSizeExceededError as exc:
            raise InvalidRequest(f"message too large for Service Bus: {exc}") from exc
        return str(outbound.message_id)

    async def schedule_at(
        self, *, queue: str, message: OutboundMessage, deliver_at: datetime
    ) -> int:
        """Schedule ``message`` onto ``queue`` at ``deliver_at``; returns its sequence number."""
        outbound = self._check(message)
        try:
            numbers = await self._sender(queue, topic=False).schedule_messages(outbound, deliver_at)
        except MessagingEntityNotFoundError as exc:
            raise NotFound(f"no such queue: {queue}") from exc
        return int(numbers[0])

    async def cancel_scheduled(self, *, queue: str, sequence_number: int) -> bool:
        """Cancel a scheduled message; False if it was enqueued already or is unknown."""
        try:
            await self._sender(queue, topic=False).cancel_scheduled_messages(sequence_number)
        except ServiceBusError:
            return False
        return True

    async def receive(
        self,
        *,
        source: Source,
        max_messages: int = 10,
        visibility_timeout_s: float = 60,
        wait_s: float = 0,
    ) -> list[Lease]:
        check_receive(
            max_messages=max_messages,
            visibility_timeout_s=visibility_timeout_s,
            longest_s=self.capabilities.max_visibility_timeout_s,
        )
        await self._locks.tend()
        receiver = await self._resolve(source)
        try:
            messages = await receiver.receive_messages(
                max_message_count=min(max_messages, MAX_RECEIVE),
                max_wait_time=max(wait_s, self.min_wait_s),
            )
        except MessagingEntityNotFoundError as exc:
            self._receivers.pop(source, None)
            raise NotFound(f"no such queue or subscription: {source}") from exc
        renew_until = self.clock.now() + timedelta(seconds=visibility_timeout_s)
        leases = []
        keep = visibility_timeout_s > self.lock_duration_s
        for message in messages:
            receipt = str(message.lock_token)
            self._locks.hold(receipt, Held(receiver, message, renew_until), keep=keep)
            leases.append(
                Lease(
                    source=source,
                    message_id=str(message.message_id or message.sequence_number),
                    body=_body(message),
                    attributes=_attributes(message),
                    delivery_count=(message.delivery_count or 0) + 1,
                    receipt=receipt,
                )
            )
        return leases

    def _take(self, lease: Lease) -> Held:
        held = self._locks.take(lease.receipt)
        if held is None:
            raise Conflict(f"lease on message {lease.message_id} is not held by this bus")
        return held

    async def ack(self, *, lease: Lease) -> None:
        held = self._take(lease)
        try:
            await held.receiver.complete_message(held.message)
        except SETTLE_ERRORS as exc:
            raise Conflict(f"lease on message {lease.message_id} was lost: {exc}") from exc

    async def release(self, *, lease: Lease, delay_s: float = 0) -> None:
        if delay_s < 0:
            raise InvalidRequest("delay must not be negative")
        held = self._take(lease)
        if delay_s > 0:  # keep (and renew) the lock until then, then abandon
            held.abandon_at = self.clock.now() + timedelta(seconds=delay_s)
            self._locks.hold(lease.receipt, held, keep=True)
            return
        try:
            await held.receiver.abandon_message(held.message)
        except SETTLE_ERRORS as exc:
            raise Conflict(f"lease on message {lease.message_id} was lost: {exc}") from exc

    async def dead_letter(self, *, lease: Lease, reason: str) -> None:
        if isinstance(lease.source, Queue) and lease.source.name.endswith(DLQ_SUFFIX):
            raise InvalidRequest(f"{lease.source.name} is a dead-letter queue itself")
        held = self._take(lease)
        try:
            await held.receiver.dead_letter_message(
                held.message, reason=cut_reason(reason), error_description=reason[:4000]
            )
        except SETTLE_ERRORS as exc:
            raise Conflict(f"lease on message {lease.message_id} was lost: {exc}") from exc

    # ------------------------------------------------------------------ topics

    async def ensure_topic(self, *, topic: str) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self.admin.create_topic(topic)
        with contextlib.suppress(ResourceExistsError):
            await self.admin.create_queue(topic + DLQ_SUFFIX, lock_duration=self._lock())
        self._real_queues.add(topic + DLQ_SUFFIX)

    async def delete_topic(self, *, topic: str) -> None:
        """Delete the topic (Service Bus deletes its subscriptions with it) and its
        dead-letter queue."""
        for source in [s for s in self._receivers if isinstance(s, Subscription)]:
            if source.topic == topic:
                await self.delete_subscription(topic=topic, name=source.name)
        with contextlib.suppress(ResourceNotFoundError):
            await self.admin.delete_topic(topic)
        with contextlib.suppress(ResourceNotFoundError):
            await self.admin.delete_queue(topic + DLQ_SUFFIX)
        self._real_queues.discard(topic + DLQ_SUFFIX)

    async def publish(self, *, topic: str, message: OutboundMessage) -> str:
        outbound = self._check(message)
        try:
            await self._sender(topic, topic=True).send_messages(outbound)
        except MessagingEntityNotFoundError as exc:
            raise NotFound(f"no such topic: {topic}") from exc
        except MessageSizeExceededError as exc:
            raise InvalidRequest(f"message too large for Service Bus: {exc}") from exc
        return str(outbound.message_id)

    async def ensure_subscription(
        self, *, topic: str, name: str, filter: Mapping[str, str]
    ) -> Subscription:
        wanted = dict(filter)
        try:
            await self.admin.create_subscription(
                topic,
                name,
                max_delivery_count=SUBSCRIPTION_DELIVERIES,
                lock_duration=self._lock(),
                dead_lettering_on_message_expiration=True,
                forward_dead_lettered_messages_to=topic + DLQ_SUFFIX,
            )
        except ResourceNotFoundError as exc:
            raise NotFound(f"no such topic: {topic}") from exc
        except ResourceExistsError:
            await self._fix_rules(topic, name, wanted)
            return Subscription(topic, name)
        # Born with the match-all $Default rule: remove it first (see the module docstring).
        with contextlib.suppress(ResourceNotFoundError):
            await self.admin.delete_rule(topic, name, "$Default")
        await self._create_rule(topic, name, wanted)
        return Subscription(topic, name)

    async def _create_rule(self, topic: str, name: str, wanted: dict[str, str]) -> None:
        rule_filter: CorrelationRuleFilter | TrueRuleFilter = (
            CorrelationRuleFilter(properties=dict(wanted)) if wanted else TrueRuleFilter()
        )
        await self.admin.create_rule(topic, name, RULE_NAME, filter=rule_filter)

    async def _fix_rules(self, topic: str, name: str, wanted: dict[str, str]) -> None:
        """Make ``RULE_NAME`` with ``wanted`` the subscription's only rule."""
        rules = [rule async for rule in self.admin.list_rules(topic, name)]
        ours = next((rule for rule in rules if rule.name == RULE_NAME), None)
        current = getattr(ours.filter, "properties", None) if ours is not None else None
        matches = ours is not None and (
            dict(current or {}) == wanted
            if wanted
            else isinstance(ours.filter, TrueRuleFilter) or current is None
        )
        for rule in rules:
            if rule.name != RULE_NAME:
                with contextlib.suppress(ResourceNotFoundError):
                    await self.admin.delete_rule(topic, name, rule.name)
        if not matches:
            if ours is not None:
                with contextlib.suppress(ResourceNotFoundError):
                    await self.admin.delete_rule(topic, name, RULE_NAME)
            await self._create_rule(topic, name, wanted)

    async def delete_subscription(self, *, topic: str, name: str) -> None:
        source = Subscription(topic, name)
        receiver = self._receivers.pop(source, None)
        self._locks.forget(receiver)
        if receiver is not None:
            with contextlib.suppress(ServiceBusError):
                await receiver.close()
        with contextlib.suppress(ResourceNotFoundError):
            await self.admin.delete_subscription(topic, name)

    async def close(self) -> None:
        await self._locks.close()
        for handler in [*self._receivers.values(), *self._senders.values()]:
            with contextlib.suppress(ServiceBusError):
                await handler.close()
        self._receivers.clear()
        self._senders.clear()
        await self.client.close()
        await self.admin.close()
        if self._credential is not None:
            await self._credential.close()
