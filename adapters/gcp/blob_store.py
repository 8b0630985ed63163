"""Cloud Storage BlobStore: one object per key in one bucket, under an optional prefix.

Features
    ``put`` uploads the whole object in one request (multipart up to 8 MiB, resumable above):
    Cloud Storage makes it visible atomically, so readers see the old or the new object, never
    half. ``get`` downloads it (CRC32C-checked by the library), ``list`` returns keys in
    lexicographic order (Cloud Storage's own), ``delete_prefix`` lists then deletes with up to
    16 requests at a time. ``content_type`` is stored on the object.

Threads
    ``google-cloud-storage`` is synchronous (HTTP via ``requests``): every call runs in a worker
    thread (``asyncio.to_thread``), so the event loop never blocks. The client is thread-safe.

Limits
    Keys follow the one rule of every BlobStore (``core.ports.blob_store.check_key``: at most
    960 bytes of UTF-8 -- Cloud Storage counts 1,024 bytes, a store prefix may take 64 --,
    segments of at most 255 bytes, no empty, ``.`` or ``..`` segment, leading ``/``,
    backslash or control character such as CR / LF) -- else ``core.errors.InvalidRequest``.
    Objects are held in memory, so at most 5 GiB here (Cloud Storage itself takes 5 TiB).
    Errors of the service other than "not found" go through ``adapters.gcp.errors``: 403 is
    ``core.errors.ConfigurationError`` (a missing role), 5xx and dropped connections
    ``core.errors.Retryable``.

Signed URLs
    ``signed_url`` is a V4 signed GET URL (at most 7 days), signed locally by a service-account
    key, or through IAM ``signBlob`` for a metadata-server identity (Cloud Run: the service
    account needs ``iam.serviceAccounts.signBlob`` on itself, "Service Account Token
    Creator"). Anonymous credentials (an emulator) cannot sign: ``capabilities.signed_urls``
    is then False and exports stream. The tests sign with a throw-away RSA key and check the
    URL's parts and signature; no emulator here checks V4 signatures.

Cost
    Standard storage ~$0.02 per GiB-month; ~$0.005 per 1,000 writes and lists, ~$0.0004 per
    1,000 reads; egress to the internet extra. Nothing per hour of idleness. Consider a
    lifecycle rule on ``tenants/`` (``deploy/gcp`` sets one) to expire old crawls.

Settings
    ``SKYCRAWL_GCP_BUCKET``, ``SKYCRAWL_GCP_PROJECT``; ``SKYCRAWL_GCP_STORAGE_EMULATOR_HOST``
    (or ``STORAGE_EMULATOR_HOST``) for an emulator, e.g. ``http://127.0.0.1:9023``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any, TypeVar

import google.auth.transport.requests
import requests
from google.api_core import exceptions as gexc
from google.cloud import storage  # type: ignore[attr-defined, unused-ignore]

from adapters.gcp.errors import translate
from core.errors import ConfigurationError, NotFound
from core.ports.blob_store import (
    STREAM_CHUNK_BYTES,
    BlobCapabilities,
    attachment,
    check_expiry,
    check_key,
    check_prefix,
    check_store_prefix,
)

T = TypeVar("T")
DELETE_CONCURRENCY = 16


class GcsBlobStore:
    """BlobStore on one Cloud Storage bucket."""

    capabilities: BlobCapabilities

    def __init__(
        self,
        *,
        client: storage.Client,
        bucket: str,
        prefix: str = "",
        signing_credentials: Any = None,
    ) -> None:
        check_store_prefix(prefix)
        self._client = client
        self._bucket = client.bucket(bucket)
        self._prefix = prefix
        #: what signs URLs: given, else the client's own (a service-account key signs
        #: locally; Cloud Run's metadata-server identity signs through IAM ``signBlob``)
        self._signer: Any = signing_credentials or getattr(client, "_credentials", None)
        can_sign = hasattr(self._signer, "sign_bytes") or hasattr(
            self._signer, "service_account_email"
        )
        self.capabilities = BlobCapabilities(max_object_bytes=5 * 1024**3, signed_urls=can_sign)

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except gexc.NotFound as exc:
            raise NotFound(f"no blob {what}") from exc
        except (gexc.GoogleAPICallError, requests.RequestException) as exc:
            raise translate(exc, f"Cloud Storage failed on {what}") from exc

    async def put(
        self, *, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        check_key(key)
        blob = self._bucket.blob(self._prefix + key)
        await self._call(key, lambda: blob.upload_from_string(data, content_type=content_type))

    async def get(self, *, key: str) -> bytes:
        check_key(key)
        blob = self._bucket.blob(self._prefix + key)
        return await self._call(key, blob.download_as_bytes)

    async def stream(
        self, *, key: str, chunk_bytes: int = STREAM_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """Ranged downloads of ``chunk_bytes`` each, after one metadata read for the size."""
        total = await self.size(key=key)
        blob = self._bucket.blob(self._prefix + key)
        for start in range(0, total, chunk_bytes):
            end = min(start + chunk_bytes, total) - 1  # inclusive, as the library counts

            def part(first: int = start, last: int = end) -> bytes:
                data: bytes = blob.download_as_bytes(start=first, end=last, checksum=None)
                return data

            yield await self._call(key, part)

    async def size(self, *, key: str) -> int:
        check_key(key)
        found = await self._call(key, lambda: self._bucket.get_blob(self._prefix + key))
        if found is None:
            raise NotFound(f"no blob {key}")
        return int(found.size or 0)

    async def signed_url(
        self, *, key: str, expires_s: int, download_name: str | None = None
    ) -> str:
        """A V4 signed GET URL on the client's endpoint (an emulator's when set)."""
        if not self.capabilities.signed_urls:
            raise ConfigurationError(
                "Cloud Storage URLs need credentials that can sign (a service account), "
                "not anonymous ones"
            )
        check_key(key)
        check_expiry(expires_s)
        blob = self._bucket.blob(self._prefix + key)
        signer = self._signer
        disposition = None if download_name is None else attachment(download_name)

        def sign() -> str:
            extra: dict[str, Any] = {"credentials": signer}
            if not hasattr(signer, "sign_bytes"):  # no private key here: IAM signBlob
                signer.refresh(google.auth.transport.requests.Request())
                extra = {
                    "service_account_email": signer.service_account_email,
                    "access_token": signer.token,
                }
            url: str = blob.generate_signed_url(
                version="v4",
                expiration=timedelta(seconds=expires_s),
                method="GET",
                response_disposition=disposition,
                **extra,
            )
            return url

        return await self._call(key, sign)

    async def exists(self, *, key: str) -> bool:
        check_key(key)
        blob = self._bucket.blob(self._prefix + key)
        return await self._call(key, blob.exists)

    async def list(self, *, prefix: str) -> list[str]:
        check_prefix(prefix)
        start = len(self._prefix)

        def names() -> list[str]:
            found = self._client.list_blobs(self._bucket, prefix=self._prefix + prefix)
            return sorted(blob.name[start:] for blob in found)

        return await self._call(f"list {prefix!r}", names)

    async def delete(self, *, key: str) -> None:
        check_key(key)
        blob = self._bucket.blob(self._prefix + key)
        with contextlib.suppress(NotFound):
            await self._call(key, blob.delete)

    async def delete_prefix(self, *, prefix: str) -> int:
        keys = await self.list(prefix=prefix)
        gate = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def remove(key: str) -> None:
            async with gate:
                await self.delete(key=key)

        await asyncio.gather(*(remove(key) for key in keys))
        return len(keys)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)
