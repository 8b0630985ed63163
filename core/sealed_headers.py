"""Sensitive request headers stay out of bus messages and control-plane records.

A tenant's ``Authorization`` and ``Cookie`` headers (``SENSITIVE_HEADERS``) are credentials
for the sites it crawls. ``seal`` moves them out of the crawl's spec into the tenant's own
blob prefix, ``tenants/<tenant>/crawls/<crawl>/request-headers.json``
(``core.layout.request_headers_key``), before the crawl is stored or sent anywhere, and notes
their names in ``spec.sealed_headers``; the crawl record, the ``RunCrawl`` message on the
dispatch topic and anything dead-lettered carry only the names. The engine, whose identity
may read that prefix and no other tenant's, ``unseal``\\ s them into the spec it crawls with.

The object lives and dies with the crawl's results (teardown and retention delete the
crawl's prefix) and is encrypted at rest by the blob store (S3 SSE, Azure Storage and GCS
encryption). The names a tenant itself puts in ``sealed_headers`` are ignored: ``seal``
always sets them, and ``unseal`` reads only the object it derives from the tenant and crawl.
"""

from __future__ import annotations

import json

from core.errors import NotFound
from core.layout import request_headers_key
from core.models import CrawlSpec
from core.ports.blob_store import BlobStore

SENSITIVE_HEADERS = frozenset({"authorization", "cookie"})


async def seal(blobs: BlobStore, *, tenant_id: str, crawl_id: str, spec: CrawlSpec) -> CrawlSpec:
    """``spec`` without its sensitive headers, which are stored in the tenant's prefix."""
    secret = {k: v for k, v in spec.headers.items() if k in SENSITIVE_HEADERS}
    kept = {k: v for k, v in spec.headers.items() if k not in SENSITIVE_HEADERS}
    if secret:
        data = json.dumps(secret, sort_keys=True).encode()
        key = request_headers_key(tenant_id, crawl_id)
        await blobs.put(key=key, data=data, content_type="application/json")
    return spec.model_copy(update={"headers": kept, "sealed_headers": sorted(secret)})


async def unseal(blobs: BlobStore, *, tenant_id: str, crawl_id: str, spec: CrawlSpec) -> CrawlSpec:
    """``spec`` with the headers ``seal`` stored for this crawl put back (none: unchanged)."""
    if not spec.sealed_headers:
        return spec
    try:
        stored = json.loads(await blobs.get(key=request_headers_key(tenant_id, crawl_id)))
    except NotFound:
        return spec  # sealed, then purged: crawl without them rather than fail
    secret = {k: str(v) for k, v in stored.items() if k in SENSITIVE_HEADERS}
    return spec.model_copy(update={"headers": {**spec.headers, **secret}})


async def discard(blobs: BlobStore, *, tenant_id: str, crawl_id: str) -> None:
    """Remove what ``seal`` stored (a submission that was undone)."""
    await blobs.delete(key=request_headers_key(tenant_id, crawl_id))
