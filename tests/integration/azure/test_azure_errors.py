"""Narrow tests of ``adapters.azure.errors``: no Blob, Table, Container Instances or Service
Bus error escapes an adapter untranslated (SDK clients mocked at the edge, as the house style
allows for error translation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessageSizeExceededError,
    ServiceBusAuthorizationError,
    ServiceBusServerBusyError,
)

from adapters.azure.blob_store import BlobStorageBlobStore
from adapters.azure.container_runtime import ContainerInstancesRuntime
from adapters.azure.errors import translate
from adapters.azure.message_bus import ServiceBusMessageBus
from adapters.azure.settings import AzureSettings
from adapters.azure.state_store import TableStateStore
from core.errors import (
    ConfigurationError,
    Conflict,
    InvalidRequest,
    NotFound,
    Retryable,
    SkycrawlError,
)
from core.models import Egress
from core.ports import OutboundMessage


def http_error(status: int, message: str = "refused") -> HttpResponseError:
    error = HttpResponseError(message)
    error.status_code = status
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ClientAuthenticationError("no credential"), ConfigurationError),
        (http_error(403, "AuthorizationPermissionMismatch"), ConfigurationError),
        (ServiceBusAuthorizationError(message="no Send claim"), ConfigurationError),
        (ResourceNotFoundError("gone"), NotFound),
        (ResourceExistsError("there"), Conflict),
        (ResourceModifiedError("etag"), Conflict),
        (MessageLockLostError(message="lock"), Conflict),
        (http_error(400), InvalidRequest),
        (MessageSizeExceededError(message="big"), InvalidRequest),
        (http_error(429), Retryable),
        (http_error(503), Retryable),
        (ServiceRequestError("connection reset"), Retryable),
        (ServiceBusServerBusyError(message="busy"), Retryable),
    ],
)
def test_translation_table(error: Exception, expected: type[SkycrawlError]) -> None:
    translated = translate(error, "doing it")
    assert type(translated) is expected
    assert str(translated).startswith("doing it: ")


async def test_blob_storage_forbidden_is_a_configuration_error() -> None:
    container = mock.MagicMock()
    container.upload_blob = mock.AsyncMock(side_effect=http_error(403, "AuthorizationFailure"))
    store = BlobStorageBlobStore(container)
    with pytest.raises(ConfigurationError, match="AuthorizationFailure") as caught:
        await store.put(key="tenants/t/x", data=b"x")
    assert isinstance(caught.value.__cause__, HttpResponseError)


async def test_blob_storage_5xx_is_retryable() -> None:
    container = mock.MagicMock()
    container.download_blob = mock.AsyncMock(side_effect=http_error(500, "InternalError"))
    with pytest.raises(Retryable):
        await BlobStorageBlobStore(container).get(key="tenants/t/x")


async def test_table_storage_connection_failure_is_retryable() -> None:
    table = mock.MagicMock()
    table.get_entity = mock.AsyncMock(side_effect=ServiceRequestError("connection refused"))
    table.create_table = mock.AsyncMock(side_effect=ServiceRequestError("connection refused"))
    with pytest.raises(Retryable, match="connection refused"):
        await TableStateStore(table).get(table="t", partition="p", key="k")


async def test_container_instances_forbidden_is_a_configuration_error(tmp_path: Path) -> None:
    client = mock.MagicMock()
    client.container_groups.get = mock.AsyncMock(side_effect=http_error(403, "no role"))
    settings = AzureSettings(subscription_id="s", resource_group="rg", location="westeurope")
    runtime = ContainerInstancesRuntime(client, settings, default_image="engine:1")
    with pytest.raises(ConfigurationError, match="no role"):
        await runtime.describe(container_id="c1", egress=Egress(name="local"))


async def test_service_bus_errors_are_translated() -> None:
    client: Any = mock.MagicMock()
    sender = client.get_queue_sender.return_value
    sender.send_messages = mock.AsyncMock(side_effect=ServiceBusServerBusyError(message="busy"))
    bus = ServiceBusMessageBus(client, mock.MagicMock())
    with pytest.raises(Retryable, match="busy"):
        await bus.send(queue="inbox", message=OutboundMessage(b"x"))
    sender.send_messages = mock.AsyncMock(side_effect=ServiceBusAuthorizationError(message="no"))
    with pytest.raises(ConfigurationError):
        await bus.send(queue="inbox", message=OutboundMessage(b"x"))
