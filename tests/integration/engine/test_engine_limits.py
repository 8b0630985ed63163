"""Hard limits of the fetcher: redirects, timeouts, wire and decoded body caps, content types."""

from __future__ import annotations

import asyncio
import struct
import time
import tracemalloc
import zlib

import pytest
from aiohttp import web
from engine_sites import Site, engine_settings, links_page

from engine_container.fetcher import FetchError

MiB = 1 << 20


def gzip_bomb_1gib() -> bytes:
    """A valid ~1 MiB gzip stream of 1 GiB of zeros, built without compressing 1 GiB.

    After a full flush the compressor's output for each further MiB of zeros is the same
    byte-aligned block, so the middle is one block repeated; the trailer holds the CRC-32 of
    2**30 zero bytes (0x5b64c2b0) and the size, 2**30.
    """
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    first = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    middle = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    final_block = packer.flush()[:-8]
    return first + middle * 1023 + final_block + struct.pack("<II", 0x5B64C2B0, 1 << 30)


async def test_redirect_loops_stop_at_max_redirects(serve, fetchers) -> None:
    async def hop(request: web.Request) -> web.Response:
        n = int(request.query.get("n", "0"))
        return web.Response(status=301, headers={"Location": f"/loop?n={n + 1}"})

    site: Site = await serve({"/loop": hop})
    result = await fetchers(engine_settings(max_redirects=3)).fetch(site.url("/loop"))
    assert result.error_kind is FetchError.redirects
    assert result.error == "more than 3 redirects"
    assert result.redirects == 3
    assert sum(site.hits.values()) == 4


async def test_a_slow_server_times_out(serve, fetchers) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text="late")

    site: Site = await serve({"/": slow})
    fetcher = fetchers(engine_settings(read_timeout_s=0.2, total_timeout_s=0.5))
    started = time.monotonic()
    result = await fetcher.fetch(site.url("/"))
    assert result.error_kind is FetchError.timeout
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("declared", [True, False])
async def test_bodies_over_the_wire_cap_are_aborted(serve, fetchers, declared: bool) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        if declared:
            response.content_length = 5 * MiB
        await response.prepare(request)
        for _ in range(5):
            await response.write(b"x" * MiB)
        await response.write_eof()
        return response

    site: Site = await serve({"/": big})
    result = await fetchers(engine_settings(max_body_bytes=MiB)).fetch(site.url("/"))
    assert result.error_kind is FetchError.too_large
    assert result.error is not None
    assert f"body exceeds {MiB} bytes" in result.error
    assert result.status == 200
    assert result.body == b""
    assert result.wire_bytes <= MiB


async def test_a_gzip_bomb_is_stopped_at_the_decoded_cap_with_bounded_memory(
    serve, fetchers
) -> None:
    bomb = gzip_bomb_1gib()
    assert len(bomb) < 1.1 * MiB

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=bomb, headers={"Content-Type": "text/html", "Content-Encoding": "gzip"}
        )

    site: Site = await serve({"/": handler})
    fetcher = fetchers(engine_settings(max_decoded_bytes=2 * MiB))
    tracemalloc.start()
    try:
        result = await fetcher.fetch(site.url("/"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.error == f"decoded body exceeds {2 * MiB} bytes"
    assert result.error_kind is FetchError.too_large
    assert result.body == b""
    assert peak < 12 * MiB, f"peak {peak / MiB:.1f} MiB while decoding a 1 GiB bomb"


async def test_a_normal_gzip_page_is_decoded(serve, fetchers) -> None:
    page = b"<html><title>z</title>" + b"words " * 5000 + b"</html>"

    async def handler(request: web.Request) -> web.Response:
        packed = zlib.compressobj(6, zlib.DEFLATED, 31)
        body = packed.compress(page) + packed.flush()
        return web.Response(
            body=body, headers={"Content-Type": "text/html", "Content-Encoding": "gzip"}
        )

    site: Site = await serve({"/": handler})
    result = await fetchers().fetch(site.url("/"))
    assert result.body == page
    assert result.wire_bytes < len(page) // 10


async def test_other_content_types_keep_metadata_and_are_not_parsed(serve, crawl) -> None:
    # a type outside the crawl's allow_types (default: HTML, XHTML, PDF; see test_engine_output)
    async def pdf(request: web.Request) -> web.Response:
        return web.Response(
            body=b"PK\x03\x04 <html><title>no</title><a href='/from-pdf'>x</a></html>",
            headers={"Content-Type": "application/zip", "ETag": '"v1"'},
        )

    site: Site = await serve({"/": links_page("/doc.pdf"), "/doc.pdf": pdf})
    outcome = await crawl([site.url("/")], respect_robots=False)
    doc = outcome.by_url()[site.url("/doc.pdf")]
    assert doc["status"] == 200
    assert doc["content_type"] == "application/zip"
    assert doc["headers"]["etag"] == '"v1"'
    assert doc["error"] is None
    assert (doc["title"], doc["links"], doc["bytes"], doc["sha256"]) == (None, 0, 0, None)
    assert site.hits["/from-pdf"] == 0
    assert outcome.counts.fetched == 2
