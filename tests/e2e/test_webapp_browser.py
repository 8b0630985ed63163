"""The web app and the operator console in a real browser (Playwright + Debian's Chromium),
over the embedded stack with real engine subprocesses crawling a site served on 127.0.0.1.

Saves screenshots of the main screens to ``docs/screens/`` (shown in the README).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from aiohttp import web
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, async_playwright, expect

from core.messages import CrawlSubmitted, encode
from core.ports.message_bus import OutboundMessage, Queue, dead_letter_queue
from functions.local.asgi import create_asgi_app
from tests.e2e.browser import CHROMIUM_ARGS, SCREENS
from tests.e2e.support import OPERATOR_KEY, Harness, serve_site

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

PAGES = 24
EVIL = b"""<html><head><title>Evil page</title></head><body>
<p id="marker">script did not run</p>
<img src="/beacon/img" alt="">
<link rel="stylesheet" href="/beacon/css">
<script>
document.getElementById("marker").textContent = "SCRIPT RAN";
fetch("/beacon/fetch");
</script>
</body></html>"""


@dataclass
class LocalSite:
    url: str = ""
    hits: Counter[str] = field(default_factory=Counter)


def _page(i: int) -> bytes:
    links = {(i + 1) % PAGES, (i * 5 + 2) % PAGES}
    anchors = "".join(f'<li><a href="/p/{j}">Article {j}</a></li>' for j in sorted(links))
    extra = '<li><a href="/evil">Evil</a></li>' if i == 0 else ""
    return (
        f"<html><head><title>Article {i}</title></head><body><h1>Article {i}</h1>"
        f"<p>Some text of article {i}.</p><ul>{anchors}{extra}</ul></body></html>"
    ).encode()


@pytest.fixture
async def site() -> AsyncIterator[LocalSite]:
    state = LocalSite()

    async def handle(request: web.Request) -> web.Response:
        state.hits[request.path] += 1
        if request.path == "/robots.txt":
            return web.Response(text="User-agent: *\nAllow: /\n")
        if request.path == "/":
            return web.Response(body=_page(0), content_type="text/html")
        if request.path == "/evil":
            return web.Response(body=EVIL, content_type="text/html")
        if request.path.startswith("/p/") and request.path[3:].isdigit():
            return web.Response(body=_page(int(request.path[3:]) % PAGES), content_type="text/html")
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def server(harness: Harness) -> AsyncIterator[str]:
    """The stack's API + web app over HTTP on 127.0.0.1, as ``skycrawl up`` serves it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_asgi_app(harness.stack.api), log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    while not uv.started:
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


AXE = Axe()


async def shot(page: Page, name: str, **kw: object) -> None:
    """Save a screenshot of a main screen, after axe-core found no accessibility violation
    on it (labels, contrast, landmarks, ARIA, keyboard traps)."""
    results = await AXE.run(page)
    assert results.violations_count == 0, f"{name}: {results.generate_report()}"
    SCREENS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True, **kw)  # type: ignore[arg-type]


async def sign_in(page: Page, base: str, key: str) -> None:
    await page.goto(f"{base}/signin")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Crawls")).to_be_visible()


async def test_a_tenant_crawls_browses_downloads_cancels_and_rotates_in_the_browser(
    harness: Harness, server: str, site: LocalSite, browser: Browser, tmp_path: Path
) -> None:
    tenant_id, key = await harness.tenant("acme", max_containers=2, parallel=2)
    base = f"{server}/t/{tenant_id}"
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # sign in with the keyboard only: skip link first, then the key field, Enter submits
    await page.goto(f"{base}/signin")
    await shot(page, "signin")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("API key")).to_be_focused()
    await page.keyboard.type(key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Crawls")).to_be_visible()

    # the form: the API's validation errors, next to the field
    await page.get_by_role("link", name="New crawl").first.click()
    await page.get_by_label("Start URLs").fill("ftp://example.com/")
    await page.get_by_role("button", name="Start crawl").click()
    await expect(page.locator("#seeds-error")).to_contain_text("only http and https")
    await expect(page.get_by_label("Start URLs")).to_have_attribute("aria-invalid", "true")
    await shot(page, "new-crawl-errors")

    await page.get_by_label("Start URLs").fill(site.url)
    await page.get_by_label("Max pages").fill("100")
    await page.get_by_label("Max depth").fill("10")
    await page.get_by_role("button", name="Start crawl").click()
    await expect(page.get_by_role("heading", name="Status")).to_be_visible()
    crawl_id = page.url.rsplit("/", 1)[1]

    # progress updates live (polling), then the page lists the crawled pages
    status = page.locator("[data-crawl] [data-role=status]")
    await expect(status).to_have_text("completed", timeout=60_000)
    await expect(page.get_by_role("heading", name="Pages")).to_contain_text(f"of {PAGES + 2}")
    bar = page.locator("[data-crawl] progress")
    assert await bar.get_attribute("value") == await bar.get_attribute("max")
    await shot(page, "crawl")

    # filter the page browser, open the evil page: its preview runs no script, fetches nothing
    await page.get_by_label("URL contains").fill("evil")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("heading", name="Pages")).to_contain_text("(1 of")
    await page.get_by_role("link", name=f"{site.url}evil").click()
    await expect(page.get_by_role("heading", name="Metadata")).to_be_visible()
    preview = page.frame_locator("iframe[sandbox]")
    await expect(preview.locator("#marker")).to_have_text("script did not run")
    await page.wait_for_timeout(500)
    assert site.hits["/evil"] == 1  # fetched once, by the crawler
    assert not [p for p in site.hits if p.startswith("/beacon")], site.hits
    await shot(page, "page")

    # download an export
    await page.goto(f"{base}/crawls/{crawl_id}")
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Pages (JSONL)").click()
    download = await download_info.value
    target = tmp_path / "pages.jsonl"
    await download.save_as(target)
    lines = target.read_text().splitlines()
    assert len(lines) == PAGES + 2
    assert {json.loads(line)["url"] for line in lines} >= {site.url, f"{site.url}evil"}

    # cancel another crawl, from the list
    async with serve_site(pages=400, delay_s=0.3) as slow:
        await page.goto(f"{base}/new")
        await page.get_by_label("Start URLs").fill(slow.url)
        await page.get_by_label("Max pages").fill("400")
        await page.get_by_role("button", name="Start crawl").click()
        slow_id = page.url.rsplit("/", 1)[1]
        await page.get_by_role("link", name="Crawls").first.click()
        row = page.locator(f"tr[data-crawl={slow_id}]")
        await expect(row.locator("[data-role=status]")).to_have_text("dispatched", timeout=30_000)
        await shot(page, "crawls")
        await row.get_by_role("button", name="Cancel").click()
        await expect(row.locator("[data-role=status]")).to_have_text("cancelled")
    cancelled = await harness.json("GET", f"/v1/crawls/{slow_id}", key)
    assert cancelled["status"] == "cancelled"

    # rotate the key: the new one is shown once and works, the old one stops
    await page.get_by_role("link", name="API keys").click()
    await page.get_by_role("button", name="Rotate key").click()
    new_key = await page.locator("#new-key").input_value()
    await shot(page, "keys", mask=[page.locator("#new-key")], mask_color="#c9ced6")
    assert (await harness.call("GET", "/v1/crawls", key)).status == 401
    assert (await harness.call("GET", "/v1/crawls", new_key)).status == 200

    # usage, and the crawls list on a phone
    await page.get_by_role("link", name="Usage & quotas").click()
    await expect(page.get_by_role("heading", name="Usage and quotas")).to_be_visible()
    await shot(page, "usage")
    phone = await browser.new_context(viewport={"width": 390, "height": 844})
    mobile = await phone.new_page()
    await sign_in(mobile, base, new_key)
    await shot(mobile, "phone-crawls")
    await phone.close()
    await context.close()
    # the preview's sandbox refused its script, image and style sheet (and said so) ...
    preview_blocks = [e for e in errors if "/content" in e or "/beacon/" in e]
    assert any("Blocked script execution" in e for e in preview_blocks), errors
    # ... and nothing else failed: no CSP violation of our own pages, no script error
    others = [e for e in errors if e not in preview_blocks]
    assert others == [
        "Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"
    ], others


async def test_the_operator_sees_the_fleet_and_requeues_a_dead_letter(
    harness: Harness, server: str, site: LocalSite, browser: Browser
) -> None:
    tenant_id, key = await harness.tenant("acme", max_containers=2, parallel=2)
    created = await harness.json("POST", "/v1/crawls", key, {"seeds": [site.url]})

    async def done() -> bool:
        status = await harness.json("GET", f"/v1/crawls/{created['id']}", key)
        return bool(status["status"] == "completed")

    await harness.wait_for(done, 60, "the crawl to complete")
    bus, inbox = harness.stack.ports.bus, harness.stack.settings.inbox_queue
    message = encode(CrawlSubmitted(tenant_id=tenant_id, crawl_id=created["id"]))
    reason = "delivered 5 times (max_deliveries=5)"
    dead = OutboundMessage(message.body, {**message.attributes, "dead_letter_reason": reason})
    await bus.send(queue=dead_letter_queue(inbox), message=dead)

    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    await page.goto(f"{server}/console/")
    await page.get_by_label("Operator key").fill(OPERATOR_KEY)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    await expect(page.get_by_text("cold starts in the last hour")).to_be_visible()
    await shot(page, "console-fleet")

    await page.get_by_role("link", name="Tenants").click()
    await expect(page.get_by_text(f"/t/{tenant_id}/")).to_be_visible()
    await shot(page, "console-tenants")

    await page.get_by_role("link", name="Dead letters").click()
    await expect(page.get_by_text(reason)).to_be_visible()
    await shot(page, "console-dead-letters")
    await page.get_by_role("button", name="Requeue").click()
    await expect(page.get_by_role("status")).to_contain_text("Requeued")

    async def handled() -> bool:  # the conductor took it back and acknowledged it
        dlq = await bus.receive(source=Queue(dead_letter_queue(inbox)), visibility_timeout_s=1)
        for lease in dlq:
            await bus.release(lease=lease)
        pending = await bus.receive(source=Queue(inbox), visibility_timeout_s=1)
        for lease in pending:
            await bus.release(lease=lease)
        return not dlq and not pending

    await harness.wait_for(handled, 15, "the requeued message to be handled")
    await context.close()
    # a tenant's session cannot open the console: it is sent to the operator sign-in
    tenant_context = await browser.new_context()
    tenant_page = await tenant_context.new_page()
    await sign_in(tenant_page, f"{server}/t/{tenant_id}", key)
    await tenant_page.goto(f"{server}/console/tenants")
    await expect(tenant_page.get_by_role("heading", name="Operator console")).to_be_visible()
    await expect(tenant_page.get_by_label("Operator key")).to_be_visible()
    await tenant_context.close()
