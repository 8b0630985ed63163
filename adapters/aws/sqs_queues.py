"""SQS queues by name: URLs and ARNs looked up once, create, send, receive, delete, visibility.

The plumbing under ``SqsMessageBus`` (which adds the port's semantics: leases, dead letters,
the wire format). Every call runs in a worker thread (``adapters.aws.errors.call``); a queue
that does not exist -- or was deleted since its URL was cached -- is ``core.errors.NotFound``,
and a receipt handle SQS no longer accepts is ``core.errors.Conflict``.

Names: 1-80 letters, digits, ``-`` and ``_``; a queue with a dead-letter queue needs room for
the ``-dlq`` suffix (76 characters). A queue deleted less than 60 s ago cannot be created
again on AWS (``QueueDeletedRecently`` → ``core.errors.Retryable``).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from typing import Any

from adapters.aws.errors import ClientError, call, error_code
from adapters.aws.sqs_wire import Wire
from core.errors import Conflict, InvalidRequest, NotFound, Retryable
from core.ports.message_bus import dead_letter_queue

MAX_DELAY_S = 900
_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
_MISSING = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)
_STALE_RECEIPT = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "InvalidParameterValue",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
    }
)


def check_queue_name(name: str, *, with_dead_letter: bool = True) -> None:
    longest = 80 - len(dead_letter_queue("")) if with_dead_letter else 80
    if not _NAME.fullmatch(name) or len(name) > longest:
        raise InvalidRequest(
            f"invalid SQS queue name {name!r}: 1-{longest} letters, digits, '-' or '_'"
        )


def is_dead_letter_queue(name: str) -> bool:
    return name.endswith(dead_letter_queue(""))


class SqsQueues:
    """Named SQS queues over one boto3 SQS client."""

    def __init__(self, sqs: Any) -> None:
        self.client = sqs  # a boto3 SQS client (Any: boto3 ships no type stubs)
        self._urls: dict[str, str] = {}
        self._arns: dict[str, str] = {}

    async def url(self, name: str) -> str:
        found = self._urls.get(name)
        if found is None:
            try:
                response = await call(self.client.get_queue_url, QueueName=name)
            except ClientError as exc:
                if error_code(exc) in _MISSING:
                    raise NotFound(f"no such queue: {name}") from exc
                raise
            found = self._urls[name] = str(response["QueueUrl"])
        return found

    async def arn(self, name: str) -> str:
        url = await self.url(name)
        found = self._arns.get(name)
        if found is None:
            response = await self.on(
                name, self.client.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"]
            )
            found = self._arns[name] = str(response["Attributes"]["QueueArn"])
        return found

    def forget(self, name: str) -> None:
        self._urls.pop(name, None)
        self._arns.pop(name, None)

    async def on(self, name: str, fn: Any, **kwargs: Any) -> Any:
        """Call ``fn`` on queue ``name``; a queue deleted meanwhile is ``NotFound``."""
        try:
            return await call(fn, **kwargs)
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                self.forget(name)
                raise NotFound(f"no such queue: {name}") from exc
            raise

    async def create(
        self, name: str, attributes: Mapping[str, str], tags: Mapping[str, str] | None = None
    ) -> str:
        """Create ``name`` (or bring an existing one to ``attributes``); returns its URL."""
        kwargs: dict[str, Any] = {"QueueName": name, "Attributes": dict(attributes)}
        if tags:
            kwargs["tags"] = dict(tags)
        try:
            response = await call(self.client.create_queue, **kwargs)
        except ClientError as exc:
            code = error_code(exc)
            if "QueueDeletedRecently" in code:
                raise Retryable(f"queue {name} was deleted less than 60 s ago") from exc
            if "QueueAlreadyExists" not in code and "QueueNameExists" not in code:
                raise
            url = await self.url(name)
            await self.on(
                name, self.client.set_queue_attributes, QueueUrl=url, Attributes=dict(attributes)
            )
            return url
        url = self._urls[name] = str(response["QueueUrl"])
        return url

    async def delete(self, name: str) -> None:
        """Delete the queue and what it holds; missing is fine."""
        with contextlib.suppress(NotFound):
            await self.on(name, self.client.delete_queue, QueueUrl=await self.url(name))
        self.forget(name)

    async def send(self, name: str, wire: Wire, *, delay_s: float = 0) -> str:
        kwargs: dict[str, Any] = {"QueueUrl": await self.url(name), "MessageBody": wire.body}
        if wire.attributes:
            kwargs["MessageAttributes"] = wire.message_attributes()
        if delay_s > 0:
            kwargs["DelaySeconds"] = min(MAX_DELAY_S, math.ceil(delay_s))
        response = await self.on(name, self.client.send_message, **kwargs)
        return str(response["MessageId"])

    async def receive(
        self, name: str, *, max_messages: int, visibility_s: int, wait_s: int
    ) -> list[dict[str, Any]]:
        response = await self.on(
            name,
            self.client.receive_message,
            QueueUrl=await self.url(name),
            MaxNumberOfMessages=max(1, min(10, max_messages)),
            VisibilityTimeout=visibility_s,
            WaitTimeSeconds=wait_s,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return list(response.get("Messages", []))

    async def delete_message(self, name: str, handle: str, message_id: str) -> None:
        await self._on_receipt(name, message_id, self.client.delete_message, ReceiptHandle=handle)

    async def change_visibility(
        self, name: str, handle: str, message_id: str, *, seconds: float
    ) -> None:
        await self._on_receipt(
            name,
            message_id,
            self.client.change_message_visibility,
            ReceiptHandle=handle,
            VisibilityTimeout=math.ceil(seconds),
        )

    async def _on_receipt(self, name: str, message_id: str, fn: Any, **kwargs: Any) -> None:
        try:
            await self.on(name, fn, QueueUrl=await self.url(name), **kwargs)
        except NotFound as exc:
            raise Conflict(f"message {message_id}: its queue {name} is gone") from exc
        except ClientError as exc:
            if error_code(exc) in _STALE_RECEIPT:
                raise Conflict(f"lease on message {message_id} is no longer held") from exc
            raise
