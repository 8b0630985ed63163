"""The engine crawls with the sensitive headers the API sealed into the tenant's store: the
site sees them, the RunCrawl message never held them."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from engine_sites import Site, engine_settings

from adapters.local.blob_store import FileBlobStore
from core.messages import RunCrawl, encode
from core.models import CrawlCounts, CrawlSpec
from core.sealed_headers import seal
from engine_container.bus_crawl import crawl_runner
from engine_container.fetcher import Fetcher

TENANT = "tn_sealed"


async def test_the_site_gets_the_sealed_headers_the_message_did_not_carry(
    serve, tmp_path: Path
) -> None:
    seen: list[tuple[str | None, str | None]] = []

    async def page(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Authorization"), request.headers.get("Cookie")))
        return web.Response(text="<html><body>ok</body></html>", content_type="text/html")

    site: Site = await serve({"*": page})
    blobs = FileBlobStore(tmp_path / "blobs")
    asked = CrawlSpec(
        seeds=[site.url("/")],
        use_sitemaps=False,
        respect_robots=False,
        headers={"Authorization": "Bearer t0ken", "Cookie": "sid=42"},
    )
    spec = await seal(blobs, tenant_id=TENANT, crawl_id="cr1", spec=asked)
    message = RunCrawl(container_id="c", tenant_id=TENANT, crawl_id="cr1", attempt=1, spec=spec)
    assert b"t0ken" not in encode(message).body
    assert b"sid=42" not in encode(message).body

    async def report(counts: CrawlCounts) -> None:
        pass

    settings = engine_settings()
    async with Fetcher(settings) as fetcher:
        counts = await crawl_runner(blobs, fetcher, settings)(message, report)
    assert counts.fetched == 1
    assert seen == [("Bearer t0ken", "sid=42")]
