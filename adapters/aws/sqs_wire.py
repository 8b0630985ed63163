"""How a ``core.ports.OutboundMessage`` (bytes + string attributes) travels through SQS and SNS.

SQS and SNS carry text bodies of at most 256 KiB (body plus attribute names, types and values)
and at most 10 message attributes, so a message is put on the wire as follows:

* **Text body.** A body that is UTF-8 and uses only characters SQS accepts is sent as is
  (the inbox's JSON stays readable in the console).
* **Binary body.** Anything else is base64-encoded, marked ``skycrawl_encoding=base64``; an
  empty body (SQS refuses empty ones) is sent as ``.`` marked ``skycrawl_encoding=empty``.
* **Claim check.** A message larger than 256 KiB on the wire is stored in S3 under
  ``<claim_check_prefix><uuid>``; the message carries the key in ``skycrawl_claim`` and the
  ``s3://`` URL as its body, and ``decode`` fetches it transparently. Objects are never deleted
  one by one (a topic message has many readers, a queue message may be delivered twice): the
  bucket's lifecycle rule expires the prefix after 15 days, longer than SQS keeps a message.
* **Envelope.** EventBridge Scheduler's SQS target sends only a body, no attributes, so a
  scheduled message is wrapped as ``skycrawl-envelope/1:{"b": body, "a": attributes}``. A plain
  text body that happens to start with that prefix is always base64-encoded on send, so an
  envelope is never ambiguous.

Limits (``core.errors.InvalidRequest`` otherwise): at most 6 caller attributes (10 minus the two
above and the two ``dead_letter`` adds), names of letters, digits, ``_``, ``-`` and ``.`` (not
starting with ``AWS.``/``Amazon.``, no ``..``), non-empty values; names starting ``skycrawl_``
are reserved.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.aws.errors import ClientError, call, error_code
from core.errors import InvalidRequest, NotFound
from core.ports.message_bus import OutboundMessage

MAX_WIRE_BYTES = 256 * 1024
MAX_CALLER_ATTRIBUTES = 6
ENCODING = "skycrawl_encoding"
CLAIM = "skycrawl_claim"
ENVELOPE_PREFIX = "skycrawl-envelope/1:"
_STRING = "String"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class Wire:
    """A message as SQS/SNS carry it: a text body and string attributes."""

    body: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    def size(self) -> int:
        attrs = sum(
            len(k.encode()) + len(_STRING) + len(v.encode()) for k, v in self.attributes.items()
        )
        return len(self.body.encode()) + attrs

    def message_attributes(self) -> dict[str, dict[str, str]]:
        """The attributes in the shape SQS ``SendMessage`` and SNS ``Publish`` take."""
        return {k: {"DataType": _STRING, "StringValue": v} for k, v in self.attributes.items()}

    def envelope(self) -> str:
        """The wire as one body, for senders that cannot set attributes (EventBridge)."""
        content = json.dumps({"b": self.body, "a": dict(self.attributes)}, ensure_ascii=False)
        return ENVELOPE_PREFIX + content


def check_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """Validate caller attributes for SQS (see the module docstring)."""
    checked = dict(attributes)
    if len(checked) > MAX_CALLER_ATTRIBUTES:
        raise InvalidRequest(f"at most {MAX_CALLER_ATTRIBUTES} message attributes on SQS")
    for name, value in checked.items():
        lowered = name.lower()
        if (
            not _NAME.fullmatch(name)
            or ".." in name
            or name.startswith(".")
            or name.endswith(".")
            or lowered.startswith(("aws.", "amazon.", "skycrawl_"))
        ):
            raise InvalidRequest(f"invalid message attribute name {name!r} for SQS")
        if not isinstance(value, str) or not value:
            raise InvalidRequest(f"message attribute {name!r} needs a non-empty string value")
        if _NOT_SQS_TEXT.search(value):
            raise InvalidRequest(f"message attribute {name!r} has characters SQS refuses")
    return checked


def compact_json(document: object) -> str:
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def sanitize(text: str, limit: int = 1000) -> str:
    """``text`` as a valid, non-empty SQS attribute value of at most ``limit`` characters."""
    return _NOT_SQS_TEXT.sub("?", text)[:limit] or "-"


def _text_body(body: bytes) -> tuple[str, dict[str, str]]:
    if not body:
        return ".", {ENCODING: "empty"}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or _NOT_SQS_TEXT.search(text) or text.startswith(ENVELOPE_PREFIX):
        return base64.b64encode(body).decode("ascii"), {ENCODING: "base64"}
    return text, {}


class ClaimChecks:
    """Bodies too large for SQS, stored in S3 (see the module docstring)."""

    def __init__(self, *, s3: Any, bucket: str, prefix: str) -> None:
        self._s3 = s3  # a boto3 S3 client (Any: boto3 has no type stubs)
        self.bucket = bucket
        self.prefix = prefix

    async def put(self, body: bytes) -> str:
        key = f"{self.prefix}{uuid.uuid4().hex}"
        await call(self._s3.put_object, Bucket=self.bucket, Key=key, Body=body)
        return key

    async def get(self, key: str) -> bytes:
        if not key.startswith(self.prefix):
            raise InvalidRequest(f"claim check {key!r} is outside {self.prefix!r}")
        try:
            response = await call(self._s3.get_object, Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"claim check s3://{self.bucket}/{key} is gone") from exc
            raise
        data: bytes = await call(response["Body"].read)
        return data


async def encode(
    message: OutboundMessage,
    *,
    claims: ClaimChecks | None,
    max_bytes: int,
    inline_limit: int = MAX_WIRE_BYTES,
    system: Mapping[str, str] | None = None,
) -> Wire:
    """Put ``message`` on the wire, through S3 if it does not fit in ``inline_limit`` bytes.

    ``system`` attributes (``dead_letter_reason``, ``dead_letter_source``) are added beyond the
    caller's six, with characters SQS refuses replaced."""
    attributes = check_attributes(message.attributes)
    attributes.update({k: sanitize(v) for k, v in (system or {}).items()})
    size = len(message.body) + sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())
    if size > max_bytes:
        raise InvalidRequest(f"message of {size} bytes exceeds {max_bytes} bytes")
    text, marks = _text_body(message.body)
    wire = Wire(text, {**attributes, **marks})
    if wire.size() <= inline_limit:
        return wire
    if claims is None:
        raise InvalidRequest(f"message of {wire.size()} bytes on the wire exceeds {inline_limit}")
    key = await claims.put(message.body)
    wire = Wire(f"s3://{claims.bucket}/{key}", {**attributes, CLAIM: key})
    if wire.size() > inline_limit:
        raise InvalidRequest("message attributes alone exceed the SQS size limit")
    return wire


def unwrap(body: str, attributes: Mapping[str, str]) -> Wire:
    """Open an envelope (a message EventBridge Scheduler delivered); other wires unchanged."""
    if ENCODING in attributes or CLAIM in attributes or not body.startswith(ENVELOPE_PREFIX):
        return Wire(body, dict(attributes))
    try:
        content = json.loads(body[len(ENVELOPE_PREFIX) :])
        inner = Wire(str(content["b"]), {str(k): str(v) for k, v in content["a"].items()})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidRequest(f"malformed message envelope: {exc}") from exc
    return Wire(inner.body, {**attributes, **inner.attributes})


async def decode(wire: Wire, *, claims: ClaimChecks | None) -> tuple[bytes, dict[str, str]]:
    """The body and caller attributes of a received wire (claim checks fetched)."""
    wire = unwrap(wire.body, wire.attributes)
    attributes = dict(wire.attributes)
    encoding = attributes.pop(ENCODING, "")
    key = attributes.pop(CLAIM, None)
    if key is not None:
        if claims is None:
            raise InvalidRequest("a claim-checked message arrived but no bucket is configured")
        return await claims.get(key), attributes
    if encoding == "empty":
        return b"", attributes
    if encoding == "base64":
        try:
            return base64.b64decode(wire.body, validate=True), attributes
        except binascii.Error as exc:
            raise InvalidRequest(f"malformed base64 message body: {exc}") from exc
    return wire.body.encode("utf-8"), attributes
