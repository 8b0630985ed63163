"""Tenant routes for results: paginated page records and exports (JSONL, WARC).

Both read the chunks the engine writes (``core.layout``): ``manifest/{seq}.jsonl`` holds page
records, one JSON a line; ``warc/{seq}.warc.gz`` the same pages as WARC records. A page cursor
is the position (chunk ``seq``, line offset) of the next record, base64url-encoded; it stays
valid while the crawl runs because chunks are only ever appended. Exports are the chunks
concatenated, in memory: fine up to the size a function may answer with (6 MB on Lambda),
beyond that a deployment should hand out signed blob URLs instead.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re

from pydantic import ValidationError

from core.api.crawls import load_crawl
from core.api.http import ApiResponse
from core.api.problems import HttpProblem
from core.api.routing import PAGING, Context, Param, Reply, Route
from core.api.schemas import PageList
from core.api.validation import query_int
from core.layout import crawl_prefix
from core.models import PageRecord
from core.ports.blob_store import BlobStore
from core.records import Records

log = logging.getLogger("skycrawl.api")

_CHUNK = re.compile(r"(\d{1,12})\.(jsonl|warc\.gz)")
_CURSOR = re.compile(r"p1:(\d{1,12}):(\d{1,9})")
EXPORTS = {
    "jsonl": ("manifest", "application/x-ndjson", "jsonl"),
    "warc": ("warc", "application/warc", "warc.gz"),
}


def encode_cursor(seq: int, offset: int) -> str:
    return base64.urlsafe_b64encode(f"p1:{seq}:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[int, int]:
    """(chunk seq, line offset) of the next record; (0, 0) without a cursor; 400 if bad."""
    if not cursor:
        return 0, 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise HttpProblem(400, "invalid cursor") from None
    match = _CURSOR.fullmatch(raw)
    if match is None:
        raise HttpProblem(400, "invalid cursor")
    return int(match.group(1)), int(match.group(2))


class ResultRoutes:
    def __init__(self, *, records: Records, blobs: BlobStore) -> None:
        self._records = records
        self._blobs = blobs

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
        chunks = await self._chunks(tenant_id, crawl.value.id, "manifest")
        items, next_position = await self._read(chunks, start, limit)
        cursor = None if next_position is None else encode_cursor(*next_position)
        return ApiResponse.json(200, PageList(items=items, next_cursor=cursor))

    async def _read(
        self, chunks: list[tuple[int, str]], start: tuple[int, int], limit: int
    ) -> tuple[list[PageRecord], tuple[int, int] | None]:
        """Up to ``limit`` records from ``start``, and the position after them (None at end)."""
        start_seq, start_offset = start
        items: list[PageRecord] = []
        for seq, key in chunks:
            if seq < start_seq:
                continue
            lines = [line for line in (await self._blobs.get(key=key)).splitlines() if line.strip()]
            for offset in range(start_offset if seq == start_seq else 0, len(lines)):
                if len(items) == limit:
                    return items, (seq, offset)
                record = _parse(lines[offset], key)
                if record is not None:
                    items.append(record)
        return items, None

    async def export_crawl(self, ctx: Context) -> ApiResponse:
        tenant_id = ctx.tenant_id
        crawl = await load_crawl(self._records, tenant_id, ctx.params["crawl_id"])
        fmt = ctx.request.query.get("format") or "jsonl"
        if fmt not in EXPORTS:
            raise HttpProblem(400, f"unknown export format {fmt!r} (use jsonl or warc)")
        kind, content_type, extension = EXPORTS[fmt]
        parts: list[bytes] = []
        for _, key in await self._chunks(tenant_id, crawl.value.id, kind):
            data = await self._blobs.get(key=key)
            if kind == "manifest" and data and not data.endswith(b"\n"):
                data += b"\n"
            parts.append(data)
        headers = {
            "content-type": content_type,
            "content-disposition": f'attachment; filename="{crawl.value.id}.{extension}"',
        }
        return ApiResponse(200, headers, b"".join(parts))

    def routes(self) -> list[Route]:
        not_found = Reply(404, "No such crawl (or not yours).")
        return [
            Route(
                "GET",
                "/v1/crawls/{crawl_id}/pages",
                self.list_pages,
                "Page records of a crawl, paginated",
                replies=(
                    Reply(200, "A page of records.", PageList),
                    Reply(400, "Bad cursor or limit."),
                    not_found,
                ),
                params=PAGING,
            ),
            Route(
                "GET",
                "/v1/crawls/{crawl_id}/export",
                self.export_crawl,
                "Export a crawl as JSONL or WARC",
                replies=(
                    Reply(200, "JSON lines (page records).", content_type="application/x-ndjson"),
                    Reply(
                        200, "WARC (concatenated gzip members).", content_type="application/warc"
                    ),
                    Reply(400, "Unknown format."),
                    not_found,
                ),
                params=(
                    Param(
                        "format",
                        "query",
                        "jsonl (default) or warc.",
                        {"type": "string", "enum": ["jsonl", "warc"], "default": "jsonl"},
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
