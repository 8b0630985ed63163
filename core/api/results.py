"""Tenant routes for results: paginated page records and items, and exports (JSONL, WARC).

Both read the chunks the engine writes (``core.layout``): ``manifest/{seq}.jsonl`` holds page
records, one JSON a line; ``warc/{seq}.warc.gz`` the same pages as WARC records;
``content/{seq}.jsonl`` their formats, line for line, joined into each record as ``content``
(one chunk at a time: a page of results never loads more than one chunk of a crawl);
``items/{seq}.jsonl`` the extracted items (``GET .../items``, ``export?format=items``). A page cursor
is the position (chunk ``seq``, line offset) of the next record, base64url-encoded; it stays
valid while the crawl runs because chunks are only ever appended. Exports are the chunks
streamed; beyond ``SKYCRAWL_EXPORT_URL_BYTES``, where the blob store signs URLs, they are stored
once and answered with a redirect to a signed URL (``core.api.export_urls``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import ValidationError

from core.api.crawls import load_crawl
from core.api.export_urls import ExportTarget, ExportUrls
from core.api.http import ApiResponse
from core.api.problems import HttpProblem
from core.api.routing import PAGING, Context, Param, Reply, Route
from core.api.schemas import ItemList, PageList
from core.api.validation import query_int
from core.errors import NotFound
from core.exports import FORMATS, export_stream
from core.layout import crawl_prefix, screenshot_key
from core.models import Crawl, PageRecord
from core.output import with_content
from core.ports.blob_store import BlobStore
from core.records import Records
from core.run_changes import CHANGES, Comparison, classify

log = logging.getLogger("skycrawl.api")
#: what ``GET .../pages`` lists of each record: it, a copy of it, or nothing
Keep = Callable[[PageRecord], PageRecord | None]


def _keep_all(record: PageRecord) -> PageRecord | None:
    return record


_CHUNK = re.compile(r"(\d{1,12})\.(jsonl|warc\.gz)")
_CURSOR = re.compile(r"p1[:.](\d{1,12})[:.](\d{1,9})")
_SCREENSHOT = re.compile(r"[0-9a-f]{32}\.(png|jpeg)")
#: ``format=`` values of the export route: ``core.exports.FORMATS`` and ``items`` (an alias of
#: ``items.jsonl``, the name the CLI uses)
EXPORT_ALIASES = {"items": "items.jsonl"}
EXPORTS = [*FORMATS, *EXPORT_ALIASES]
#: ``delivery=`` values: ``auto`` streams up to ``SKYCRAWL_EXPORT_URL_BYTES`` and redirects to
#: a signed URL beyond (where the blob store signs), ``url`` always redirects, ``stream`` never
DELIVERIES = ("auto", "url", "stream")


def encode_cursor(seq: int, offset: int) -> str:
    return f"p1.{seq}.{offset}"


def decode_cursor(cursor: str | None) -> tuple[int, int]:
    """(chunk seq, line offset) of the next record; (0, 0) without a cursor; 400 if bad."""
    if not cursor:
        return 0, 0
    raw = cursor
    if not cursor.startswith("p1."):  # the base64 form of earlier versions
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise HttpProblem(400, "invalid cursor") from None
    match = _CURSOR.fullmatch(raw)
    if match is None:
        raise HttpProblem(400, "invalid cursor")
    return int(match.group(1)), int(match.group(2))


class ResultRoutes:
    def __init__(
        self, *, records: Records, blobs: BlobStore, urls: ExportUrls | None = None
    ) -> None:
        self._records = records
        self._blobs = blobs
        self._urls = urls  # None: every export streams

    async def _chunks(self, tenant_id: str, crawl_id: str, kind: str) -> list[tuple[int, str]]:
        """(seq, key) of the crawl's chunks of one kind, in seq order."""
        prefix = f"{crawl_prefix(tenant_id, crawl_id)}{kind}/"
        chunks: list[tuple[int, str]] = []
        for key in await self._blobs.list(prefix=prefix):
            match = _CHUNK.fullmatch(key[len(prefix) :])
            if match is not None:
                chunks.append((int(match.group(1)), key))
        return sorted(chunks)

    async def list_pages(self, ctx: Context) -> ApiResponse:
        tenant_id = ctx.tenant_id
        crawl = await load_crawl(self._records, tenant_id, ctx.params["crawl_id"])
        limit = query_int(ctx.request, "limit", default=100, low=1, high=1000)
        start = decode_cursor(ctx.request.query.get("cursor"))
        change = ctx.request.query.get("change")
        source: str = crawl.value.id
        keep: Keep = _keep_all
        if change is not None:
            source, keep = await self._change_filter(crawl.value, change)
        chunks = await self._chunks(tenant_id, source, "manifest")
        contents = dict(await self._chunks(tenant_id, source, "content"))
        items, next_position = await self._read(chunks, start, limit, contents, keep)
        cursor = None if next_position is None else encode_cursor(*next_position)
        return ApiResponse.json(200, PageList(items=items, next_cursor=cursor))

    async def _change_filter(self, crawl: Crawl, change: str) -> tuple[str, Keep]:
        """(crawl whose manifest to read, which of its records to keep) for ``?change=``:
        the run's own pages of that kind, or, for ``gone``, the earlier run's lost pages."""
        if change not in CHANGES:
            raise HttpProblem(400, f"unknown change {change!r} (use {', '.join(CHANGES)})")
        comparison = await Comparison.load(self._blobs, crawl)
        if comparison is None:
            raise HttpProblem(400, "this crawl re-crawled no earlier crawl (no recrawl_of id)")
        previous = comparison.previous
        if change == "gone":
            ok = await comparison.fetched_ok()

            def gone(record: PageRecord) -> PageRecord | None:
                lost = record.url in previous and record.url not in ok
                return record.model_copy(update={"change": "gone"}) if lost else None

            return comparison.previous_id, gone

        def of_kind(record: PageRecord) -> PageRecord | None:
            fields = record.model_dump(include={"url", "status", "error", "unchanged", "sha256"})
            found = classify(fields, previous)
            return record.model_copy(update={"change": found}) if found == change else None

        return crawl.id, of_kind

    async def _read(
        self,
        chunks: list[tuple[int, str]],
        start: tuple[int, int],
        limit: int,
        contents: dict[int, str] | None = None,
        keep: Keep | None = None,
    ) -> tuple[list[PageRecord], tuple[int, int] | None]:
        """Up to ``limit`` records from ``start`` (those ``keep`` returns), and the position
        after them (None at end)."""
        start_seq, start_offset = start
        items: list[PageRecord] = []
        for seq, key in chunks:
            if seq < start_seq:
                continue
            lines = await self._lines(key, (contents or {}).get(seq))
            for offset in range(start_offset if seq == start_seq else 0, len(lines)):
                if len(items) == limit:
                    return items, (seq, offset)
                record = _parse(lines[offset], key)
                if record is not None and keep is not None:
                    record = keep(record)
                if record is not None:
                    items.append(record)
        return items, None

    async def _lines(self, key: str, content_key: str | None) -> list[bytes]:
        """The lines of one manifest chunk, with their content joined in when stored."""
        lines = [line for line in (await self._blobs.get(key=key)).splitlines() if line.strip()]
        if content_key is None:
            return lines
        contents = (await self._blobs.get(key=content_key)).splitlines()
        if len(contents) != len(lines):  # not written by this version: records alone
            log.warning("content chunk %s does not match its manifest", content_key)
            return lines
        return [
            with_content(line, c).rstrip(b"\n") for line, c in zip(lines, contents, strict=True)
        ]

    async def export_parts(self, tenant_id: str, crawl_id: str, kind: str) -> AsyncIterator[bytes]:
        """An export one chunk at a time (page records with their content, items or WARC)."""
        contents = dict(await self._chunks(tenant_id, crawl_id, "content"))
        for seq, key in await self._chunks(tenant_id, crawl_id, kind):
            if kind == "manifest":
                lines = await self._lines(key, contents.get(seq))
                yield b"".join(line + b"\n" for line in lines)
                continue
            data = await self._blobs.get(key=key)
            if kind == "items" and data and not data.endswith(b"\n"):
                data += b"\n"
            yield data

    async def list_items(self, ctx: Context) -> ApiResponse:
        tenant_id = ctx.tenant_id
        crawl = await load_crawl(self._records, tenant_id, ctx.params["crawl_id"])
        limit = query_int(ctx.request, "limit", default=100, low=1, high=1000)
        start_seq, start_offset = decode_cursor(ctx.request.query.get("cursor"))
        found: list[dict[str, Any]] = []
        position: tuple[int, int] | None = None
        for seq, key in await self._chunks(tenant_id, crawl.value.id, "items"):
            if seq < start_seq:
                continue
            lines = [line for line in (await self._blobs.get(key=key)).splitlines() if line.strip()]
            for offset in range(start_offset if seq == start_seq else 0, len(lines)):
                if len(found) == limit:
                    position = (seq, offset)
                    break
                with contextlib.suppress(ValueError):
                    found.append(json.loads(lines[offset]))
            if position is not None:
                break
        cursor = None if position is None else encode_cursor(*position)
        return ApiResponse.json(200, ItemList(items=found, next_cursor=cursor))

    async def export_crawl(self, ctx: Context) -> ApiResponse:
        tenant_id = ctx.tenant_id
        crawl = await load_crawl(self._records, tenant_id, ctx.params["crawl_id"])
        name = ctx.request.query.get("format") or "jsonl"
        fmt = FORMATS.get(EXPORT_ALIASES.get(name, name))
        if fmt is None:
            known = ", ".join(EXPORTS)
            raise HttpProblem(400, f"unknown export format {name!r} (use {known})")
        headers = {
            "content-type": fmt.content_type,
            "content-disposition": f'attachment; filename="{crawl.value.id}.{fmt.extension}"',
        }
        delivery = ctx.request.query.get("delivery") or "auto"
        if delivery not in DELIVERIES:
            raise HttpProblem(400, f"unknown delivery {delivery!r} (use {', '.join(DELIVERIES)})")
        signs = self._urls is not None and self._blobs.capabilities.signed_urls
        if delivery == "url" and not signs:
            raise HttpProblem(400, "this deployment streams exports: it has no signed URLs")
        if fmt.name == "jsonl":  # page records with their per-page content, a chunk at a time
            stream = self.export_parts(tenant_id, crawl.value.id, "manifest")
        else:
            stream = await export_stream(self._blobs, tenant_id, crawl.value.id, fmt.name)
        if self._urls is None or not signs or delivery == "stream":
            return ApiResponse(200, headers, stream=stream)
        target = ExportTarget(tenant_id, crawl.value.id, crawl.value.state.value, fmt)
        return await self._urls.deliver(target, stream, headers, force=delivery == "url")

    async def get_screenshot(self, ctx: Context) -> ApiResponse:
        """One rendered page's screenshot, by the name in its record's ``screenshot``."""
        crawl = await load_crawl(self._records, ctx.tenant_id, ctx.params["crawl_id"])
        name = ctx.params["name"]
        match = _SCREENSHOT.fullmatch(name)
        if match is None:
            raise HttpProblem(404, f"no screenshot {name!r}")
        key = screenshot_key(ctx.tenant_id, crawl.value.id, f"screenshots/{name}")
        try:
            image = await self._blobs.get(key=key)
        except NotFound as exc:
            raise HttpProblem(404, f"no screenshot {name!r}") from exc
        return ApiResponse(200, {"content-type": f"image/{match.group(1)}"}, image)

    def routes(self) -> list[Route]:
        not_found = Reply(404, "No such crawl (or not yours).")
        return [
            Route(
                "GET",
                "/v1/crawls/{crawl_id}/screenshots/{name}",
                self.get_screenshot,
                "A rendered page's screenshot (the name in its page record's screenshot)",
                replies=(
                    Reply(200, "The image.", content_type="image/png"),
                    Reply(200, "The image.", content_type="image/jpeg"),
                    Reply(404, "No such crawl or screenshot."),
                ),
            ),
            Route(
                "GET",
                "/v1/crawls/{crawl_id}/items",
                self.list_items,
                "Items extracted by a crawl (extract, handler), paginated",
                replies=(
                    Reply(200, "A page of items.", ItemList),
                    Reply(400, "Bad cursor or limit."),
                    not_found,
                ),
                params=PAGING,
            ),
            Route(
                "GET",
                "/v1/crawls/{crawl_id}/pages",
                self.list_pages,
                "Page records of a crawl, paginated",
                replies=(
                    Reply(200, "A page of records.", PageList),
                    Reply(400, "Bad cursor, limit or change (or change without recrawl_of)."),
                    not_found,
                ),
                params=(
                    *PAGING,
                    Param(
                        "change",
                        "query",
                        "Only the pages that are new, changed or unchanged against the crawl "
                        "this one re-crawled (recrawl_of id: a schedule's previous run), or "
                        "gone: that crawl's pages this one did not fetch successfully.",
                        {"type": "string", "enum": list(CHANGES)},
                    ),
                ),
            ),
            Route(
                "GET",
                "/v1/crawls/{crawl_id}/export",
                self.export_crawl,
                "Export a crawl as JSONL or WARC",
                replies=(
                    Reply(303, "A signed URL of the stored export.", headers=("Location",)),
                    Reply(200, "JSON lines (page records).", content_type="application/x-ndjson"),
                    Reply(
                        200, "WARC (concatenated gzip members).", content_type="application/warc"
                    ),
                    Reply(200, "Items as CSV.", content_type="text/csv; charset=utf-8"),
                    Reply(200, "Items as Parquet.", content_type="application/vnd.apache.parquet"),
                    Reply(400, "Unknown format."),
                    not_found,
                ),
                params=(
                    Param(
                        "format",
                        "query",
                        "Pages: jsonl (default: page records with their content) or warc; "
                        "items: items.jsonl (or items), items.csv or items.parquet.",
                        {"type": "string", "enum": EXPORTS, "default": "jsonl"},
                    ),
                    Param(
                        "delivery",
                        "query",
                        "auto (default): the body up to SKYCRAWL_EXPORT_URL_BYTES, else 303 to a "
                        "signed URL of the stored export; url: always 303; stream: always the "
                        "body. url is 400 where the blob store cannot sign URLs (files).",
                        {"type": "string", "enum": list(DELIVERIES), "default": "auto"},
                    ),
                ),
            ),
        ]


def _parse(line: bytes, key: str) -> PageRecord | None:
    try:
        return PageRecord.model_validate_json(line)
    except ValidationError:
        log.warning("skipping an unreadable page record in %s", key)
        return None
