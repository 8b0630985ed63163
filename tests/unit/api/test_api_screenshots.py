"""Screenshots of rendered pages through the API: the engine's ``BlobSink`` stores them, the
tenant reads one back by the name in its page record; nobody else can."""

from __future__ import annotations

from datetime import UTC, datetime

from api_harness import Harness, assert_problem

from core import layout
from core.models import PageRecord
from engine_container.fetcher import FetchResult
from engine_container.sinks import BlobSink

Tenant = tuple[str, str]
IMAGE = b"\x89PNG\r\n\x1a\n" + b"screen" * 50
URL = "https://shop.example/app"


async def crawl_with_screenshot(harness: Harness, tenant: Tenant) -> tuple[str, str]:
    tenant_id, key = tenant
    spec = {"seeds": [URL], "render": "always", "screenshot": {"full_page": True}}
    crawl_id = str((await harness.submit(key, spec)).parsed()["id"])
    name = layout.screenshot_name(URL, "png")
    fetch = FetchResult(
        url=URL,
        final_url=URL,
        status=200,
        headers={},
        body=b"<div id=app></div>",
        wire_bytes=18,
        elapsed_ms=1.0,
        redirects=0,
        rendered=b"<div id=app>hi</div>",
        screenshot=IMAGE,
    )
    page = PageRecord(url=URL, status=200, fetched_at=datetime.now(UTC), screenshot=name)
    sink = BlobSink(harness.blobs, tenant_id, crawl_id)
    await sink.add(page, fetch)
    await sink.close()
    return crawl_id, name


async def test_the_tenant_reads_a_screenshot_by_its_page_record(
    harness: Harness, tenant: Tenant
) -> None:
    _, key = tenant
    crawl_id, _ = await crawl_with_screenshot(harness, tenant)
    pages = (await harness.call("GET", f"/v1/crawls/{crawl_id}/pages", key=key)).parsed()
    (page,) = pages["items"]
    name = page["screenshot"].removeprefix("screenshots/")

    response = await harness.call("GET", f"/v1/crawls/{crawl_id}/screenshots/{name}", key=key)

    assert response.status == 200
    assert response.headers["content-type"] == "image/png"
    assert response.body == IMAGE


async def test_other_tenants_and_made_up_names_get_404(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    crawl_id, name = await crawl_with_screenshot(harness, tenant)
    _, other_key = await harness.create_tenant("rival")
    short = name.removeprefix("screenshots/")
    base = f"/v1/crawls/{crawl_id}/screenshots"

    assert_problem(await harness.call("GET", f"{base}/{short}", key=other_key), 404)
    assert_problem(await harness.call("GET", f"{base}/{'0' * 32}.png", key=key), 404)
    assert_problem(await harness.call("GET", f"{base}/..%2Fcheckpoint.json", key=key), 404)
    assert_problem(await harness.call("GET", f"{base}/{short[:-4]}.gif", key=key), 404)
