"""Narrow tests of ``adapters.gcp.errors``: how Google's errors reach the core (mocks only at
the SDK edge, as the house style allows for error translation)."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
import requests
from google.api_core import exceptions as gexc

from adapters.gcp.blob_store import GcsBlobStore
from adapters.gcp.errors import translate
from adapters.gcp.pubsub_admin import PubSubAdmin
from adapters.gcp.state_store import FirestoreStateStore
from core.errors import (
    ConfigurationError,
    Conflict,
    InvalidRequest,
    NotFound,
    Retryable,
    SkycrawlError,
)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (gexc.PermissionDenied("caller lacks pubsub.topics.publish"), ConfigurationError),
        (gexc.Unauthenticated("bad token"), ConfigurationError),
        (gexc.Forbidden("403 from Cloud Storage"), ConfigurationError),
        (gexc.NotFound("gone"), NotFound),
        (gexc.AlreadyExists("there"), Conflict),
        (gexc.FailedPrecondition("stale"), Conflict),
        (gexc.InvalidArgument("bad"), InvalidRequest),
        (gexc.ResourceExhausted("quota"), Retryable),
        (gexc.ServiceUnavailable("down"), Retryable),
        (gexc.DeadlineExceeded("slow"), Retryable),
        (gexc.InternalServerError("500"), Retryable),
        (requests.ConnectionError("reset"), Retryable),
    ],
)
def test_translation_table(error: Exception, expected: type[SkycrawlError]) -> None:
    translated = translate(error, "doing it")
    assert type(translated) is expected
    assert str(translated).startswith("doing it: ")


def test_permission_denied_is_never_retryable() -> None:
    assert not isinstance(translate(gexc.PermissionDenied("no"), "x"), Retryable)


def _firestore_raising(error: Exception) -> Any:
    client = mock.MagicMock()
    document = client.collection.return_value.document.return_value
    leaf = document.collection.return_value.document.return_value
    leaf.get = mock.AsyncMock(side_effect=error)
    leaf.path = "skycrawl-t/p/skycrawl-t-items/k"
    return client


async def test_firestore_permission_denied_is_a_configuration_error() -> None:
    store = FirestoreStateStore(client=_firestore_raising(gexc.PermissionDenied("no role")))
    with pytest.raises(ConfigurationError, match="no role") as caught:
        await store.get(table="t", partition="p", key="k")
    assert isinstance(caught.value.__cause__, gexc.PermissionDenied)


async def test_firestore_unavailable_stays_retryable() -> None:
    store = FirestoreStateStore(client=_firestore_raising(gexc.ServiceUnavailable("blip")))
    with pytest.raises(Retryable):
        await store.get(table="t", partition="p", key="k")


async def test_cloud_storage_forbidden_is_a_configuration_error() -> None:
    client = mock.MagicMock()
    client.bucket.return_value.blob.return_value.download_as_bytes.side_effect = gexc.Forbidden(
        "not allowed"
    )
    store = GcsBlobStore(client=client, bucket="b")
    with pytest.raises(ConfigurationError):
        await store.get(key="tenants/t/x")


async def test_pubsub_admin_errors_do_not_escape_untranslated() -> None:
    publisher, subscriber = mock.MagicMock(), mock.MagicMock()
    publisher.create_topic = mock.AsyncMock(side_effect=gexc.PermissionDenied("no admin"))
    admin = PubSubAdmin(project="p", publisher=publisher, subscriber=subscriber)
    with pytest.raises(ConfigurationError, match="no admin"):
        await admin.ensure_topic("dispatch")
