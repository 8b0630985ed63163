"""Rendering in Chromium (issue 15): JavaScript-only pages crawled with ``render: always`` and
``auto``, the time budget, sessions across recycled contexts, and the SSRF guard inside the
browser (scripts of a page on 127.0.0.1 try 127.0.0.2, where a server listens and records,
while only 127.0.0.1/32 is allowed).

Everything stays on this machine: the pages name only 127.0.0.x and ``evil.test``, which
Chromium maps to 127.0.0.2 itself (``--host-resolver-rules``) and the guard resolves with a
static resolver, so no DNS query leaves. One Chromium per test, a handful of pages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from engine_sites import Site, StaticResolver, engine_settings, html
from warcio.archiveiterator import ArchiveIterator

from engine_container.browser import BrowserPool

pytestmark = pytest.mark.browser


def script(source: str) -> web.Response:
    return web.Response(text=source, content_type="application/javascript")


def shell(body: str = "") -> Callable[[web.Request], Any]:
    """An app shell: no text, a bundle (``/app.js``) and an image the crawl should block."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            text=f'<html><head><title>loading</title><script src="/app.js" defer></script>'
            f'</head><body><div id="app"></div><img src="/logo.png">{body}</body></html>',
            content_type="text/html",
        )

    return handler


#: A client-side router: the path picks the view, whose content comes from fetch('/api/...').
ROUTER_JS = """
const view = location.pathname === "/" ? "home" : location.pathname.slice(1);
fetch("/api/" + view).then(r => r.json()).then(data => {
  document.title = data.title;
  const app = document.getElementById("app");
  app.innerHTML = "<h1>" + data.title + "</h1><p>" + data.text + "</p>"
    + '<nav><a href="/about">About</a> <a href="/pricing">Pricing</a></nav>';
  const done = document.createElement("div"); done.id = "done"; app.appendChild(done);
});
"""
VIEWS = {
    "home": {"title": "Welcome home", "text": "Rendered by JavaScript after a fetch."},
    "about": {"title": "About us", "text": "Client-side routed about page."},
    "pricing": {"title": "Pricing", "text": "Seven dollars a month."},
    "app": {"title": "The app", "text": "Rendered in the browser only."},
}


def app_site(page: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
    """Every path: ``/api/<view>`` answers that view's JSON, any other path the shell."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            view = VIEWS.get(request.path.removeprefix("/api/"))
            return web.json_response(view) if view else web.Response(status=404)
        return await page(request)

    return handler


async def router_js(request: web.Request) -> web.Response:
    return script(ROUTER_JS)


def warc_records(out: Path) -> list[tuple[str, str, bytes]]:
    found = []
    with (out / "crawl.warc.gz").open("rb") as f:
        for record in ArchiveIterator(f, check_digests=True):
            body = record.content_stream().read()
            uri = record.rec_headers.get_header("WARC-Target-URI") or ""
            found.append((record.rec_type, uri, body))
    return found


async def test_render_always_crawls_a_javascript_only_site(serve, crawl, pools) -> None:
    agents: list[tuple[str, str | None]] = []

    async def bundle(request: web.Request) -> web.Response:
        agents.append((request.headers.get("User-Agent", ""), request.headers.get("Authorization")))
        return await router_js(request)

    site: Site = await serve({"/app.js": bundle, "*": app_site(shell())})
    site_routes = {"/api/home", "/api/about", "/api/pricing"}
    pool = pools(engine_settings())

    outcome = await crawl(
        [site.url("/")],
        browser=pool,
        render="always",
        wait_for="#done",
        formats=["markdown", "links", "metadata"],
        headers={"user-agent": "shopbot/2.0", "authorization": "Bearer only-for-the-document"},
    )

    pages = outcome.by_url()
    assert set(pages) == {site.url("/"), site.url("/about"), site.url("/pricing")}
    for path, view in (("/", "home"), ("/about", "about"), ("/pricing", "pricing")):
        page = pages[site.url(path)]
        assert page["error"] is None
        assert page["rendered"] is True
        assert page["title"] == VIEWS[view]["title"]
        assert VIEWS[view]["text"] in page["content"]["markdown"]
    assert site.hits.keys() >= site_routes  # the views' data came from the browser's fetch()
    assert site.hits["/logo.png"] == 0  # images are blocked by default
    # the crawl's User-Agent on the page's own requests too, its credentials never
    assert agents == [("shopbot/2.0", None)] * 3
    # the WARC keeps both: the shell as fetched, the DOM as rendered
    records = warc_records(outcome.out)
    home = [(kind, body) for kind, uri, body in records if uri == site.url("/")]
    kinds = [kind for kind, _ in home]
    assert kinds == ["request", "response", "conversion"]
    assert b"Welcome home" not in home[1][1]
    assert b"<h1>Welcome home</h1>" in home[2][1]


async def test_render_auto_renders_only_app_shells(serve, crawl, pools) -> None:
    article = " ".join(["Plain server-rendered prose about the weather."] * 10)
    site = await serve(
        {
            "/": html(f'<p>{article}</p><a href="/app">app</a><script>var x = 1;</script>'),
            "/app.js": router_js,
            "*": app_site(shell()),
        }
    )
    pool = pools(engine_settings())

    outcome = await crawl([site.url("/")], browser=pool, render="auto", wait_for="#done")

    pages = outcome.by_url()
    assert pages[site.url("/")]["rendered"] is False
    assert article[:40] in pages[site.url("/")]["content"]["markdown"]
    assert pages[site.url("/app")]["title"] == "The app"
    assert "Rendered in the browser only." in pages[site.url("/app")]["content"]["markdown"]
    # the shell's client-side links were followed, and each of those shells rendered too
    rendered = {url for url, page in pages.items() if page["rendered"]}
    assert rendered == {site.url("/app"), site.url("/about"), site.url("/pricing")}
    assert site.hits["/app.js"] == 3  # one bundle load per shell, none for the prose page


def png_size(image: bytes) -> tuple[int, int]:
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(image[16:20], "big"), int.from_bytes(image[20:24], "big")


async def test_rendered_pages_get_a_full_page_screenshot_stored_beside_the_pages(
    serve, crawl, pools
) -> None:
    async def tall_js(request: web.Request) -> web.Response:
        return script(
            'document.getElementById("app").innerHTML = '
            "'<h1 style=\"height: 3000px\">A tall page</h1>';"
        )

    site = await serve(
        {"/": html('<p>plain</p><a href="/app">app</a>'), "/app": shell(), "/app.js": tall_js}
    )
    pool = pools(engine_settings())

    outcome = await crawl(
        [site.url("/")],
        browser=pool,
        render="auto",
        screenshot={"full_page": True, "format": "png"},
    )

    pages = outcome.by_url()
    assert pages[site.url("/")]["screenshot"] is None  # not rendered: nothing to shoot
    name = pages[site.url("/app")]["screenshot"]
    assert name.startswith("screenshots/")
    assert name.endswith(".png")
    width, height = png_size((outcome.out / name).read_bytes())
    assert width == 1280
    assert height >= 3000  # the whole page, not the 720-pixel viewport


async def test_a_page_that_never_settles_hits_the_time_budget(serve, crawl, pools) -> None:
    async def poll_js(request: web.Request) -> web.Response:
        return script('setInterval(() => fetch("/poll"), 100); document.title = "busy";')

    async def poll(request: web.Request) -> web.Response:
        return web.Response(text="again")

    site = await serve({"/": shell(), "/app.js": poll_js, "/poll": poll})
    pool = pools(engine_settings())

    started = time.monotonic()
    outcome = await crawl(
        [site.url("/")], browser=pool, render="always", wait_for="networkidle", page_timeout_s=2
    )
    took = time.monotonic() - started

    page = outcome.by_url()[site.url("/")]
    assert page["error"] == "render: networkidle not reached within 2.0 s"
    assert page["rendered"] is False
    assert outcome.counts.failed == 1
    assert site.hits["/poll"] >= 3  # it really kept polling
    assert took < 8  # the budget, not the page, ended it


async def test_a_session_keeps_cookies_and_storage_across_recycled_contexts(
    serve, crawl, pools
) -> None:
    counter_js = """
    const n = Number(localStorage.getItem("visits") || 0) + 1;
    localStorage.setItem("visits", String(n));
    document.cookie = "seen=" + n + "; path=/";
    document.getElementById("app").innerHTML = "<p>visit " + n + "</p>"
      + '<a href="/' + (n + 1) + '">next</a>';
    """

    async def counter(request: web.Request) -> web.Response:
        return script(counter_js)

    site = await serve({"/app.js": counter, "*": shell()})
    pool = pools(engine_settings(browser_pages_per_context=1))

    outcome = await crawl(
        [site.url("/")],
        settings=engine_settings(concurrency=1),
        browser=pool,
        render="always",
        session="shop-1",
        max_depth=3,
        formats=["text"],
    )

    texts = sorted(p["content"]["text"] for p in outcome.pages)
    assert [t.split()[:2] for t in texts] == [["visit", str(n)] for n in (1, 2, 3, 4)]
    assert pool.recycled >= 3  # a new context for every page, and the session lived on


async def test_an_engine_without_chromium_says_so_on_the_page(serve, crawl, tmp_path) -> None:
    site = await serve({"/": shell()})
    settings = engine_settings(chromium_path=tmp_path / "chromium")
    async with BrowserPool(settings) as pool:
        outcome = await crawl([site.url("/")], browser=pool, render="always")

    page = outcome.by_url()[site.url("/")]
    assert (
        page["error"] == f"render: this engine has no browser ({tmp_path / 'chromium'} is missing)"
    )
    assert page["rendered"] is False


# --------------------------------------------------------------------- the SSRF guard


ATTACK_JS = """
const spy = "http://127.0.0.2:SPY";
const tries = [
  fetch(spy + "/fetch"),
  fetch("/redirect"),
  fetch("http://evil.test:SPY/dns"),
  new Promise((ok) => { const x = new XMLHttpRequest(); x.onloadend = ok;
                        x.open("GET", spy + "/xhr"); x.send(); }),
  new Promise((ok) => { const s = document.createElement("script"); s.src = spy + "/script.js";
                        s.onload = s.onerror = ok; document.head.appendChild(s); }),
  new Promise((ok) => { const f = document.createElement("iframe"); f.src = spy + "/frame";
                        f.onload = ok; document.body.appendChild(f); setTimeout(ok, 1500); }),
  new Promise((ok) => { const w = new WebSocket("ws://127.0.0.2:SPY/socket");
                        w.onerror = w.onclose = ok; setTimeout(ok, 1500); }),
];
window.open(spy + "/popup");
alert("a dialog must not stop the render");
Promise.allSettled(tries).then(() => {
  const done = document.createElement("div"); done.id = "done";
  done.textContent = "attacks finished"; document.body.appendChild(done);
});
"""


async def test_scripts_cannot_reach_addresses_outside_the_allowed_range(
    serve, crawl, pools
) -> None:
    spy = await serve({"*": html("secret")}, host="127.0.0.2")

    async def attack(request: web.Request) -> web.Response:
        return script(ATTACK_JS.replace("SPY", str(spy.port)))

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(spy.url("/redirected"))

    site = await serve({"/": shell(), "/app.js": attack, "/redirect": redirect})
    settings = engine_settings(allow_cidrs=["127.0.0.1/32"])
    pool = pools(
        settings,
        resolver=StaticResolver({"evil.test": ["127.0.0.2"]}),
        launch_args=[
            "--host-resolver-rules=MAP evil.test 127.0.0.2",
            # Chromium's own local-network checks off: only the engine's guard stands
            "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,"
            "PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults",
        ],
    )

    outcome = await crawl(
        [site.url("/")], settings=settings, browser=pool, render="always", wait_for="#done"
    )

    page = outcome.by_url()[site.url("/")]
    assert page["error"] is None, page["error"]
    assert page["rendered"] is True
    assert "attacks finished" in page["content"]["markdown"]
    assert dict(spy.hits) == {}  # not one request reached 127.0.0.2
    assert site.hits["/redirect"] == 1  # the allowed hop went out; the next one did not
    refused = {url for url, reason in pool.guard.decisions if reason is not None}
    port = spy.port
    assert refused >= {
        f"http://127.0.0.2:{port}/fetch",
        f"http://127.0.0.2:{port}/redirected",
        f"http://evil.test:{port}/dns",
        f"http://127.0.0.2:{port}/xhr",
        f"http://127.0.0.2:{port}/script.js",
        f"http://127.0.0.2:{port}/frame",
        f"ws://127.0.0.2:{port}/socket",
    }


#: A page that asks for a new image every 20 ms for as long as it lives, and says
#: it is done after 300 ms: at any moment some of its image requests wait in the route handler.
SPAMMING_JS = """
let n = 0;
setInterval(() => { const img = new Image(); img.src = "/spam-" + (n++) + ".png"; }, 20);
setTimeout(() => {
  const done = document.createElement("div"); done.id = "done";
  document.getElementById("app").appendChild(done);
  document.getElementById("app").insertAdjacentText("beforeend", "spammed all along");
}, 300);
"""


async def test_no_blocked_request_leaves_while_a_rendered_page_is_closed(
    serve, crawl, pools
) -> None:
    """Closing a page (or its context) releases the requests paused in its route handler to
    the network: blocked images reached the server in the browser benchmark. Each of these
    pages keeps asking for images until it is closed; none may arrive, before or after."""
    spam: list[str] = []

    async def image(request: web.Request) -> web.Response:
        spam.append(request.path)
        return web.Response(body=b"\x89PNG\r\n\x1a\n", content_type="image/png")

    async def page(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/spam-") or request.path == "/logo.png":
            return await image(request)
        if request.path == "/app.js":
            return script(SPAMMING_JS)
        links = "".join(f'<a href="/p{i}">p{i}</a>' for i in range(8))
        return await shell(links)(request)

    site = await serve({"*": page})
    pool = pools(engine_settings(browser_pages_per_context=2))  # contexts close often too

    outcome = await crawl(
        [site.url("/")], browser=pool, render="always", wait_for="#done", max_pages=9
    )
    await pool.close()

    assert len(outcome.by_url()) == 9
    assert [p["error"] for p in outcome.by_url().values()] == [None] * 9
    assert all(p["rendered"] for p in outcome.by_url().values())
    assert spam == []
