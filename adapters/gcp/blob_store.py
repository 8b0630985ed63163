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
    Keys follow the local store's rules -- ``/``-separated, 1-1024 characters, no empty,
    ``.`` or ``..`` segment, no leading ``/``, backslash, NUL, CR or LF -- else
    ``core.errors.InvalidRequest``. Objects are held in memory, so at most 5 GiB here (Cloud
    Storage itself takes 5 TiB). Errors of the service other than "not found" are
    ``core.errors.Retryable``.

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
from collections.abc import Callable
from typing import TypeVar

import requests
from google.api_core import exceptions as gexc
from google.cloud import storage  # type: ignore[attr-defined, unused-ignore]

from core.errors import InvalidRequest, NotFound, Retryable
from core.ports.blob_store import BlobCapabilities

T = TypeVar("T")
MAX_KEY_CHARS = 1024
DELETE_CONCURRENCY = 16


def check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_CHARS:
        raise InvalidRequest(f"blob key must have 1 to {MAX_KEY_CHARS} characters")
    if key.startswith("/") or any(ch in key for ch in "\\\x00\r\n"):
        raise InvalidRequest(f"invalid blob key {key!r}: absolute, or a forbidden character")
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        raise InvalidRequest(f"invalid blob key {key!r}: empty, '.' or '..' segment")


def check_prefix(prefix: str) -> None:
    if prefix.startswith("/") or any(ch in prefix for ch in "\\\x00\r\n"):
        raise InvalidRequest(f"invalid blob prefix {prefix!r}")
    if any(segment in (".", "..") for segment in prefix.split("/")[:-1]):
        raise InvalidRequest(f"invalid blob prefix {prefix!r}")


class GcsBlobStore:
    """BlobStore on one Cloud Storage bucket."""

    capabilities = BlobCapabilities(max_object_bytes=5 * 1024**3)

    def __init__(self, *, client: storage.Client, bucket: str, prefix: str = "") -> None:
        if prefix and not prefix.endswith("/"):
            raise InvalidRequest("a blob prefix ends with '/'")
        self._client = client
        self._bucket = client.bucket(bucket)
        self._prefix = prefix

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except gexc.NotFound as exc:
            raise NotFound(f"no blob {what}") from exc
        except (gexc.GoogleAPICallError, requests.RequestException) as exc:
            raise Retryable(f"Cloud Storage failed on {what}: {exc}") from exc

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
