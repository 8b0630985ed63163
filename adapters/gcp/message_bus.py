"""Google Cloud Pub/Sub MessageBus: queues, the dispatch topic and per-container filtered
subscriptions, over the async GAPIC clients (``google.pubsub_v1``; no thread is blocked).

Layout (created by ``pubsub_admin.PubSubAdmin``)
    A queue ``Q`` is the topic ``Q`` with the pull subscription ``Q``; its dead-letter queue is
    the topic ``Q-dlq`` with the subscription ``Q-dlq``, which keeps what was dead-lettered.
    ``ensure_topic(T)`` creates ``T`` and ``T-dlq`` (+ subscription). A container subscription
    ``container-<GUID>`` on the dispatch topic carries the filter
    ``attributes.container_id = "<GUID>"``; it is created before the container says ``ready``
    and deleted when it stops (an idle one also expires after 24 h). Subscription names are
    project-wide: two topics cannot both have a subscription ``s``.

Leases
    ``receive`` is a synchronous pull (``return_immediately`` false, the RPC deadline is the
    remaining ``wait_s``, at least 1 s -- the real service may hold an empty pull that long)
    then ``modify_ack_deadline`` to the visibility timeout, rounded up to whole seconds.
    Pub/Sub's longest ack deadline is 600 s; longer leases are renewed by this instance every
    ~9 minutes until they end (so a dead process loses its leases within 10 minutes). ``ack``
    acknowledges; ``release(delay_s)`` sets the ack deadline to ``delay_s`` (0 redelivers at
    once; at most 600 s). Every subscription is created with exactly-once delivery, so an ack or
    release with a superseded ack id fails -- raised as ``core.errors.Conflict``, as is one on a
    deleted subscription -- and never touches the current holder's lease.

Delivery counts and dead letters
    ``delivery_count`` is Pub/Sub's ``delivery_attempt``, which is only set on subscriptions
    with a dead-letter policy; all subscriptions this bus creates have one. On one without (made
    by hand) this instance counts deliveries itself, which another instance does not see.
    Pub/Sub's ``max_delivery_attempts`` is 5..100: the exact ``max_deliveries`` is kept in the
    subscription label ``skycrawl-max-deliveries`` and a message leased past it is moved by the
    receiver; from 5 on Pub/Sub forwards it natively (push subscriptions too). ``dead_letter``
    publishes the message to the dead-letter topic with ``dead_letter_reason`` and
    ``dead_letter_source`` attributes, then acks it (a crash between the two leaves a copy in
    both: at-least-once). Natively forwarded messages get the reason from Pub/Sub's
    ``CloudPubSubDeadLetterSourceDeliveryCount``. A message keeps its id (the ``skycrawl-id``
    attribute, returned by ``send``/``publish``) into the dead-letter queue.

Filters
    Filters are immutable (a different filter for an existing name is ``Conflict``), take
    effect at creation, and auto-acknowledge what they do not match. Google's emulator stores
    them but does not apply them: ``capabilities.filters_applied`` is False when
    ``emulator=True``, and receivers (the engine) check ``container_id`` themselves anyway.
    Filter keys are attribute names of letters, digits and ``_``; values may not contain
    ``"`` or ``\\``.

Delays
    Pub/Sub has no delayed delivery. ``send(delay_s=...)`` stamps ``skycrawl-not-before``; a
    receiver that pulls the message early hides it again until then (each early pull counts as
    a delivery attempt). Kill timers do not use this: they are Cloud Tasks (``scheduler.py``).

Limits and cost
    10 MB per message (data + attributes), at most 100 attributes, values up to 1024 bytes
    (the reason is cut to 1000). Names: 3-255 of letters, digits, ``-_.~+%``, starting with a
    letter. Pub/Sub bills ~$40 per TiB of throughput (first 10 GiB a month free) and nothing
    while idle; exactly-once delivery adds latency, not cost.

Settings
    ``SKYCRAWL_GCP_PROJECT``, ``SKYCRAWL_GCP_PUBSUB_EMULATOR_HOST`` (or ``PUBSUB_EMULATOR_HOST``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from google.api_core import exceptions as gexc
from google.pubsub_v1 import PublisherAsyncClient, SubscriberAsyncClient, types

from adapters.gcp.errors import TRANSIENT, translate
from adapters.gcp.pubsub_admin import PubSubAdmin
from core.errors import Conflict, InvalidRequest, NotFound, Retryable
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
    dead_letter_attributes,
    dead_letter_queue,
)

log = logging.getLogger("skycrawl.gcp.pubsub")

MAX_MESSAGE_BYTES = 10_000_000
MAX_ACK_DEADLINE_S = 600
MAX_VISIBILITY_TIMEOUT_S = 12 * 3600.0
MIN_PULL_S = 1.0
ID_ATTR = "skycrawl-id"
NOT_BEFORE_ATTR = "skycrawl-not-before"
_NATIVE_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"
_NATIVE_SOURCE = "CloudPubSubDeadLetterSourceSubscription"


def _check_message(message: OutboundMessage) -> dict[str, str]:
    attributes = dict(message.attributes)
    size = len(message.body) + sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())
    if size > MAX_MESSAGE_BYTES:
        raise InvalidRequest(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES} bytes")
    if len(attributes) > 96:
        raise InvalidRequest("a Pub/Sub message carries at most 100 attributes")
    for key, value in attributes.items():
        if not key or len(key.encode()) > 256 or len(value.encode()) > 1024:
            raise InvalidRequest(f"attribute {key[:40]!r} is too long for Pub/Sub")
    return attributes


def _translate(exc: gexc.GoogleAPICallError, what: str) -> Exception:
    """An error of a lease operation: the lease is lost (Conflict) or the call may be retried."""
    if isinstance(exc, gexc.NotFound):
        return Conflict(f"{what}: the subscription is gone")
    if isinstance(exc, gexc.InvalidArgument | gexc.FailedPrecondition):
        return Conflict(f"{what}: {exc.message}")
    return translate(exc, what)


#: Pub/Sub allows 10,000 subscriptions per topic (one per live container of the tenant).
MAX_SUBSCRIPTIONS_PER_TOPIC = 10_000


class PubSubMessageBus:
    """MessageBus on Pub/Sub topics and pull subscriptions of one project."""

    def __init__(
        self,
        *,
        project: str,
        publisher: PublisherAsyncClient,
        subscriber: SubscriberAsyncClient,
        emulator: bool = False,
        max_ack_deadline_s: int = MAX_ACK_DEADLINE_S,
    ) -> None:
        """``emulator``: Google's emulator, which ignores filters. ``max_ack_deadline_s`` is
        Pub/Sub's longest ack deadline; tests lower it to exercise lease renewal."""
        self.admin = PubSubAdmin(project=project, publisher=publisher, subscriber=subscriber)
        self._max_ack = max_ack_deadline_s
        self._pub = publisher
        self._sub = subscriber
        self.capabilities = BusCapabilities(
            max_message_bytes=MAX_MESSAGE_BYTES,
            filters_applied=not emulator,
            filter_propagation_s=0,
            max_visibility_timeout_s=MAX_VISIBILITY_TIMEOUT_S,
            native_dead_letter=True,
            max_subscriptions_per_topic=MAX_SUBSCRIPTIONS_PER_TOPIC,
        )
        self._limits: dict[str, int | None] = {}  # subscription -> max_deliveries
        self._counts: OrderedDict[str, int] = OrderedDict()  # fallback delivery counting
        self._keepers: dict[str, asyncio.Task[None]] = {}  # ack id -> lease renewal

    def topic_path(self, name: str) -> str:
        return self.admin.topic_path(name)

    def subscription_path(self, name: str) -> str:
        return self.admin.subscription_path(name)

    # ----------------------------------------------------------------------------- admin

    async def ensure_queue(self, *, name: str, max_deliveries: int = 5) -> None:
        await self.admin.ensure_queue(name, max_deliveries)
        self._limits[self.subscription_path(name)] = max_deliveries

    async def ensure_topic(self, *, topic: str) -> None:
        await self.admin.ensure_topic(topic)

    async def delete_topic(self, *, topic: str) -> None:
        await self.admin.delete_topic(topic)

    async def ensure_subscription(
        self, *, topic: str, name: str, filter: Mapping[str, str]
    ) -> Subscription:
        await self.admin.ensure_container_subscription(topic, name, filter)
        return Subscription(topic, name)

    async def delete_subscription(self, *, topic: str, name: str) -> None:
        await self.admin.delete_subscription(name)
        self._limits.pop(self.subscription_path(name), None)

    # ----------------------------------------------------------------------------- sending

    async def _publish(self, topic: str, body: bytes, attributes: dict[str, str]) -> None:
        message = types.PubsubMessage(data=body, attributes=attributes)
        try:
            await self._pub.publish(topic=self.topic_path(topic), messages=[message])
        except gexc.NotFound as exc:
            raise NotFound(f"no such topic or queue: {topic}") from exc
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"publish to {topic}") from exc

    async def send(self, *, queue: str, message: OutboundMessage, delay_s: float = 0) -> str:
        attributes = _check_message(message)
        if not 0 <= delay_s <= 30 * 86400:
            raise InvalidRequest("delay must be between 0 and 30 days")
        message_id = attributes[ID_ATTR] = uuid.uuid4().hex
        if delay_s > 0:
            attributes[NOT_BEFORE_ATTR] = f"{time.time() + delay_s:.3f}"
        await self._publish(queue, message.body, attributes)
        return message_id

    async def publish(self, *, topic: str, message: OutboundMessage) -> str:
        attributes = _check_message(message)
        message_id = attributes[ID_ATTR] = uuid.uuid4().hex
        await self._publish(topic, message.body, attributes)
        return message_id

    # ----------------------------------------------------------------------------- receiving

    def _names(self, source: Source) -> tuple[str, str | None]:
        """(subscription path, dead-letter topic) of a source."""
        if isinstance(source, Queue):
            dlq = None if source.name.endswith("-dlq") else dead_letter_queue(source.name)
            return self.subscription_path(source.name), dlq
        return self.subscription_path(source.name), dead_letter_queue(source.topic)

    async def _limit(self, path: str) -> int | None:
        if path not in self._limits:
            self._limits[path] = await self.admin.max_deliveries(path)
        return self._limits[path]

    async def _pull(
        self, path: str, count: int, timeout_s: float
    ) -> Sequence[types.ReceivedMessage]:
        try:
            response = await self._sub.pull(
                subscription=path, max_messages=count, timeout=max(timeout_s, MIN_PULL_S)
            )
        except gexc.NotFound as exc:
            raise NotFound(f"no such queue or subscription: {path}") from exc
        except TRANSIENT as exc:  # an empty long poll ends so on the real service
            log.debug("pull from %s: %s", path, exc)
            return []
        return list(response.received_messages)

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
            longest_s=MAX_VISIBILITY_TIMEOUT_S,
        )
        path, _ = self._names(source)
        limit = await self._limit(path)
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + max(wait_s, 0), 0.05
        while True:
            started = loop.time()
            received = await self._pull(path, max_messages, deadline - started)
            leases = await self._admit(source, received, visibility_timeout_s, limit)
            remaining = deadline - loop.time()
            if leases or remaining <= 0:
                return leases
            if not received and loop.time() - started < remaining / 2:  # the pull came back early
                await asyncio.sleep(min(pause, remaining))
                pause = min(pause * 2, 1.0)

    async def _admit(
        self,
        source: Source,
        received: Sequence[types.ReceivedMessage],
        visibility_s: float,
        limit: int | None,
    ) -> list[Lease]:
        path, _ = self._names(source)
        leases: list[Lease] = []
        for item in received:
            attributes = dict(item.message.attributes)
            not_before = float(attributes.pop(NOT_BEFORE_ATTR, "0") or 0)
            if not_before > time.time():  # a delayed send pulled early: hide it until then
                hide = min(math.ceil(not_before - time.time()), self._max_ack)
                await self._modify(path, [item.ack_id], hide)
                continue
            message_id = attributes.pop(ID_ATTR, "") or item.message.message_id
            count = item.delivery_attempt or self._count(message_id)
            if limit is not None and count > limit:
                reason = f"delivered {count} times (max_deliveries={limit})"
                lease = Lease(source, message_id, item.message.data, attributes, count, item.ack_id)
                with contextlib.suppress(Conflict):
                    await self.dead_letter(lease=lease, reason=reason)
                continue
            if _NATIVE_COUNT in attributes and DEAD_LETTER_REASON not in attributes:
                attributes[DEAD_LETTER_REASON] = (
                    f"delivered {attributes[_NATIVE_COUNT]} times (max_delivery_attempts)"
                )
                attributes[DEAD_LETTER_SOURCE] = attributes.get(_NATIVE_SOURCE, "")
            leases.append(
                Lease(source, message_id, item.message.data, attributes, count, item.ack_id)
            )
        if leases:
            deadline = min(math.ceil(visibility_s), self._max_ack)
            with contextlib.suppress(Conflict):
                await self._modify(path, [lease.receipt for lease in leases], deadline)
            if visibility_s > self._max_ack:
                for lease in leases:
                    self._keep(path, lease.receipt, visibility_s)
        return leases

    def _count(self, message_id: str) -> int:
        count = self._counts.pop(message_id, 0) + 1
        self._counts[message_id] = count
        while len(self._counts) > 10_000:
            self._counts.popitem(last=False)
        return count

    async def _modify(self, path: str, ack_ids: list[str], seconds: int) -> None:
        try:
            await self._sub.modify_ack_deadline(
                subscription=path, ack_ids=ack_ids, ack_deadline_seconds=seconds
            )
        except gexc.GoogleAPICallError as exc:
            raise _translate(exc, f"lease on {path}") from exc

    def _keep(self, path: str, ack_id: str, total_s: float) -> None:
        period = self._max_ack * 0.9  # renew when 90 % of the deadline has passed

        async def renew() -> None:
            elapsed = 0.0
            while True:
                await asyncio.sleep(period)
                elapsed += period
                left = total_s - elapsed
                if left <= 0:
                    return
                try:
                    await self._modify(path, [ack_id], min(self._max_ack, math.ceil(left)))
                except (Conflict, NotFound, Retryable) as exc:
                    log.info("stopped renewing a lease on %s: %s", path, exc)
                    return
                if left <= self._max_ack:
                    return

        task = asyncio.get_running_loop().create_task(renew())
        self._keepers[ack_id] = task
        task.add_done_callback(lambda _: self._keepers.pop(ack_id, None))

    def _stop_keeping(self, ack_id: str) -> None:
        task = self._keepers.pop(ack_id, None)
        if task is not None:
            task.cancel()

    # ----------------------------------------------------------------------------- settling

    async def ack(self, *, lease: Lease) -> None:
        self._stop_keeping(lease.receipt)
        path, _ = self._names(lease.source)
        try:
            await self._sub.acknowledge(subscription=path, ack_ids=[lease.receipt])
        except gexc.GoogleAPICallError as exc:
            raise _translate(exc, f"ack of message {lease.message_id}") from exc

    async def release(self, *, lease: Lease, delay_s: float = 0) -> None:
        if delay_s < 0:
            raise InvalidRequest("delay must not be negative")
        self._stop_keeping(lease.receipt)
        path, _ = self._names(lease.source)
        await self._modify(path, [lease.receipt], min(math.ceil(delay_s), self._max_ack))

    async def dead_letter(self, *, lease: Lease, reason: str) -> None:
        path, target = self._names(lease.source)
        if target is None:
            raise InvalidRequest(f"{lease.source} is a dead-letter queue itself")
        attributes = dead_letter_attributes(
            {**lease.attributes, ID_ATTR: lease.message_id},
            reason=reason,
            source=path.rsplit("/", 1)[1],
        )
        await self._publish(target, lease.body, attributes)
        await self.ack(lease=lease)

    async def close(self) -> None:
        for task in list(self._keepers.values()):
            task.cancel()
        self._keepers.clear()
        for client in (self._pub, self._sub):
            await client.transport.close()  # type: ignore[no-untyped-call]
