"""The wire format of ``StorageQueueMessageBus``: queue names, the message envelope, delays
and lease receipts (Storage queues carry only text, have naming rules and count visibility in
whole seconds).

* ``queue_name`` / ``subscription_queue``: the Storage queue behind a port ``Queue`` or
  ``Subscription`` (``<queue>-dlq`` is ``<queue>-poison``, the Functions host's poison queue;
  a subscription is ``sub-<hash>-<name>``).
* ``encode_envelope`` / ``decode_envelope``: ``{"v":1,"id":..,"a":{..},"b":"<base64>"}``, the
  text of every message; the queue trigger of ``functions/azure`` decodes it too.
* ``split_delay``: whole seconds rounded up, sub-second delays waited out in-process.
* ``receipt_of`` / ``parse_receipt``: a lease receipt (and a schedule handle) is the queue,
  the message id and its pop receipt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import Conflict, InvalidRequest
from core.ports.message_bus import Lease, OutboundMessage, Queue, Source

if TYPE_CHECKING:  # the function app decodes envelopes without importing the queue SDK
    from azure.storage.queue import QueueMessage

MAX_MESSAGE_BYTES = 46 * 1024
MAX_TEXT_CHARS = 64 * 1024
MAX_DELAY_S = 7 * 86400.0
_QUEUE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_TOPIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
DLQ_SUFFIX, POISON_SUFFIX = "-dlq", "-poison"


# --------------------------------------------------------------------------- names


def queue_name(name: str) -> str:
    """The Storage queue behind ``Queue(name)``: itself, or ``<base>-poison`` for ``<base>-dlq``."""
    physical = name[: -len(DLQ_SUFFIX)] + POISON_SUFFIX if name.endswith(DLQ_SUFFIX) else name
    if not _QUEUE_NAME.fullmatch(physical):
        raise InvalidRequest(
            f"invalid queue name {name!r}: 3-63 lowercase letters, digits and single hyphens"
        )
    return physical


def subscription_queue(topic: str, name: str) -> str:
    """The Storage queue behind ``Subscription(topic, name)``."""
    digest = hashlib.sha256(f"{topic}\n{name}".encode()).hexdigest()[:8]
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9]", "-", name.lower())).strip("-")
    return f"sub-{digest}-{slug}"[:63].rstrip("-") if slug else f"sub-{digest}"


def physical_queue(source: Source) -> str:
    if isinstance(source, Queue):
        return queue_name(source.name)
    return subscription_queue(source.topic, source.name)


def check_topic(topic: str) -> None:
    if not _TOPIC_NAME.fullmatch(topic):
        raise InvalidRequest(f"invalid topic name {topic!r}: letters, digits, '.', '_', '-'")


# --------------------------------------------------------------------------- envelope


@dataclass(frozen=True, slots=True)
class Envelope:
    message_id: str
    body: bytes
    attributes: dict[str, str]


def encode_envelope(message_id: str, body: bytes, attributes: Mapping[str, str]) -> str:
    """The queue message text carrying ``body`` and ``attributes``."""
    encoded = base64.b64encode(body).decode("ascii")
    payload = {"v": 1, "id": message_id, "a": dict(attributes), "b": encoded}
    return json.dumps(payload, separators=(",", ":"))


def decode_envelope(text: str | bytes, fallback_id: str = "") -> Envelope:
    """Parse a queue message text; text that is no envelope is returned as the body."""
    raw = text.encode() if isinstance(text, str) else text
    try:
        payload = json.loads(raw)
        if isinstance(payload, dict) and payload.get("v") == 1:
            attributes = {str(k): str(v) for k, v in dict(payload["a"]).items()}
            body = base64.b64decode(payload["b"], validate=True)
            return Envelope(str(payload["id"]), body, attributes)
    except (ValueError, KeyError, TypeError, binascii.Error):
        pass
    return Envelope(fallback_id, raw, {})


def _size(message: OutboundMessage) -> int:
    return len(message.body) + sum(
        len(k.encode()) + len(v.encode()) for k, v in message.attributes.items()
    )


def checked_text(message_id: str, message: OutboundMessage) -> str:
    size = _size(message)
    if size > MAX_MESSAGE_BYTES:
        raise InvalidRequest(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES} bytes")
    text = encode_envelope(message_id, message.body, message.attributes)
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidRequest("message attributes too large for a Storage queue message")
    return text


def split_delay(delay_s: float) -> tuple[float, int]:
    """``(seconds to wait in-process, visibility timeout)`` delivering no earlier than asked."""
    if not 0 <= delay_s <= MAX_DELAY_S:
        raise InvalidRequest(f"delay must be between 0 and {MAX_DELAY_S:.0f} seconds")
    if delay_s == 0:
        return 0.0, 0
    if delay_s < 1:
        return delay_s, 0
    return 0.0, min(math.ceil(delay_s), int(MAX_DELAY_S))


def receipt_of(queue: str, message: QueueMessage) -> str:
    return json.dumps([queue, message.id, message.pop_receipt])


def parse_receipt(receipt: str) -> tuple[str, str, str] | None:
    """``(queue, message id, pop receipt)`` of a lease or schedule handle, or None."""
    try:
        queue, message_id, pop_receipt = json.loads(receipt)
    except (ValueError, TypeError):
        return None
    if not all(isinstance(part, str) for part in (queue, message_id, pop_receipt)):
        return None
    return queue, message_id, pop_receipt


def lost_lease(lease: Lease) -> Conflict:
    return Conflict(f"lease on message {lease.message_id} is no longer held (superseded or gone)")
