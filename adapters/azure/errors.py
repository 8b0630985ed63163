"""The edge between the Azure SDKs and the core's error tree (``core.errors``).

Every Azure adapter class is decorated with ``@translated_errors("<service>")``: an
``azure.core.exceptions.AzureError`` (Blob, Table and Queue storage, Container Instances and
ARM answer with these; ``azure.servicebus.exceptions.ServiceBusError`` is one too) that escapes
one of its public async methods becomes a ``core.errors`` class, ``raise ... from exc``.
Methods that give an error a meaning of their own (a missing blob is ``NotFound``, a 412 on
a conditional write is ``Conflict``, a lost lock is ``Conflict``) translate it first;
``translate`` handles what is left:

===========================================================  ==================================
SDK error                                                    core error
===========================================================  ==================================
``ClientAuthenticationError`` (401, no credential),           ``ConfigurationError``: the
HTTP 403 (``AuthorizationFailure``, a missing role),          identity lacks a role or the
``ServiceBusAuthenticationError`` / ``...AuthorizationError`` credentials are wrong
``ResourceNotFoundError`` (404),                              ``NotFound``
``MessagingEntityNotFoundError``, ``MessageNotFoundError``
``ResourceExistsError`` / ``ResourceModifiedError`` (409,     ``Conflict``
412), ``MessageLockLostError``, ``SessionLockLostError``,
``MessageAlreadySettled``, ``MessagingEntityAlreadyExists``
HTTP 400, ``MessageSizeExceededError``,                       ``InvalidRequest``
``SerializationError``
HTTP 429 / 5xx, ``ServiceRequestError`` /                     ``Retryable``
``ServiceResponseError`` (connection), ``ServiceBusServerBusy
Error``, ``...ConnectionError``, ``...CommunicationError``,
``OperationTimeoutError``, ``ServiceBusQuotaExceededError``,
any other ``AzureError``
===========================================================  ==================================
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from azure.core import exceptions as core_exc
from azure.servicebus import exceptions as sb_exc

from core.errors import (
    ConfigurationError,
    Conflict,
    InvalidRequest,
    NotFound,
    Retryable,
    SkycrawlError,
)

C = TypeVar("C", bound=type)

_CONFIGURATION = (
    core_exc.ClientAuthenticationError,
    sb_exc.ServiceBusAuthenticationError,
    sb_exc.ServiceBusAuthorizationError,
)
_NOT_FOUND = (
    core_exc.ResourceNotFoundError,
    sb_exc.MessagingEntityNotFoundError,
    sb_exc.MessageNotFoundError,
)
_CONFLICT = (
    core_exc.ResourceExistsError,
    core_exc.ResourceModifiedError,
    sb_exc.MessageLockLostError,
    sb_exc.SessionLockLostError,
    sb_exc.MessageAlreadySettled,
    sb_exc.MessagingEntityAlreadyExistsError,
)
_INVALID = (sb_exc.MessageSizeExceededError, core_exc.SerializationError)
#: What ``translated_errors`` catches (``MessageAlreadySettled`` is a ``ValueError``).
SDK_ERRORS = (core_exc.AzureError, sb_exc.MessageAlreadySettled)


def _status(exc: Exception) -> int:
    return int(getattr(exc, "status_code", None) or 0)


def translate(exc: Exception, what: str) -> SkycrawlError:
    """The core error for the SDK error ``exc``, raised by ``what``."""
    detail = f"{what}: {getattr(exc, 'message', None) or exc}"
    status = _status(exc)
    if isinstance(exc, _CONFIGURATION) or status in (401, 403):
        return ConfigurationError(f"{detail} (check the identity's role assignments)")
    if isinstance(exc, _NOT_FOUND) or status == 404:
        return NotFound(detail)
    if isinstance(exc, _CONFLICT) or status in (409, 412):
        return Conflict(detail)
    if isinstance(exc, _INVALID) or status in (400, 413):
        return InvalidRequest(detail)
    return Retryable(detail)  # 429, 5xx, connections, timeouts, busy, quota, anything unknown


def _wrap(method: Callable[..., Awaitable[Any]], service: str) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except SDK_ERRORS as exc:
            raise translate(exc, f"{service} ({method.__name__})") from exc

    return wrapper


def translated_errors(service: str) -> Callable[[C], C]:
    """Class decorator: every public ``async def`` of the class translates SDK errors."""

    def decorate(cls: C) -> C:
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.iscoroutinefunction(member):
                setattr(cls, name, _wrap(member, service))
        return cls

    return decorate
