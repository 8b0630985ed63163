"""The rules of the two buses that keep their messages in a SQL table of their own -- the
embedded SQLite bus (``adapters.local.message_bus``) and the self-hosted PostgreSQL bus
(``adapters.selfhosted.message_bus``) -- written once: how a source is keyed in the table,
which names are valid, and how large a message may be. Both buses say the same thing about
the same input, as the contract suite checks."""

from __future__ import annotations

import re

from core.errors import InvalidRequest
from core.ports import OutboundMessage, Queue, Source

MAX_MESSAGE_BYTES = 256 * 1024
MAX_VISIBILITY_TIMEOUT_S = 12 * 3600.0
MAX_DELAY_S = 30 * 86400.0
POLL_MIN_S, POLL_MAX_S = 0.02, 0.1  # a polling receiver's shortest and longest pause
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def source_key(source: Source) -> str:
    """The ``source`` column of a queue's or a subscription's messages."""
    if isinstance(source, Queue):
        return f"queue/{source.name}"
    return f"sub/{source.topic}/{source.name}"


def check_name(kind: str, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidRequest(f"invalid {kind} name {name!r}: use letters, digits, '.', '_', '-'")


def check_size(message: OutboundMessage) -> dict[str, str]:
    """The message's attributes, once its body and attributes fit ``MAX_MESSAGE_BYTES``."""
    attributes = dict(message.attributes)
    size = len(message.body) + sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())
    if size > MAX_MESSAGE_BYTES:
        raise InvalidRequest(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES} bytes")
    return attributes
