"""What changed between a crawl and the crawl it re-crawled (``recrawl_of``): a schedule's runs.

Each page of a crawl with an explicit ``recrawl_of`` id (every scheduled run after the first)
is, against that earlier run's *successful* pages (2xx, or 304 as unchanged, without error —
the pages ``engine_container.recrawl`` re-queues):

* ``new``: its URL was not among them;
* ``unchanged``: a ``304`` (``unchanged: true``), or the same body (``sha256``);
* ``changed``: fetched again with a different body;

and a page of the earlier run is ``gone`` when this run did not fetch it successfully: it
answered 404/410 (or another failure), or it was not reached at all (no longer linked, out of
``max_pages``). A failed page that was not in the earlier run is none of these.

The counts (``RunChanges``) are computed from the two manifests, one chunk at a time, holding
one URL and digest per earlier page (~100 bytes), once, when the run has ended, and stored
beside it (``changes.json``); while it runs they are null. ``GET /v1/crawls/{id}/pages?change=``
lists the pages of one kind at any time (the gone ones as the earlier run's records). A crawl
with ``recrawl_of: "latest"`` is compared with the crawl its engine resolved that to (written
beside it, ``core.layout.recrawled_key``); if there was none (a first crawl of those seeds),
it has no report.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from core.errors import NotFound
from core.exports import chunk_keys, lines
from core.layout import crawl_prefix, recrawled_key
from core.models import Crawl
from core.ports.blob_store import BlobStore

Change = Literal["new", "changed", "unchanged", "gone"]
CHANGES: tuple[Change, ...] = ("new", "changed", "unchanged", "gone")


class RunChanges(BaseModel):
    """Pages of a run against the run it re-crawled."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    previous_crawl_id: str
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    gone: int = 0


def succeeded(record: dict[str, Any]) -> bool:
    status = record.get("status")
    ok = isinstance(status, int) and (200 <= status < 300 or status == 304)
    return ok and not record.get("error")


def classify(record: dict[str, Any], previous: dict[str, str | None]) -> Change | None:
    """``record``'s kind against ``previous`` (URL → sha256 of its successful pages)."""
    if not succeeded(record):
        return None
    url = str(record.get("url"))
    if url not in previous:
        return "new"
    if record.get("unchanged") or record.get("sha256") == previous[url]:
        return "unchanged"
    return "changed"


async def previous_of(blobs: BlobStore, crawl: Crawl) -> str | None:
    """The earlier crawl ``crawl`` is compared with: its ``recrawl_of`` id, or for
    ``"latest"`` the crawl the engine resolved (None before it did, or if none)."""
    earlier = crawl.spec.recrawl_of
    if earlier != "latest":
        return earlier
    try:
        data = json.loads(await blobs.get(key=recrawled_key(crawl.tenant_id, crawl.id)))
    except (NotFound, ValueError):
        return None
    found = data.get("crawl_id") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None


async def records(blobs: BlobStore, tenant_id: str, crawl_id: str) -> AsyncIterator[bytes]:
    """The manifest lines of a crawl, in order."""
    async for line in lines(blobs, await chunk_keys(blobs, tenant_id, crawl_id, "manifest")):
        yield line


async def digests(blobs: BlobStore, tenant_id: str, crawl_id: str) -> dict[str, str | None]:
    """URL → sha256 of the crawl's successful pages."""
    found: dict[str, str | None] = {}
    async for line in records(blobs, tenant_id, crawl_id):
        record = _parse(line)
        if record is not None and succeeded(record):
            found[str(record.get("url"))] = record.get("sha256")
    return found


@dataclass(frozen=True, slots=True)
class Comparison:
    """A run and the earlier run's digests, for classifying and counting its pages."""

    blobs: BlobStore
    tenant_id: str
    crawl_id: str
    previous_id: str
    previous: dict[str, str | None]

    @classmethod
    async def load(cls, blobs: BlobStore, crawl: Crawl) -> Comparison | None:
        earlier = await previous_of(blobs, crawl)
        if earlier is None:
            return None
        found = await digests(blobs, crawl.tenant_id, earlier)
        return cls(blobs, crawl.tenant_id, crawl.id, earlier, found)

    async def fetched_ok(self) -> set[str]:
        return set(await digests(self.blobs, self.tenant_id, self.crawl_id))

    async def count(self) -> RunChanges:
        counts = dict.fromkeys(CHANGES, 0)
        ok: set[str] = set()
        async for line in records(self.blobs, self.tenant_id, self.crawl_id):
            record = _parse(line)
            kind = None if record is None else classify(record, self.previous)
            if record is not None and kind is not None:
                counts[kind] += 1
                ok.add(str(record.get("url")))
        counts["gone"] = len(self.previous.keys() - ok)
        return RunChanges(previous_crawl_id=self.previous_id, **counts)


def changes_key(tenant_id: str, crawl_id: str) -> str:
    return f"{crawl_prefix(tenant_id, crawl_id)}changes.json"


async def run_changes(blobs: BlobStore, crawl: Crawl) -> RunChanges | None:
    """The counts of an ended run, counted once and then read from ``changes.json``; None
    while it runs (a status poll never reads two manifests) or if it re-crawled nothing."""
    if crawl.spec.recrawl_of is None or not crawl.state.terminal:
        return None
    if await previous_of(blobs, crawl) is None:
        return None
    key = changes_key(crawl.tenant_id, crawl.id)
    if await blobs.exists(key=key):
        return RunChanges.model_validate_json(await blobs.get(key=key))
    comparison = await Comparison.load(blobs, crawl)
    assert comparison is not None
    counts = await comparison.count()
    await blobs.put(
        key=key, data=counts.model_dump_json().encode(), content_type="application/json"
    )
    return counts


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
