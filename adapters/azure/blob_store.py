"""BlobStorageBlobStore: the BlobStore on Azure Blob storage, one container, one block blob
per key.

Features
    Key ``a/b/c.json`` is the blob ``a/b/c.json`` of the configured container. ``put`` uploads
    a block blob (one Put Blob up to 64 MiB; larger objects are staged in blocks and committed
    at once), so readers see the old or the new object, never half of one; ``content_type``
    is stored and served. ``list`` returns keys under any string prefix, sorted (the service
    lists in that order already). ``delete_prefix`` deletes what it lists, 16 at a time. The
    container is created on the first write that finds it missing.

Limits
    Keys follow the one rule of every BlobStore (``core.ports.blob_store.check_key``): counted
    in UTF-8 bytes (at most 960) although Azure itself counts 1,024 *characters*, so that a key
    accepted here is accepted by S3 and Cloud Storage too; segments of at most 255 bytes; no
    empty, ``.`` or ``..`` segment, leading ``/``, backslash or control character -- else
    ``core.errors.InvalidRequest``. Objects up to 5 GiB through this adapter (held in
    memory). Listing is paged by the service (5,000 names a call).

Signed URLs
    ``signed_url`` is a read-only service SAS on the one blob: account-key signed with a
    connection string (and on Azurite), user-delegation signed with Entra ID (at most 7 days).

Settings and cost
    ``SKYCRAWL_AZURE_STORAGE_CONNECTION_STRING`` or ``..._STORAGE_ACCOUNT`` (Entra ID), and
    ``SKYCRAWL_AZURE_BLOB_CONTAINER`` (default ``skycrawl``). Costs storage (~$0.02 per GB and
    month, Hot LRS) and transactions (~$0.05 per 10,000 writes); nothing when idle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import (
    BlobSasPermissions,
    ContentSettings,
    generate_blob_sas,
)
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from adapters.azure.errors import translate, translated_errors
from core.errors import InvalidRequest, NotFound
from core.ports.blob_store import (
    STREAM_CHUNK_BYTES,
    BlobCapabilities,
    attachment,
    check_expiry,
    check_key,
    check_prefix,
)

_DELETE_CONCURRENCY = 16
_SAS_SKEW = timedelta(minutes=5)


def _missing_container(exc: ResourceNotFoundError) -> bool:
    return getattr(exc, "error_code", None) == "ContainerNotFound"


@translated_errors("Blob storage")
class BlobStorageBlobStore:
    """BlobStore on one Blob storage container."""

    capabilities = BlobCapabilities(max_object_bytes=5 * 1024**3, signed_urls=True)

    def __init__(
        self, container: ContainerClient, *, credential: AsyncTokenCredential | None = None
    ) -> None:
        self.container = container
        self._credential = credential  # closed with the store

    async def put(
        self, *, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        check_key(key)
        if len(data) > self.capabilities.max_object_bytes:
            raise InvalidRequest(f"object larger than {self.capabilities.max_object_bytes} bytes")
        settings = ContentSettings(content_type=content_type)
        for attempt in (1, 2):
            try:
                await self.container.upload_blob(
                    key, data, overwrite=True, content_settings=settings
                )
                return
            except ResourceNotFoundError as exc:
                if attempt == 2 or not _missing_container(exc):
                    raise
                with contextlib.suppress(ResourceExistsError):
                    await self.container.create_container()

    async def get(self, *, key: str) -> bytes:
        check_key(key)
        try:
            downloader = await self.container.download_blob(key)
            return await downloader.readall()
        except ResourceNotFoundError as exc:
            raise NotFound(f"no blob {key!r}") from exc

    async def stream(
        self, *, key: str, chunk_bytes: int = STREAM_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """The SDK's chunked download (``max_chunk_get_size`` per request), re-cut to
        ``chunk_bytes``; an async generator, so its SDK errors are translated here."""
        check_key(key)
        try:
            downloader = await self.container.download_blob(key)
            pending = b""
            async for part in downloader.chunks():
                pending += part
                while len(pending) >= chunk_bytes:
                    yield pending[:chunk_bytes]
                    pending = pending[chunk_bytes:]
            if pending:
                yield pending
        except ResourceNotFoundError as exc:
            raise NotFound(f"no blob {key!r}") from exc
        except AzureError as exc:
            raise translate(exc, "Blob storage") from exc

    async def size(self, *, key: str) -> int:
        check_key(key)
        try:
            properties = await self.container.get_blob_client(key).get_blob_properties()
        except ResourceNotFoundError as exc:
            raise NotFound(f"no blob {key!r}") from exc
        return int(properties.size)

    async def signed_url(
        self, *, key: str, expires_s: int, download_name: str | None = None
    ) -> str:
        """A read-only blob SAS: signed with the account key when the container client holds
        one (a connection string, Azurite), else with a user delegation key fetched with the
        Entra ID credential (one request; the identity needs "Storage Blob Delegator", which
        "Storage Blob Data Contributor" includes). Valid from 5 minutes ago (clock skew) to
        ``expires_s`` from now; ``rscd`` makes the download an attachment."""
        check_key(key)
        check_expiry(expires_s)
        now = datetime.now(UTC)
        start, expiry = now - _SAS_SKEW, now + timedelta(seconds=expires_s)
        shared = self.container.credential  # the SDK's shared-key policy holds account_key
        signing: dict[str, Any] = {}
        if isinstance(getattr(shared, "account_key", None), str):
            signing["account_key"] = shared.account_key
        else:
            service = BlobServiceClient(
                self.container.url.rsplit("/", 1)[0], credential=self._credential or shared
            )
            async with service:
                signing["user_delegation_key"] = await service.get_user_delegation_key(
                    start, expiry
                )
        sas = generate_blob_sas(
            self.container.account_name or "",
            self.container.container_name,
            key,
            permission=BlobSasPermissions(read=True),
            start=start,
            expiry=expiry,
            content_disposition=None if download_name is None else attachment(download_name),
            **signing,
        )
        return f"{self.container.get_blob_client(key).url}?{sas}"

    async def exists(self, *, key: str) -> bool:
        check_key(key)
        try:
            return bool(await self.container.get_blob_client(key).exists())
        except ResourceNotFoundError:
            return False

    async def list(self, *, prefix: str) -> list[str]:
        check_prefix(prefix)
        try:
            names = [name async for name in self.container.list_blob_names(name_starts_with=prefix)]
        except ResourceNotFoundError as exc:
            if _missing_container(exc):
                return []
            raise
        return sorted(names)

    async def delete(self, *, key: str) -> None:
        check_key(key)
        with contextlib.suppress(ResourceNotFoundError):
            await self.container.delete_blob(key)

    async def delete_prefix(self, *, prefix: str) -> int:
        keys = await self.list(prefix=prefix)
        gate = asyncio.Semaphore(_DELETE_CONCURRENCY)

        async def drop(key: str) -> None:
            async with gate:
                with contextlib.suppress(ResourceNotFoundError):
                    await self.container.delete_blob(key)

        await asyncio.gather(*(drop(key) for key in keys))
        return len(keys)

    async def close(self) -> None:
        await self.container.close()
        if self._credential is not None:
            await self._credential.close()
