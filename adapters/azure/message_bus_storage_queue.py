"""StorageQueueMessageBus: the MessageBus on Azure Storage queues, for deployments without a
Service Bus namespace (one storage account runs bus, state and blobs).

Features
    * Queues: ``receive`` leases with the queue's visibility timeout (peek-lock of Storage
      queues); the lease receipt is the message id plus its pop receipt, so ``ack`` (delete),
      ``release`` (new visibility timeout) and ``dead_letter`` need the *current* pop receipt --
      a stale one is ``core.errors.Conflict``. ``delivery_count`` is the dequeue count.
    * Dead letters: a message dequeued more than ``max_deliveries`` times (kept in the queue's
      metadata by ``ensure_queue``) moves to ``<queue>-poison`` -- the queue the Azure Functions
      host uses for the same purpose, so the queue trigger and this adapter share one poison
      queue -- with the attributes ``dead_letter_reason`` and ``dead_letter_source``. The port's
      ``dead_letter_queue(name)`` (``<name>-dlq``) is that queue.
    * The dispatch topic is emulated: each subscription is a queue named
      ``sub-<hash>-<subscription name>`` (the container GUID stays visible) whose metadata holds
      the topic, the subscription name and the attribute filter. ``publish`` lists the
      subscription queues (one call) and sends a copy to every one whose filter matches, so a
      new subscription takes effect at once (``filter_propagation_s=0``).
      ``delete_subscription`` deletes the queue and what it holds; its poison messages go to
      ``<topic>-poison``.
    * Messages have no attributes on Storage queues: body and attributes travel in a JSON
      envelope (``{"v":1,"id":..,"a":{..},"b":"<base64 body>"}``, see ``storage_queue_wire``;
      the queue trigger of ``functions/azure`` decodes it, its host running with
      ``"messageEncoding": "none"``). Messages never expire (TTL -1).
    * Delays (``send(delay_s=)``, ``release(delay_s=)``) are the initial visibility timeout,
      in whole seconds rounded up; a delay under one second is waited out in-process and the
      message sent visible. ``receive(wait_s=)`` polls (50 ms doubling to 1 s) -- Storage
      queues have no long polling.

Limits
    Body plus attributes at most 46 KiB (a queue message is 64 KiB of text; base64 costs a
    third); delays and visibility timeouts 1 s granularity and at most 7 days; at most 32
    messages per service call. Queue names are Storage rules (3-63 lowercase letters, digits,
    single hyphens). A queue deleted on Azure cannot be re-created for ~30 s: re-creating a
    subscription just deleted retries for up to a minute. Every message is at-least-once.

Settings and cost
    ``SKYCRAWL_AZURE_BUS=storage-queue`` with ``SKYCRAWL_AZURE_STORAGE_CONNECTION_STRING`` or
    ``..._STORAGE_ACCOUNT``. Idle cost is the polling: each waiting receiver makes about one
    call a second (~2.6 M transactions a month, well under a dollar); nothing else runs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import uuid
from collections.abc import Mapping

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueMessage
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from adapters.azure.errors import translated_errors
from adapters.azure.storage_queue_wire import (
    DLQ_SUFFIX,
    MAX_DELAY_S,
    MAX_MESSAGE_BYTES,
    POISON_SUFFIX,
    check_topic,
    checked_text,
    decode_envelope,
    encode_envelope,
    lost_lease,
    parse_receipt,
    physical_queue,
    queue_name,
    receipt_of,
    split_delay,
    subscription_queue,
)
from core.clock import Clock, SystemClock
from core.errors import Conflict, InvalidRequest, NotFound, Retryable
from core.ports.message_bus import (
    DEAD_LETTER_REASON,
    BusCapabilities,
    Lease,
    OutboundMessage,
    Queue,
    Source,
    Subscription,
    check_receive,
    dead_letter_attributes,
)

SUBSCRIPTION_DELIVERIES = 5
POLL_MIN_S = 0.05
POLL_MAX_S = 1.0
_BATCH = 32
_RECREATE_FOR_S = 60.0
_META_DELIVERIES, _META_TOPIC = "skycrawl_max_deliveries", "skycrawl_topic"
_META_NAME, _META_FILTER = "skycrawl_subscription", "skycrawl_filter"


def _filter_of(metadata: Mapping[str, str]) -> dict[str, str] | None:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(metadata.get(_META_FILTER, "")))
    except (ValueError, binascii.Error):
        return None
    return decoded if isinstance(decoded, dict) else None


# --------------------------------------------------------------------------- the bus


@translated_errors("Queue storage")
class StorageQueueMessageBus:
    """MessageBus on Storage queues; the topic is a set of metadata-tagged queues."""

    capabilities = BusCapabilities(
        max_message_bytes=MAX_MESSAGE_BYTES,
        filters_applied=True,
        filter_propagation_s=0,
        max_visibility_timeout_s=MAX_DELAY_S,
        native_dead_letter=False,
    )

    def __init__(
        self,
        service: QueueServiceClient,
        *,
        clock: Clock | None = None,
        credential: AsyncTokenCredential | None = None,
    ) -> None:
        self.service = service
        self._credential = credential  # closed with the bus
        self.clock: Clock = clock or SystemClock()
        self._queues: dict[str, QueueClient] = {}
        self._max_deliveries: dict[str, int | None] = {}

    def queue(self, physical: str) -> QueueClient:
        client = self._queues.get(physical)
        if client is None:
            client = self._queues[physical] = self.service.get_queue_client(physical)
        return client

    # ------------------------------------------------------------------ queues

    async def ensure_queue(self, *, name: str, max_deliveries: int = 5) -> None:
        if max_deliveries < 1:
            raise InvalidRequest("max_deliveries must be at least 1")
        if name.endswith(DLQ_SUFFIX):
            raise InvalidRequest(f"queue names ending in {DLQ_SUFFIX!r} are dead-letter queues")
        physical = queue_name(name)
        await self._create(physical, {_META_DELIVERIES: str(max_deliveries)})
        await self._create(queue_name(name + DLQ_SUFFIX), {})
        self._max_deliveries[physical] = max_deliveries

    async def _create(self, physical: str, metadata: dict[str, str]) -> None:
        client = self.queue(physical)
        deadline = asyncio.get_running_loop().time() + _RECREATE_FOR_S
        while True:
            try:
                await client.create_queue(metadata=metadata)
                return
            except ResourceExistsError as exc:
                if getattr(exc, "error_code", None) != "QueueBeingDeleted":  # other metadata
                    await client.set_queue_metadata(metadata=metadata)
                    return
                if asyncio.get_running_loop().time() > deadline:
                    raise Retryable(f"queue {physical} is still being deleted") from exc
                await asyncio.sleep(2.0)

    async def send(self, *, queue: str, message: OutboundMessage, delay_s: float = 0) -> str:
        message_id, _ = await self.send_at_delay(queue=queue, message=message, delay_s=delay_s)
        return message_id

    async def send_at_delay(
        self, *, queue: str, message: OutboundMessage, delay_s: float
    ) -> tuple[str, str]:
        """Send; returns ``(message id, receipt of the stored copy)`` (the scheduler's handle)."""
        message_id = uuid.uuid4().hex
        text = checked_text(message_id, message)
        wait_s, visibility = split_delay(delay_s)
        physical = queue_name(queue)
        if wait_s:
            await asyncio.sleep(wait_s)
        stored = await self._put(physical, text, visibility)
        return message_id, receipt_of(physical, stored)

    async def _put(self, physical: str, text: str, visibility: int = 0) -> QueueMessage:
        try:
            return await self.queue(physical).send_message(
                text, visibility_timeout=visibility or None, time_to_live=-1
            )
        except ResourceNotFoundError as exc:
            raise NotFound(f"no such queue: {physical}") from exc

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
            longest_s=MAX_DELAY_S,
        )
        physical = physical_queue(source)
        visibility = max(1, math.ceil(visibility_timeout_s))
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + max(wait_s, 0), POLL_MIN_S
        while True:
            leases = await self._lease(source, physical, max_messages, visibility)
            remaining = deadline - loop.time()
            if leases or remaining <= 0:
                return leases
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, POLL_MAX_S)

    async def _lease(
        self, source: Source, physical: str, count: int, visibility: int
    ) -> list[Lease]:
        limit = await self._limit(source, physical)
        leases: list[Lease] = []
        while len(leases) < count:
            want = min(count - len(leases), _BATCH)
            try:
                pages = self.queue(physical).receive_messages(
                    messages_per_page=want, max_messages=want, visibility_timeout=visibility
                )
                batch = [message async for message in pages]
            except ResourceNotFoundError as exc:
                raise NotFound(f"no such queue or subscription: {physical}") from exc
            for message in batch:
                lease = self._to_lease(source, physical, message)
                if limit is not None and lease.delivery_count > limit:
                    reason = f"delivered {lease.delivery_count} times (max_deliveries={limit})"
                    with contextlib.suppress(Conflict):
                        await self._move_to_poison(source, lease, reason)
                    continue
                leases.append(lease)
            if len(batch) < want:
                break
        return leases

    def _to_lease(self, source: Source, physical: str, message: QueueMessage) -> Lease:
        envelope = decode_envelope(message.content or "", fallback_id=message.id)
        attributes = envelope.attributes
        if physical.endswith(POISON_SUFFIX) and DEAD_LETTER_REASON not in attributes:
            attributes = {**attributes, DEAD_LETTER_REASON: "poison message (Functions host)"}
        return Lease(
            source=source,
            message_id=envelope.message_id,
            body=envelope.body,
            attributes=attributes,
            delivery_count=message.dequeue_count or 1,
            receipt=receipt_of(physical, message),
        )

    async def _limit(self, source: Source, physical: str) -> int | None:
        """Deliveries before a message of ``physical`` is dead-lettered (None: no limit)."""
        if isinstance(source, Subscription):
            return SUBSCRIPTION_DELIVERIES
        if physical not in self._max_deliveries:
            try:
                properties = await self.queue(physical).get_queue_properties()
            except ResourceNotFoundError as exc:
                raise NotFound(f"no such queue: {physical}") from exc
            value = (properties.metadata or {}).get(_META_DELIVERIES)
            self._max_deliveries[physical] = int(value) if value and value.isdigit() else None
        return self._max_deliveries[physical]

    async def ack(self, *, lease: Lease) -> None:
        await self._delete(lease.receipt, lease)

    async def _delete(self, receipt: str, lease: Lease) -> None:
        parsed = parse_receipt(receipt)
        if parsed is None:
            raise lost_lease(lease)
        physical, message_id, pop_receipt = parsed
        try:
            await self.queue(physical).delete_message(message_id, pop_receipt)
        except (ResourceNotFoundError, HttpResponseError) as exc:
            if isinstance(exc, ResourceNotFoundError) or exc.status_code == 400:
                raise lost_lease(lease) from exc
            raise

    async def release(self, *, lease: Lease, delay_s: float = 0) -> None:
        if not 0 <= delay_s <= MAX_DELAY_S:
            raise InvalidRequest(f"delay must be between 0 and {MAX_DELAY_S:.0f} seconds")
        parsed = parse_receipt(lease.receipt)
        if parsed is None:
            raise lost_lease(lease)
        physical, message_id, pop_receipt = parsed
        try:
            await self.queue(physical).update_message(
                message_id, pop_receipt, visibility_timeout=math.ceil(delay_s)
            )
        except (ResourceNotFoundError, HttpResponseError) as exc:
            if isinstance(exc, ResourceNotFoundError) or exc.status_code == 400:
                raise lost_lease(lease) from exc
            raise

    async def dead_letter(self, *, lease: Lease, reason: str) -> None:
        physical = physical_queue(lease.source)
        if physical.endswith(POISON_SUFFIX):
            raise InvalidRequest(f"{physical} is a dead-letter queue itself")
        await self._move_to_poison(lease.source, lease, reason)

    async def _move_to_poison(self, source: Source, lease: Lease, reason: str) -> None:
        """Copy to the poison queue, then delete the original (or withdraw the copy)."""
        if isinstance(source, Queue):
            target, origin = queue_name(source.name + DLQ_SUFFIX), source.name
        else:
            target = queue_name(source.topic + DLQ_SUFFIX)
            origin = f"{source.topic}/{source.name}"
        attributes = dead_letter_attributes(lease.attributes, reason=reason, source=origin)
        text = encode_envelope(lease.message_id, lease.body, attributes)
        copy = await self._put(target, text)
        try:
            await self._delete(lease.receipt, lease)
        except Conflict:
            with contextlib.suppress(ResourceNotFoundError, HttpResponseError):
                await self.queue(target).delete_message(copy.id, copy.pop_receipt)
            raise

    # ------------------------------------------------------------------ topics

    async def ensure_topic(self, *, topic: str) -> None:
        check_topic(topic)
        await self._create(queue_name(topic + DLQ_SUFFIX), {})

    async def delete_topic(self, *, topic: str) -> None:
        """Delete every subscription queue of the topic and its dead-letter queue."""
        check_topic(topic)
        doomed: list[str] = []
        async for properties in self.service.list_queues(
            name_starts_with="sub-", include_metadata=True
        ):
            if (properties.metadata or {}).get(_META_TOPIC) == topic:
                doomed.append(str(properties.name))
        for physical in [*doomed, queue_name(topic + DLQ_SUFFIX)]:
            with contextlib.suppress(ResourceNotFoundError):
                await self.queue(physical).delete_queue()
            client = self._queues.pop(physical, None)
            if client is not None:
                await client.close()

    async def publish(self, *, topic: str, message: OutboundMessage) -> str:
        check_topic(topic)
        message_id = uuid.uuid4().hex
        text = checked_text(message_id, message)
        attributes = dict(message.attributes)
        targets: list[str] = []
        async for properties in self.service.list_queues(
            name_starts_with="sub-", include_metadata=True
        ):
            metadata = properties.metadata or {}
            wanted = _filter_of(metadata)
            if metadata.get(_META_TOPIC) != topic or wanted is None:
                continue
            if all(attributes.get(k) == v for k, v in wanted.items()):
                targets.append(str(properties.name))
        for physical in targets:
            with contextlib.suppress(NotFound):  # deleted since the listing: nobody to tell
                await self._put(physical, text)
        return message_id

    async def ensure_subscription(
        self, *, topic: str, name: str, filter: Mapping[str, str]
    ) -> Subscription:
        check_topic(topic)
        encoded = json.dumps(dict(filter), sort_keys=True, separators=(",", ":")).encode()
        metadata = {
            _META_TOPIC: topic,
            _META_NAME: base64.urlsafe_b64encode(name.encode()).decode(),
            _META_FILTER: base64.urlsafe_b64encode(encoded).decode(),
        }
        await self._create(subscription_queue(topic, name), metadata)
        return Subscription(topic, name)

    async def delete_subscription(self, *, topic: str, name: str) -> None:
        physical = subscription_queue(topic, name)
        with contextlib.suppress(ResourceNotFoundError):
            await self.queue(physical).delete_queue()
        client = self._queues.pop(physical, None)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        for client in self._queues.values():
            await client.close()
        self._queues.clear()
        await self.service.close()
        if self._credential is not None:
            await self._credential.close()
