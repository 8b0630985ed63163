"""``Idempotency-Key`` for ``POST /v1/crawls``: a retried request gets the first answer.

A key (1-255 visible ASCII characters) is remembered per tenant for 24 hours with the SHA-256
of the canonical crawl spec and the crawl it created (table ``idempotency``). The same key with
the same spec replays the 202 with the same crawl id and stores nothing; the same key with
another spec is a 422; a key whose first request is still being stored (or undone) is a 409
with ``Retry-After: 1``. A replay does not count against the tenant's quotas.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
from datetime import timedelta

from core.api.http import ApiRequest
from core.api.problems import HttpProblem
from core.clock import Clock
from core.errors import Conflict
from core.models import Crawl, CrawlSpec, dump
from core.records import IdempotencyRecord, Records

IDEMPOTENCY_TTL = timedelta(hours=24)
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def idempotency_key(request: ApiRequest) -> str | None:
    """The request's ``Idempotency-Key``, None without one; 400 if malformed."""
    key = request.header("idempotency-key")
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise HttpProblem(400, "Idempotency-Key must be 1 to 255 visible ASCII characters")
    return key


def spec_digest(spec: CrawlSpec) -> str:
    """SHA-256 of the validated spec in canonical JSON (so key order and spacing don't matter)."""
    canonical = json.dumps(dump(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def busy() -> HttpProblem:
    return HttpProblem(
        409,
        "a request with this Idempotency-Key is still being processed; retry shortly",
        headers={"retry-after": "1"},
    )


class IdempotencyKeys:
    def __init__(self, records: Records, clock: Clock) -> None:
        self._records = records
        self._clock = clock

    async def earlier(self, tenant_id: str, key: str, digest: str) -> Crawl | None:
        """The crawl a live ``key`` created, or None if the key is new (or expired)."""
        found = await self._records.idempotency.get(tenant_id, key)
        if found is None:
            return None
        record = found.value
        if record.created_at + IDEMPOTENCY_TTL <= self._clock.now():
            with contextlib.suppress(Conflict):  # someone else got there; claim will tell
                await self._records.idempotency.delete(found)
            return None
        if not hmac.compare_digest(record.request_sha256, digest):
            raise HttpProblem(
                422,
                "this Idempotency-Key was used with a different request body",
                slug="idempotency-key-reused",
                title="Idempotency key reused",
            )
        crawl = await self._records.crawls.get(tenant_id, record.crawl_id)
        if crawl is None:  # the first request is between storing and undoing
            raise busy()
        return crawl.value

    async def claim(self, crawl: Crawl, key: str, digest: str) -> bool:
        """Remember ``key`` for ``crawl``; False if a concurrent request claimed it first."""
        record = IdempotencyRecord(
            key=key, crawl_id=crawl.id, request_sha256=digest, created_at=crawl.created_at
        )
        expires_at = crawl.created_at + IDEMPOTENCY_TTL
        try:
            await self._records.idempotency.create(
                crawl.tenant_id, key, record, expires_at=expires_at
            )
        except Conflict:
            return False
        return True

    async def release(self, tenant_id: str, key: str) -> None:
        await self._records.idempotency.discard(tenant_id, key)
