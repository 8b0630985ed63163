"""Webhook signatures: HMAC-SHA256 over ``<timestamp>.<body>``, in one header.

``Skycrawl-Signature: t=1767225600,v1=5257a8…,v1=9d1c4e…`` — ``t`` is the Unix time the
request was signed; each ``v1`` is ``hex(HMAC-SHA256(secret, f"{t}." + body))`` for one
valid secret (two while a rotation's grace period runs). A receiver recomputes the HMAC
with its secret over the raw body it received, compares in constant time with any ``v1``,
and refuses a ``t`` too far from its own clock (default tolerance 5 minutes) against
replays. ``verify_signature`` does exactly that, and ``skycrawl.client`` re-exports it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

SIGNATURE_HEADER = "Skycrawl-Signature"
DEFAULT_TOLERANCE_S = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``hex(HMAC-SHA256(secret, f"{timestamp}." + body))``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def signature_header(secrets: Iterable[str], timestamp: int, body: bytes) -> str:
    """The ``Skycrawl-Signature`` value: ``t=…`` then one ``v1=…`` per secret."""
    return ",".join([f"t={timestamp}", *(f"v1={sign(s, timestamp, body)}" for s in secrets)])


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    *,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """True if ``header`` holds a ``v1`` made with ``secret`` over ``body`` at a time within
    ``tolerance_s`` of ``now`` (the receiver's clock, Unix seconds)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
