"""SNS topics and their filtered SQS subscriptions, one SQS queue per subscription.

The topic half of ``SqsMessageBus``:

* ``ensure`` creates the topic and its dead-letter queue ``<topic>-dlq``;
* ``subscribe(topic, name, filter)`` creates the queue ``subscription_queue(topic, name)`` --
  ``<prefix><first 8 hex of sha256(topic)>-<name>`` -- with a queue policy that lets only this
  topic send to it and a redrive policy to ``<topic>-dlq`` after 5 deliveries, subscribes it
  with raw message delivery and ``FilterPolicy = {attribute: [value]}`` on message attributes,
  and tags the queue with the subscription ARN;
* ``unsubscribe`` removes the subscription (ARN from the tag, or found by endpoint if a crash
  came before the tag) and deletes the queue with what it holds.

Topic ARNs are ``topic_arn_prefix`` and the name (``SKYCRAWL_AWS_TOPIC_ARN_PREFIX``), come
from ``ensure``, or are looked up once with ``ListTopics``. A subscription queue's ARN is built from the topic's
partition, region and account, so subscribing needs no extra ``GetQueueAttributes``.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from adapters.aws.errors import ClientError, call, error_code
from adapters.aws.sqs_queues import SqsQueues, check_queue_name
from adapters.aws.sqs_wire import Wire, compact_json
from core.errors import InvalidRequest, NotFound
from core.ports.message_bus import dead_letter_queue

SUBSCRIPTION_MAX_DELIVERIES = 5
RETENTION_S = "1209600"  # 14 days, the SQS maximum
ARN_TAG = "skycrawl:subscription-arn"
_PREFIX = re.compile(r"[A-Za-z0-9_-]{0,40}")
_SUBSCRIPTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


def topic_queue_prefix(prefix: str, topic: str) -> str:
    """Name prefix of the SQS queues behind the subscriptions of ``topic``: IAM grants a
    tenant's containers the queues of their own topic with it."""
    return f"{prefix}{hashlib.sha256(topic.encode()).hexdigest()[:8]}-"


def queue_arn_like(topic_arn: str, queue: str) -> str:
    """The ARN of ``queue`` in the partition, region and account of ``topic_arn``."""
    _, partition, _, region, account, _ = topic_arn.split(":", 5)
    return f"arn:{partition}:sqs:{region}:{account}:{queue}"


class SnsTopics:
    """SNS topics whose subscriptions are SQS queues managed by ``queues``."""

    def __init__(
        self,
        sns: Any,
        queues: SqsQueues,
        *,
        subscription_queue_prefix: str = "skycrawl-sub-",
        topic_arns: Mapping[str, str] | None = None,
        topic_arn_prefix: str | None = None,
    ) -> None:
        if not _PREFIX.fullmatch(subscription_queue_prefix):
            raise InvalidRequest(f"invalid subscription queue prefix {subscription_queue_prefix!r}")
        self.client = sns  # a boto3 SNS client (Any: boto3 ships no type stubs)
        self._queues = queues
        self._prefix = subscription_queue_prefix
        self._arns: dict[str, str] = dict(topic_arns or {})
        self._arn_prefix = topic_arn_prefix

    def subscription_queue(self, topic: str, name: str) -> str:
        """The SQS queue behind subscription ``name`` of ``topic`` (deterministic)."""
        if not _SUBSCRIPTION_NAME.fullmatch(name):
            raise InvalidRequest(f"invalid subscription name {name!r}: letters, digits, '-', '_'")
        queue = f"{topic_queue_prefix(self._prefix, topic)}{name}"
        if len(queue) > 80:  # outside the tenant's IAM pattern: keep names short
            digest = hashlib.sha256(f"{topic}/{name}".encode()).hexdigest()
            queue = f"{self._prefix}{digest[:32]}"
        return queue

    async def arn(self, topic: str) -> str:
        found = self._arns.get(topic)
        if found is not None:
            return found
        if self._arn_prefix:
            return f"{self._arn_prefix}{topic}"
        paginator = self.client.get_paginator("list_topics")
        pages = await call(lambda: list(paginator.paginate()))
        for page in pages:
            for entry in page.get("Topics", []):
                if str(entry["TopicArn"]).rsplit(":", 1)[-1] == topic:
                    self._arns[topic] = str(entry["TopicArn"])
                    return self._arns[topic]
        raise NotFound(f"no such topic: {topic}")

    async def ensure(self, topic: str) -> None:
        check_queue_name(topic)  # the topic's dead-letter queue is named after it
        response = await call(self.client.create_topic, Name=topic)
        self._arns[topic] = str(response["TopicArn"])
        await self._queues.create(dead_letter_queue(topic), {"MessageRetentionPeriod": RETENTION_S})

    async def delete(self, topic: str) -> None:
        """Unsubscribe and delete every subscription queue of ``topic``, then the topic and its
        dead-letter queue; what is already gone is fine."""
        try:
            topic_arn = await self.arn(topic)
            paginator = self.client.get_paginator("list_subscriptions_by_topic")
            pages = await call(lambda: list(paginator.paginate(TopicArn=topic_arn)))
        except NotFound:
            pages = []
        except ClientError as exc:
            if error_code(exc) != "NotFound":
                raise
            pages = []
        for page in pages:
            for entry in page.get("Subscriptions", []):
                with contextlib.suppress(ClientError):
                    await call(self.client.unsubscribe, SubscriptionArn=entry["SubscriptionArn"])
                queue = str(entry.get("Endpoint", "")).rsplit(":", 1)[-1]
                if queue.startswith(self._prefix):
                    await self._queues.delete(queue)
        if pages:
            await call(self.client.delete_topic, TopicArn=topic_arn)
        self._arns.pop(topic, None)
        await self._queues.delete(dead_letter_queue(topic))

    async def publish(self, topic: str, wire: Wire) -> str:
        kwargs: dict[str, Any] = {"TopicArn": await self.arn(topic), "Message": wire.body}
        if wire.attributes:
            kwargs["MessageAttributes"] = wire.message_attributes()
        try:
            response = await call(self.client.publish, **kwargs)
        except ClientError as exc:
            if error_code(exc) == "NotFound":
                self._arns.pop(topic, None)
                raise NotFound(f"no such topic: {topic}") from exc
            raise
        return str(response["MessageId"])

    async def subscribe(self, topic: str, name: str, filter: Mapping[str, str]) -> None:
        topic_arn = await self.arn(topic)
        queue = self.subscription_queue(topic, name)
        queue_arn = queue_arn_like(topic_arn, queue)
        url = await self._queues.create(
            queue,
            await self._queue_attributes(topic, topic_arn, queue_arn),
            tags={"skycrawl:topic": topic[:256], "skycrawl:subscription": name},
        )
        attributes = {"RawMessageDelivery": "true"}
        if filter:
            attributes["FilterPolicy"] = compact_json({k: [v] for k, v in filter.items()})
            attributes["FilterPolicyScope"] = "MessageAttributes"
        response = await call(
            self.client.subscribe,
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes=attributes,
            ReturnSubscriptionArn=True,
        )
        subscription_arn = str(response["SubscriptionArn"])
        if filter:  # Subscribe returns an existing subscription unchanged: set the filter
            await call(
                self.client.set_subscription_attributes,
                SubscriptionArn=subscription_arn,
                AttributeName="FilterPolicy",
                AttributeValue=attributes["FilterPolicy"],
            )
        await self._queues.on(
            queue, self._queues.client.tag_queue, QueueUrl=url, Tags={ARN_TAG: subscription_arn}
        )

    async def _queue_attributes(self, topic: str, topic_arn: str, queue_arn: str) -> dict[str, str]:
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        }
        attributes = {"Policy": compact_json(policy)}
        try:
            dlq_arn = await self._queues.arn(dead_letter_queue(topic))
        except NotFound:  # no dead-letter queue deployed for the topic: keep poison messages
            return attributes
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": SUBSCRIPTION_MAX_DELIVERIES}
        attributes["RedrivePolicy"] = compact_json(redrive)
        return attributes

    async def unsubscribe(self, topic: str, name: str) -> None:
        """Remove the subscription and its queue; what is already gone is fine."""
        queue = self.subscription_queue(topic, name)
        subscription_arn = None
        with contextlib.suppress(NotFound):
            url = await self._queues.url(queue)
            tags = await self._queues.on(queue, self._queues.client.list_queue_tags, QueueUrl=url)
            subscription_arn = tags.get("Tags", {}).get(ARN_TAG)
        if subscription_arn is None:  # created but never tagged: a crash came in between
            subscription_arn = await self._find(topic, queue)
        if subscription_arn is not None:
            try:
                await call(self.client.unsubscribe, SubscriptionArn=subscription_arn)
            except ClientError as exc:
                if error_code(exc) not in ("NotFound", "InvalidParameter"):
                    raise
        await self._queues.delete(queue)

    async def _find(self, topic: str, queue: str) -> str | None:
        try:
            topic_arn = await self.arn(topic)
        except NotFound:
            return None
        endpoint = queue_arn_like(topic_arn, queue)
        paginator = self.client.get_paginator("list_subscriptions_by_topic")
        try:
            pages = await call(lambda: list(paginator.paginate(TopicArn=topic_arn)))
        except ClientError as exc:
            if error_code(exc) == "NotFound":
                return None
            raise
        for page in pages:
            for entry in page.get("Subscriptions", []):
                if entry.get("Endpoint") == endpoint:
                    return str(entry["SubscriptionArn"])
        return None
