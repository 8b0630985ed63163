"""The ``screenshots`` export (issue 15): a ZIP of a crawl's screenshots, streamed.

Entries, in manifest order: ``screenshots/<hash>.png`` (or ``.jpeg``) -- the exact names the
page records carry in ``screenshot``, so unzipping beside ``pages.jsonl`` makes every record's
name a path -- then ``index.jsonl``: one ``{"url", "screenshot"}`` line per page that has
one. Images are stored (not deflated: PNG and JPEG are compressed already), each streamed from
the blob store a chunk at a time into the ZIP, and the ZIP is written without seeking (sizes
and CRCs in data descriptors after each entry, as ``zipfile`` does on a stream), so nothing
holds more than one chunk. A page named twice (a resumed crawl) is stored once; a record
whose image is missing (a crawl still running) is left out of both.

Limits: ZIP64 is not forced, so one image must stay under 2 GiB (a screenshot is far smaller);
the manifests are read twice (entries, then the index).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import AsyncIterator, Callable

from core.errors import NotFound
from core.layout import screenshot_key
from core.ports.blob_store import BlobStore


class _Spool(io.RawIOBase):
    """What ``zipfile`` writes, kept until taken; not seekable, so it streams."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


#: The crawl's manifest lines (page records), afresh on every call.
Records = Callable[[], AsyncIterator[bytes]]


async def _named(records: Records) -> AsyncIterator[tuple[str, str]]:
    """(url, screenshot name) of every page record that names a screenshot, in order."""
    async for line in records():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line of a chunk being written
        name = record.get("screenshot") if isinstance(record, dict) else None
        if isinstance(name, str) and name.startswith("screenshots/"):
            yield str(record.get("url") or ""), name


async def screenshots_zip(
    blobs: BlobStore, tenant_id: str, crawl_id: str, records: Records
) -> AsyncIterator[bytes]:
    """The ZIP's bytes, a blob-store chunk (or less) at a time."""
    spool = _Spool()
    archive = zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED)
    stored: set[str] = set()
    async for _, name in _named(records):
        if name in stored:
            continue
        chunks = blobs.stream(key=screenshot_key(tenant_id, crawl_id, name))
        try:
            first = await anext(chunks)
        except NotFound:
            continue
        except StopAsyncIteration:
            first = b""
        stored.add(name)
        with archive.open(name, "w") as entry:
            entry.write(first)
            yield spool.take()
            async for chunk in chunks:
                entry.write(chunk)
                yield spool.take()
        yield spool.take()
    with archive.open("index.jsonl", "w") as index:
        async for url, name in _named(records):
            if name in stored:
                index.write(json.dumps({"url": url, "screenshot": name}).encode() + b"\n")
                stored.discard(name)  # one line per image
                yield spool.take()
    archive.close()
    yield spool.take()
