"""Large exports on a cloud: written once to the blob store, handed out as a signed URL.

A function's response is capped (Lambda 6 MB, and binary bodies are base64-encoded on the way
out; API Gateway 10 MB; Cloud Run functions 10 MB in 1st gen, 32 MiB in 2nd; Azure Functions
answer within 230 s), so an export larger than ``SKYCRAWL_EXPORT_URL_BYTES`` (default 4 MiB),
or any export asked for with ``?delivery=url``, is stored at::

    tenants/{tenant}/crawls/{crawl}/exports/{fingerprint}/{crawl}.{extension}

and answered ``303 See Other`` with ``Location`` = the blob's signed URL
(``BlobStore.signed_url``, ``SKYCRAWL_EXPORT_URL_TTL_S``, default 15 minutes). The fingerprint
hashes the crawl's state and the keys of every chunk the exports read: chunks are only ever
added, never rewritten, so the same fingerprint means the same bytes and a second request is
one listing and one ``exists`` away from its redirect. A new chunk (a running crawl) gives a
new fingerprint; writing it removes the exports of older ones. Stores that cannot sign
(``capabilities.signed_urls`` False: files) keep streaming, and refuse ``delivery=url``.

Limits: the export is assembled in the function's memory before it is written (one
``BlobStore.put``), so the function's memory bounds the size of an export delivered this way.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from core.api.http import ApiResponse
from core.exports import ExportFormat
from core.layout import crawl_prefix
from core.ports.blob_store import BlobStore

#: what the exports read, under a crawl's prefix (``core.layout``)
_SOURCES = ("manifest/", "warc/", "content/", "items/", "items.jsonl")


@dataclass(frozen=True, slots=True)
class ExportTarget:
    tenant_id: str
    crawl_id: str
    state: str  # the crawl's state, part of the fingerprint
    fmt: ExportFormat

    @property
    def download_name(self) -> str:
        return f"{self.crawl_id}.{self.fmt.extension}"


async def fingerprint(blobs: BlobStore, target: ExportTarget) -> str:
    """16 hex digits over the crawl's state and the keys of its exported chunks."""
    prefix = crawl_prefix(target.tenant_id, target.crawl_id)
    digest = hashlib.sha256(target.state.encode())
    for key in await blobs.list(prefix=prefix):
        if key[len(prefix) :].startswith(_SOURCES):
            digest.update(b"\n" + key.encode())
    return digest.hexdigest()[:16]


def export_key(target: ExportTarget, print_: str) -> str:
    prefix = crawl_prefix(target.tenant_id, target.crawl_id)
    return f"{prefix}exports/{print_}/{target.download_name}"


@dataclass(frozen=True, slots=True)
class ExportUrls:
    """Delivers one export: streamed when small, else stored once and redirected to."""

    blobs: BlobStore
    threshold_bytes: int
    ttl_s: int

    async def deliver(
        self,
        target: ExportTarget,
        stream: AsyncIterator[bytes],
        headers: dict[str, str],
        *,
        force: bool,
    ) -> ApiResponse:
        key = export_key(target, await fingerprint(self.blobs, target))
        if await self.blobs.exists(key=key):
            return await self._redirect(target, key)
        parts: list[bytes] = []
        size = 0
        async for chunk in stream:
            parts.append(chunk)
            size += len(chunk)
        if size <= self.threshold_bytes and not force:
            return ApiResponse(200, headers, b"".join(parts))
        await self.blobs.put(key=key, data=b"".join(parts), content_type=target.fmt.content_type)
        del parts
        await self._drop_stale(target, key)
        return await self._redirect(target, key)

    async def _redirect(self, target: ExportTarget, key: str) -> ApiResponse:
        url = await self.blobs.signed_url(
            key=key, expires_s=self.ttl_s, download_name=target.download_name
        )
        return ApiResponse.empty(303, headers={"location": url})

    async def _drop_stale(self, target: ExportTarget, current: str) -> None:
        """Remove the exports of older fingerprints (the crawl has grown since)."""
        keep = current.rsplit("/", 1)[0] + "/"
        prefix = f"{crawl_prefix(target.tenant_id, target.crawl_id)}exports/"
        for key in await self.blobs.list(prefix=prefix):
            if not key.startswith(keep):
                await self.blobs.delete(key=key)
