"""The edge between boto3 and the core's error tree (``core.errors``).

boto3 is synchronous: every adapter call goes through ``call``, which runs it in a worker
thread with ``asyncio.to_thread`` (the event loop never blocks on the network) and turns what
is transient -- throttling, 5xx answers, dropped or timed-out connections -- into
``core.errors.Retryable``. Other ``botocore.exceptions.ClientError``\\ s pass through for the
adapter to translate with ``error_code`` (``NoSuchKey`` → ``NotFound``,
``ConditionalCheckFailedException`` → ``Conflict``, ...), since what they mean depends on the
call.

Thread pool: ``asyncio.to_thread`` uses the event loop's default executor
(``min(32, cpus + 4)`` threads). A long poll (``ReceiveMessage`` with a wait) holds one thread
for its duration, so a process with many concurrent long polls should raise the loop's
executor size (``loop.set_default_executor``); boto3 clients themselves are thread-safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

# boto3 and botocore ship no type stubs: their names are Any to mypy.
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
)

from core.errors import Retryable

_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestThrottledException",
        "TransactionInProgressException",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "KMSThrottlingException",
        "AWS.SimpleQueueService.KmsThrottled",
        "KmsThrottled",
    }
)


__all__ = [
    "BotoCoreError",
    "ClientError",
    "call",
    "error_code",
    "error_message",
    "http_status",
    "is_transient",
]


def error_code(exc: ClientError) -> str:
    """The AWS error code of a ``ClientError`` (``""`` if the answer had none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        return error_code(exc) in _TRANSIENT_CODES or http_status(exc) >= 500
    return isinstance(exc, ConnectionError | HTTPClientError)


async def call(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Run one boto3 call in a worker thread; transient faults become ``Retryable``."""
    try:
        return await asyncio.to_thread(fn, **kwargs)
    except (ClientError, BotoCoreError) as exc:
        if is_transient(exc):
            raise Retryable(f"{getattr(fn, '__name__', 'AWS call')}: {exc}") from exc
        raise
