"""Exports, streamed: a crawl's pages (JSONL, WARC) and items (JSONL, CSV, Parquet).

Every exporter is an async iterator of byte chunks over ``BlobStore.stream``: nothing holds a
whole crawl in memory — a chunk of the blob store (1 MiB), one line, or one batch of
``PARQUET_BATCH_ROWS`` items at a time.

Sources (``core.layout``): pages are the ``manifest/<seq>.jsonl`` and ``warc/<seq>.warc.gz``
chunks, in ``seq`` order; items are JSON objects, one a line, in ``items.jsonl`` and any
``items/<seq>.jsonl`` under the crawl's prefix (what the engine's extraction writes).

* ``jsonl`` / ``items.jsonl``: the lines, each ending in a newline.
* ``warc``: the gzip members, concatenated (a valid ``.warc.gz``).
* ``screenshots``: a ZIP of the rendered pages' screenshots under the names their records
  carry, and an ``index.jsonl`` of URL → name (``core.screenshot_export``).
* ``items.csv``: RFC 4180, a header of every field seen (first pass), then one row per item
  (second pass); nested values are JSON text.
* ``items.parquet``: one column per field; a column is ``int64``, ``double``, ``bool`` or
  ``string`` when every value in it is of that kind (ints and floats make ``double``), else
  ``string`` with JSON text for nested values; written in row groups of
  ``PARQUET_BATCH_ROWS`` (first pass: the schema; second pass: the rows).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from core.layout import crawl_prefix
from core.ports.blob_store import BlobStore
from core.screenshot_export import screenshots_zip

PARQUET_BATCH_ROWS = 2000
_CHUNK = re.compile(r"(\d{1,12})\.(jsonl|warc\.gz)")


@dataclass(frozen=True, slots=True)
class ExportFormat:
    name: str
    content_type: str
    extension: str
    label: str  # how the web app names the download


FORMATS = {
    f.name: f
    for f in (
        ExportFormat("jsonl", "application/x-ndjson", "jsonl", "Pages (JSONL)"),
        ExportFormat("warc", "application/warc", "warc.gz", "WARC"),
        ExportFormat("screenshots", "application/zip", "screenshots.zip", "Screenshots (ZIP)"),
        ExportFormat("items.jsonl", "application/x-ndjson", "items.jsonl", "Items (JSONL)"),
        ExportFormat("items.csv", "text/csv; charset=utf-8", "items.csv", "Items (CSV)"),
        ExportFormat(
            "items.parquet", "application/vnd.apache.parquet", "items.parquet", "Items (Parquet)"
        ),
    )
}


async def chunk_keys(blobs: BlobStore, tenant_id: str, crawl_id: str, kind: str) -> list[str]:
    """Keys of the crawl's ``kind`` chunks (``manifest``, ``warc``, ``items``), seq order."""
    prefix = f"{crawl_prefix(tenant_id, crawl_id)}{kind}/"
    found: list[tuple[int, str]] = []
    for key in await blobs.list(prefix=prefix):
        match = _CHUNK.fullmatch(key[len(prefix) :])
        if match is not None:
            found.append((int(match.group(1)), key))
    return [key for _, key in sorted(found)]


async def item_keys(blobs: BlobStore, tenant_id: str, crawl_id: str) -> list[str]:
    single = f"{crawl_prefix(tenant_id, crawl_id)}items.jsonl"
    keys = [single] if await blobs.exists(key=single) else []
    return keys + await chunk_keys(blobs, tenant_id, crawl_id, "items")


async def lines(blobs: BlobStore, keys: list[str]) -> AsyncIterator[bytes]:
    """Every non-blank line of ``keys``' objects, in order, without its newline."""
    for key in keys:
        pending = b""
        async for chunk in blobs.stream(key=key):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                if line.strip():
                    yield line
        if pending.strip():
            yield pending


async def concatenated(blobs: BlobStore, keys: list[str]) -> AsyncIterator[bytes]:
    for key in keys:
        async for chunk in blobs.stream(key=key):
            yield chunk


async def json_lines(blobs: BlobStore, keys: list[str]) -> AsyncIterator[bytes]:
    async for line in lines(blobs, keys):
        yield line + b"\n"


async def _items(blobs: BlobStore, keys: list[str]) -> AsyncIterator[dict[str, Any]]:
    async for line in lines(blobs, keys):
        try:
            value = json.loads(line)
        except ValueError:
            continue  # a torn last line of a chunk being written
        if isinstance(value, dict):
            yield value


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


async def items_csv(blobs: BlobStore, keys: list[str]) -> AsyncIterator[bytes]:
    columns: dict[str, None] = {}
    async for item in _items(blobs, keys):
        columns.update(dict.fromkeys(item))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    async for item in _items(blobs, keys):
        writer.writerow({k: _cell(v) for k, v in item.items()})
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "string"


def _column_type(kinds: set[str]) -> str:
    kinds = kinds - {"null"}
    if len(kinds) == 1:
        return kinds.pop()
    return "float" if kinds == {"int", "float"} else "string"


async def items_parquet(blobs: BlobStore, keys: list[str]) -> AsyncIterator[bytes]:
    import pyarrow as pa  # imported when first asked for: ~60 MB nobody else pays
    import pyarrow.parquet as pq

    seen: dict[str, set[str]] = {}
    async for item in _items(blobs, keys):
        for name, value in item.items():
            seen.setdefault(name, set()).add(_kind(value))
    arrow = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "string": pa.string()}
    types = {name: _column_type(kinds) for name, kinds in seen.items()}
    schema = pa.schema([(name, arrow[kind]) for name, kind in types.items()])
    sink = io.BytesIO()
    writer = pq.ParquetWriter(sink, schema)

    def flush(rows: list[dict[str, Any]]) -> bytes:
        columns = {
            name: [_parquet_value(row.get(name), kind) for row in rows]
            for name, kind in types.items()
        }
        writer.write_table(pa.Table.from_pydict(columns, schema=schema))
        data = sink.getvalue()
        sink.seek(0)
        sink.truncate()
        return data

    batch: list[dict[str, Any]] = []
    async for item in _items(blobs, keys):
        batch.append(item)
        if len(batch) == PARQUET_BATCH_ROWS:
            yield flush(batch)
            batch = []
    if batch:
        yield flush(batch)
    writer.close()
    yield sink.getvalue()


def _parquet_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "string":
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if kind == "float":
        return float(value)
    return value


async def export_stream(
    blobs: BlobStore, tenant_id: str, crawl_id: str, fmt: str
) -> AsyncIterator[bytes]:
    """The chunks of ``fmt`` (a key of ``FORMATS``) for one crawl."""
    if fmt == "jsonl":
        return json_lines(blobs, await chunk_keys(blobs, tenant_id, crawl_id, "manifest"))
    if fmt == "warc":
        return concatenated(blobs, await chunk_keys(blobs, tenant_id, crawl_id, "warc"))
    if fmt == "screenshots":
        manifests = await chunk_keys(blobs, tenant_id, crawl_id, "manifest")
        return screenshots_zip(blobs, tenant_id, crawl_id, lambda: lines(blobs, manifests))
    keys = await item_keys(blobs, tenant_id, crawl_id)
    if fmt == "items.jsonl":
        return json_lines(blobs, keys)
    if fmt == "items.csv":
        return items_csv(blobs, keys)
    return items_parquet(blobs, keys)
