"""AWS MessageBus: SQS queues with dead-letter queues, and an SNS dispatch topic that fans out
to one SQS queue per container, filtered on the ``container_id`` message attribute.

Features
    * Queues are SQS standard queues. ``ensure_queue`` creates ``<name>-dlq`` (14 days'
      retention) and ``<name>`` with a redrive policy ``maxReceiveCount = max_deliveries``:
      SQS itself moves a message delivered that often to the dead-letter queue. Messages moved
      that way carry no reason, so ``receive`` from a ``-dlq`` queue adds
      ``dead_letter_reason``; ``dead_letter(reason=...)`` sends the message to the dead-letter
      queue with ``dead_letter_reason`` and ``dead_letter_source``, then deletes it.
    * Leases are receipt handles. ``receive`` asks for ``visibility_timeout_s`` rounded *up* to
      whole seconds (SQS's granularity, at least 1 s); ``ack`` is ``DeleteMessage``,
      ``release`` is ``ChangeMessageVisibility`` and ``delivery_count`` is
      ``ApproximateReceiveCount``. A lease whose visibility timeout has run out (measured from
      before the receive call, so on the safe side) may belong to another receiver by now:
      ``ack``, ``release`` and ``dead_letter`` of such a lease raise ``core.errors.Conflict``
      without touching SQS (AWS ignores a stale receipt handle on delete, moto honours it;
      neither may remove or expose another receiver's message). The message comes back, and
      the core handles it again -- its handlers are idempotent.
    * ``receive(wait_s=...)`` long-polls (``WaitTimeSeconds``, whole seconds, at least 1,
      repeated past 20 s). ``wait_s=0`` is a short poll, which on AWS samples a subset of the
      servers and may come back empty although messages wait: loops should long-poll.
    * The dispatch topic is SNS. ``ensure_subscription(topic, name, filter)`` creates the SQS
      queue ``<subscription_queue_prefix><8 hex of the topic>-<name>`` (a queue policy lets only
      that topic send to it; dead letters after 5 deliveries go to ``<topic>-dlq``), subscribes
      it with raw message delivery and ``FilterPolicy = {attribute: [value]}`` on message
      attributes, and tags the queue with the subscription ARN (``adapters.aws.sns_topics``).
      It returns only when the subscription exists, so a container subscribes *before* it
      says ``ready``.
      ``delete_subscription`` unsubscribes (ARN from the tag, or found by endpoint) and deletes
      the queue with whatever it holds: no leaked queues or subscriptions.
    * Why SNS rather than sending straight to a container's queue: ``publish`` must reach every
      subscription whose filter matches (the port fans out); doing that in the client would
      mean listing queues and their tags on every publish. SNS filters server-side and costs
      one call. Its one weakness -- a new filter policy can take up to 15 minutes to apply, so a
      fresh subscription may briefly receive other containers' messages -- is covered by the
      engine, which drops every message whose ``container_id`` is not its own, whatever the
      broker promised (``filters_applied=True``, ``filter_propagation_s=900``).
    * Bodies are bytes; see ``adapters.aws.sqs_wire`` for text/base64 bodies, claim checks
      through S3 for bodies over 256 KiB (up to ``max_message_bytes``, default 4 MiB) and the
      envelope of messages EventBridge Scheduler delivers.
    * boto3 is synchronous: every call runs in a worker thread (``adapters.aws.errors.call``),
      and throttling or 5xx answers surface as ``core.errors.Retryable``.

Limits
    Queue names 1-76 letters, digits, ``-`` and ``_``; ``delay_s`` 0-900 s (rounded up to whole
    seconds); visibility up to 12 h; at most 10 messages per receive; 6 caller attributes with
    non-empty values. SNS allows 200 filter policies per topic by default (AWS raises it on
    request: set ``max_filter_policies_per_topic``): each tenant has its own topic, so that is
    each tenant's most live containers; the conductor holds further crawls in the backlog
    with the reason (``BusCapabilities.max_subscriptions_per_topic``). A subscription queue
    deleted less than 60 s ago cannot be created again
    on AWS (``QueueDeletedRecently`` → ``Retryable``); container GUIDs are never reused.

Settings
    ``SKYCRAWL_AWS_REGION``, ``_ENDPOINT_URL``, ``_BUCKET`` (claim checks),
    ``_CLAIM_CHECK_PREFIX``, ``_MAX_MESSAGE_BYTES``, ``_TOPIC_ARN_PREFIX``,
    ``_SUBSCRIPTION_QUEUE_PREFIX``, ``_MAX_FILTER_POLICIES_PER_TOPIC``; queue and topic names
    come from ``SKYCRAWL_INBOX_QUEUE`` and ``SKYCRAWL_DISPATCH_TOPIC`` (the base of every
    tenant's topic name, ``core.layout.tenant_topic``).

Cost
    Nothing at idle: SQS and SNS bill per request (long polls of an empty queue included, one
    request per 20 s per poller). ~$0.40 per million SQS requests, $0.50 per million SNS
    publishes; SNS→SQS delivery is free; claim-check objects bill as S3 storage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from adapters.aws import sqs_wire
from adapters.aws.settings import AwsSettings
from adapters.aws.sns_topics import SnsTopics
from adapters.aws.sqs_queues import SqsQueues, check_queue_name, is_dead_letter_queue
from adapters.aws.sqs_wire import ClaimChecks, Wire
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
    dead_letter_queue,
)

MAX_VISIBILITY_S = 43200.0
MAX_DELAY_S = 900.0
RETENTION_S = "1209600"  # 14 days, the SQS maximum
REDRIVE_REASON = "delivered more than max_deliveries times (moved by the SQS redrive policy)"


class SqsMessageBus:
    """MessageBus on SQS (queues, leases, dead letters) and SNS (the filtered dispatch topic)."""

    def __init__(
        self,
        *,
        sqs: Any,  # boto3 clients are typed Any: boto3 ships no type stubs
        sns: Any,
        s3: Any | None = None,
        bucket: str | None = None,
        claim_check_prefix: str = "bus-claims/",
        max_message_bytes: int = 4 * 1024 * 1024,
        subscription_queue_prefix: str = "skycrawl-sub-",
        topic_arns: Mapping[str, str] | None = None,
        topic_arn_prefix: str | None = None,
        max_subscriptions_per_topic: int = 200,
    ) -> None:
        self._s3 = s3
        self._claims = (
            ClaimChecks(s3=s3, bucket=bucket, prefix=claim_check_prefix)
            if s3 is not None and bucket
            else None
        )
        self.queues = SqsQueues(sqs)
        self.topics = SnsTopics(
            sns,
            self.queues,
            subscription_queue_prefix=subscription_queue_prefix,
            topic_arns=topic_arns,
            topic_arn_prefix=topic_arn_prefix,
        )
        self.capabilities = BusCapabilities(
            max_message_bytes=max_message_bytes
            if self._claims
            else sqs_wire.MAX_WIRE_BYTES * 3 // 4,
            filters_applied=True,
            filter_propagation_s=900,
            max_visibility_timeout_s=MAX_VISIBILITY_S,
            native_dead_letter=True,
            max_subscriptions_per_topic=max_subscriptions_per_topic,
        )

    @classmethod
    def from_settings(cls, aws: AwsSettings) -> SqsMessageBus:
        return cls(
            sqs=aws.client("sqs"),
            sns=aws.client("sns"),
            s3=aws.client("s3"),
            bucket=aws.bucket,
            claim_check_prefix=aws.claim_check_prefix,
            max_message_bytes=aws.max_message_bytes,
            subscription_queue_prefix=aws.subscription_queue_prefix,
            topic_arn_prefix=aws.topic_arn_prefix,
            max_subscriptions_per_topic=aws.max_filter_policies_per_topic,
        )

    def _queue_of(self, source: Source) -> str:
        if isinstance(source, Queue):
            return source.name
        return self.topics.subscription_queue(source.topic, source.name)

    # ----------------------------------------------------------------------------- sending

    async def encode(self, message: OutboundMessage, *, inline_limit: int | None = None) -> Wire:
        """``message`` as SQS carries it (claim-checked beyond ``inline_limit`` bytes)."""
        return await sqs_wire.encode(
            message,
            claims=self._claims,
            max_bytes=self.capabilities.max_message_bytes,
            inline_limit=inline_limit or sqs_wire.MAX_WIRE_BYTES,
        )

    async def queue_arn(self, name: str) -> str:
        """The ARN of queue ``name`` (``NotFound`` if it does not exist)."""
        return await self.queues.arn(name)

    async def ensure_queue(self, *, name: str, max_deliveries: int = 5) -> None:
        check_queue_name(name)
        if max_deliveries < 1:
            raise InvalidRequest("max_deliveries must be at least 1")
        dlq = dead_letter_queue(name)
        await self.queues.create(dlq, {"MessageRetentionPeriod": RETENTION_S})
        redrive = {
            "deadLetterTargetArn": await self.queues.arn(dlq),
            "maxReceiveCount": max_deliveries,
        }
        await self.queues.create(name, {"RedrivePolicy": sqs_wire.compact_json(redrive)})

    async def send(self, *, queue: str, message: OutboundMessage, delay_s: float = 0) -> str:
        if not 0 <= delay_s <= MAX_DELAY_S:
            raise InvalidRequest(f"delay must be between 0 and {MAX_DELAY_S:.0f} seconds on SQS")
        wire = await self.encode(message)
        return await self.queues.send(queue, wire, delay_s=delay_s)

    # ----------------------------------------------------------------------------- leases

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
            longest_s=MAX_VISIBILITY_S,
        )
        name = self._queue_of(source)
        visibility = max(1, math.ceil(visibility_timeout_s))
        until = time.monotonic() + max(wait_s, 0)
        while True:
            wait = 0 if wait_s <= 0 else min(20, max(1, round(until - time.monotonic())))
            started = time.monotonic()
            raws = await self.queues.receive(
                name, max_messages=max_messages, visibility_s=visibility, wait_s=wait
            )
            leases = []
            for raw in raws:
                lease = await self._lease(source, name, raw, started + visibility)
                if lease is not None:
                    leases.append(lease)
            if leases or time.monotonic() >= until - 0.5:
                return leases

    async def lease_from_record(
        self, record: Mapping[str, Any], *, queue: str, visibility_timeout_s: float
    ) -> Lease | None:
        """A lease on a message Lambda's SQS trigger delivered (``record`` as in the event);
        None if it could not be decoded and went to the dead-letter queue instead."""
        attributes = record.get("attributes", {})
        raw = {
            "MessageId": record["messageId"],
            "ReceiptHandle": record["receiptHandle"],
            "Body": record["body"],
            "Attributes": {
                "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1")
            },
            "MessageAttributes": {
                name: {
                    "DataType": value.get("dataType", ""),
                    "StringValue": value.get("stringValue"),
                }
                for name, value in record.get("messageAttributes", {}).items()
            },
        }
        deadline = time.monotonic() + visibility_timeout_s
        return await self._lease(Queue(queue), queue, raw, deadline)

    async def _lease(
        self, source: Source, name: str, raw: Mapping[str, Any], deadline: float
    ) -> Lease | None:
        attributes = {
            str(k): str(v.get("StringValue", ""))
            for k, v in raw.get("MessageAttributes", {}).items()
            if str(v.get("DataType", "")).startswith("String")
        }
        try:
            body, attributes = await sqs_wire.decode(
                Wire(str(raw["Body"]), attributes), claims=self._claims
            )
        except (InvalidRequest, NotFound) as exc:
            if not is_dead_letter_queue(name):  # undeliverable: out of the way, with the reason
                await self._bury(source, name, raw, str(exc))
                return None
            body = str(raw["Body"]).encode()  # a dead letter is read as it lies
            attributes[DEAD_LETTER_REASON] = sqs_wire.sanitize(f"undecodable: {exc}")
        if is_dead_letter_queue(name) and DEAD_LETTER_REASON not in attributes:
            attributes[DEAD_LETTER_REASON] = REDRIVE_REASON
        count = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        receipt = f"{deadline:.6f}|{raw['ReceiptHandle']}"
        return Lease(source, str(raw["MessageId"]), body, attributes, count, receipt)

    def _held(self, lease: Lease) -> str:
        """The receipt handle of a lease still in its visibility timeout; else Conflict."""
        deadline, _, handle = lease.receipt.partition("|")
        try:
            expired = time.monotonic() >= float(deadline)
        except ValueError as exc:
            raise InvalidRequest("not a lease of this bus") from exc
        if expired:
            raise Conflict(f"lease on message {lease.message_id} ran out; it may be re-leased")
        return handle

    async def ack(self, *, lease: Lease) -> None:
        handle = self._held(lease)
        await self.queues.delete_message(self._queue_of(lease.source), handle, lease.message_id)

    async def release(self, *, lease: Lease, delay_s: float = 0) -> None:
        if not 0 <= delay_s <= MAX_VISIBILITY_S:
            raise InvalidRequest("release delay must be between 0 and 12 hours")
        handle = self._held(lease)
        await self.queues.change_visibility(
            self._queue_of(lease.source), handle, lease.message_id, seconds=delay_s
        )

    def _dead_letter_target(self, source: Source) -> tuple[str, str]:
        """(dead-letter queue, origin) of a source."""
        if isinstance(source, Queue):
            if is_dead_letter_queue(source.name):
                raise InvalidRequest(f"{source.name} is a dead-letter queue itself")
            return dead_letter_queue(source.name), source.name
        return dead_letter_queue(source.topic), f"{source.topic}/{source.name}"

    async def dead_letter(self, *, lease: Lease, reason: str) -> None:
        target, origin = self._dead_letter_target(lease.source)
        handle = self._held(lease)
        plain = {k: v for k, v in lease.attributes.items() if not k.startswith("dead_letter_")}
        wire = await sqs_wire.encode(
            OutboundMessage(lease.body, plain),
            claims=self._claims,
            max_bytes=max(self.capabilities.max_message_bytes, len(lease.body) + 65536),
            system={DEAD_LETTER_REASON: reason, DEAD_LETTER_SOURCE: origin},
        )
        await self.queues.send(target, wire)
        await self.queues.delete_message(self._queue_of(lease.source), handle, lease.message_id)

    async def _bury(self, source: Source, name: str, raw: Mapping[str, Any], reason: str) -> None:
        """Move a message that cannot be decoded to the dead-letter queue, as it is."""
        target, origin = self._dead_letter_target(source)
        attributes = {
            str(k): str(v.get("StringValue") or "-")
            for k, v in raw.get("MessageAttributes", {}).items()
        }
        attributes[DEAD_LETTER_REASON] = sqs_wire.sanitize(f"undecodable: {reason}")
        attributes[DEAD_LETTER_SOURCE] = origin
        await self.queues.send(target, Wire(str(raw["Body"]) or ".", attributes))
        await self.queues.delete_message(name, str(raw["ReceiptHandle"]), str(raw["MessageId"]))

    # ----------------------------------------------------------------------------- topics

    async def ensure_topic(self, *, topic: str) -> None:
        await self.topics.ensure(topic)

    async def delete_topic(self, *, topic: str) -> None:
        await self.topics.delete(topic)

    async def publish(self, *, topic: str, message: OutboundMessage) -> str:
        return await self.topics.publish(topic, await self.encode(message))

    async def ensure_subscription(
        self, *, topic: str, name: str, filter: Mapping[str, str]
    ) -> Subscription:
        await self.topics.subscribe(topic, name, filter)
        return Subscription(topic, name)

    async def delete_subscription(self, *, topic: str, name: str) -> None:
        await self.topics.unsubscribe(topic, name)

    async def close(self) -> None:
        for client in (self.queues.client, self.topics.client, self._s3):
            close = getattr(client, "close", None)
            if close is not None:
                close()
