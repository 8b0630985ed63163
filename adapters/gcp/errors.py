"""The edge between the Google Cloud client libraries and the core's error tree.

Every GCP adapter turns a ``google.api_core.exceptions.GoogleAPICallError`` (and the HTTP
library's connection errors, for Cloud Storage) into a ``core.errors`` class with
``raise translate(exc, what) from exc``. Calls that give a code a meaning of their own (a
missing document is ``None``, ``AlreadyExists`` on create is ``Conflict``) catch that code
first and hand the rest here:

=================================================  =============================================
gRPC / HTTP status                                 core error (what the caller does next)
=================================================  =============================================
``Forbidden`` / ``PermissionDenied`` (403),        ``ConfigurationError``: the service account
``Unauthenticated`` (401)                          lacks a role or the credentials are wrong --
                                                   retrying cannot help, an operator must act
``NotFound`` (404)                                 ``NotFound``
``AlreadyExists``, ``Conflict`` (409),             ``Conflict``: reload and decide again
``FailedPrecondition`` (412)
``InvalidArgument``, ``OutOfRange`` (400)          ``InvalidRequest``
``TooManyRequests`` / ``ResourceExhausted`` (429), ``Retryable``
``ServiceUnavailable`` (503), ``DeadlineExceeded``,
``InternalServerError`` (500), ``Aborted``,
``Unknown``, a dropped connection
anything else                                      ``Retryable`` (transient until shown otherwise)
=================================================  =============================================
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from google.api_core import exceptions as gexc

from core.errors import (
    ConfigurationError,
    Conflict,
    InvalidRequest,
    NotFound,
    Retryable,
    SkycrawlError,
)

P = ParamSpec("P")
T = TypeVar("T")

TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.Unknown,
    gexc.TooManyRequests,
)


def translate(exc: Exception, what: str) -> SkycrawlError:
    """The core error for ``exc``, raised by ``what`` (``"reading tenants/t1"``)."""
    detail = f"{what}: {getattr(exc, 'message', None) or exc}"
    if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):  # PermissionDenied, Unauthenticated
        return ConfigurationError(f"{detail} (check the service account's roles)")
    if isinstance(exc, gexc.NotFound):
        return NotFound(detail)
    if isinstance(exc, gexc.AlreadyExists | gexc.Conflict | gexc.FailedPrecondition):
        return Conflict(detail)
    if isinstance(exc, gexc.InvalidArgument | gexc.OutOfRange | gexc.BadRequest):
        return InvalidRequest(detail)
    return Retryable(detail)  # 5xx, 429, a dropped connection (requests), anything unknown


def translating(
    what: str,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorate an async adapter method: a ``GoogleAPICallError`` escaping it is translated."""

    def decorate(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(method)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await method(*args, **kwargs)
            except gexc.GoogleAPICallError as exc:
                raise translate(exc, f"{what} ({method.__name__})") from exc

        return wrapper

    return decorate
