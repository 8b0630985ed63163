"""MessageBus port: queues with leases, and a topic with per-container filtered subscriptions.

A *queue* (the conductor inbox) is point-to-point with at-least-once delivery: ``receive``
leases messages for ``visibility_timeout`` seconds; ``ack`` removes one; ``release`` makes it
visible again (optionally after a delay); after ``max_deliveries`` leases a message moves to the
queue's dead-letter queue (``dead_letter_queue(name)``), as does ``dead_letter``.

The *dispatch topic* fans out to subscriptions. Each container owns one subscription whose
filter is ``{"container_id": GUID}``; the subscription is received from like a queue, as
``Subscription(topic, name)``. Brokers differ in how reliably filters apply (``filters_applied``,
``filter_propagation_s``), so receivers must check ``container_id`` themselves.

A dead-lettered message carries two attributes on every backend, named once here:
``DEAD_LETTER_REASON`` (``dead_letter_reason``: why, at most ``MAX_REASON_BYTES`` bytes of
UTF-8 -- within every broker's attribute limit) and ``DEAD_LETTER_SOURCE``
(``dead_letter_source``: the queue, or ``topic/subscription``, it came from). Adapters build
them with ``dead_letter_attributes``, whether they move the message themselves or read the
broker's own dead-letter properties back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    body: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Queue:
    name: str


@dataclass(frozen=True, slots=True)
class Subscription:
    topic: str
    name: str


Source = Queue | Subscription


@dataclass(frozen=True, slots=True)
class Lease:
    """A received message, held until acked, released or its visibility timeout ends."""

    source: Source
    message_id: str
    body: bytes
    attributes: Mapping[str, str]
    delivery_count: int
    receipt: str  # adapter-specific token proving the lease (lease id, receipt handle, ack id)


@dataclass(frozen=True, slots=True)
class BusCapabilities:
    max_message_bytes: int
    filters_applied: bool  # False where the broker (or its emulator) ignores filters
    filter_propagation_s: float  # how long a new filter may take to take effect
    max_visibility_timeout_s: float
    native_dead_letter: bool
    #: Most subscriptions (filter policies on SNS) one topic may hold; None: no such limit.
    #: One tenant's live containers share its topic, so this caps each tenant's fleet: the
    #: conductor keeps a crawl waiting in the backlog, with the reason, instead of starting a
    #: container that could not subscribe.
    max_subscriptions_per_topic: int | None = None


def check_receive(*, max_messages: int, visibility_timeout_s: float, longest_s: float) -> None:
    """The argument checks every ``MessageBus.receive`` makes (``InvalidRequest`` if wrong)."""
    if max_messages < 1:
        raise InvalidRequest("max_messages must be at least 1")
    if not 0 < visibility_timeout_s <= longest_s:
        hours = longest_s / 3600
        limit = f"{hours / 24:g} days" if hours >= 48 else f"{hours:g} hours"
        raise InvalidRequest(f"visibility timeout must be above 0 and at most {limit}")


DEAD_LETTER_REASON = "dead_letter_reason"
DEAD_LETTER_SOURCE = "dead_letter_source"
MAX_REASON_BYTES = 1000


def cut_reason(reason: str) -> str:
    """``reason`` cut to ``MAX_REASON_BYTES`` bytes of UTF-8 (never in the middle of a
    character), and never empty."""
    return reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore") or "-"


def dead_letter_attributes(
    attributes: Mapping[str, str], *, reason: str, source: str
) -> dict[str, str]:
    """``attributes`` plus the reason and the source of a dead-lettered message."""
    return {**attributes, DEAD_LETTER_REASON: cut_reason(reason), DEAD_LETTER_SOURCE: source}


def dead_letter_queue(name: str) -> str:
    """Name of the dead-letter queue belonging to queue ``name``."""
    return f"{name}-dlq"


class MessageBus(Protocol):
    capabilities: BusCapabilities

    async def ensure_queue(self, *, name: str, max_deliveries: int = 5) -> None:
        """Create the queue and its dead-letter queue if they do not exist."""
        ...

    async def send(self, *, queue: str, message: OutboundMessage, delay_s: float = 0) -> str:
        """Enqueue; returns the message id. ``delay_s`` within the scheduler's native limit."""
        ...

    async def receive(
        self,
        *,
        source: Source,
        max_messages: int = 10,
        visibility_timeout_s: float = 60,
        wait_s: float = 0,
    ) -> list[Lease]:
        """Lease up to ``max_messages`` visible messages, waiting up to ``wait_s`` for one."""
        ...

    async def ack(self, *, lease: Lease) -> None:
        """Remove a leased message for good. Acking an expired lease is a no-op or Conflict."""
        ...

    async def release(self, *, lease: Lease, delay_s: float = 0) -> None:
        """Give a leased message back, visible again after ``delay_s``."""
        ...

    async def dead_letter(self, *, lease: Lease, reason: str) -> None:
        """Move a leased message to its dead-letter queue with ``reason``."""
        ...

    async def ensure_topic(self, *, topic: str) -> None:
        """Create the topic and its dead-letter queue if they do not exist."""
        ...

    async def delete_topic(self, *, topic: str) -> None:
        """Remove the topic, every subscription on it with what they hold, and its dead-letter
        queue (a tenant's teardown); missing is not an error."""
        ...

    async def publish(self, *, topic: str, message: OutboundMessage) -> str:
        """Deliver to every subscription of ``topic`` whose filter matches the attributes."""
        ...

    async def ensure_subscription(
        self, *, topic: str, name: str, filter: Mapping[str, str]
    ) -> Subscription:
        """Create (idempotently) a subscription receiving messages whose attributes match."""
        ...

    async def delete_subscription(self, *, topic: str, name: str) -> None:
        """Remove a subscription and what it holds; missing is not an error."""
        ...

    async def close(self) -> None: ...


class GroupPublish(Protocol):
    """A bus that publishes several messages at once (optional: see ``publish_each``)."""

    async def publish_many(self, *, topic: str, messages: Sequence[OutboundMessage]) -> list[str]:
        """``publish`` of each message in turn, stored together: after a crash, all of them
        or none. Returns their ids."""
        ...


async def publish_each(
    bus: MessageBus, *, topic: str, messages: Sequence[OutboundMessage]
) -> list[str]:
    """``publish`` each of ``messages`` to ``topic``, in order: at once where the bus can
    (``GroupPublish``: the local SQLite bus, one commit instead of one each,
    ``bench/routing_bench.py``), else one by one. Returns their ids."""
    group = getattr(bus, "publish_many", None)  # not isinstance: see ``write_chains``
    if group is not None and len(messages) > 1:
        ids: list[str] = await group(topic=topic, messages=messages)
        return ids
    return [await bus.publish(topic=topic, message=message) for message in messages]
