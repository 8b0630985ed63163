"""Rendered pages leave through the egress's proxy (issue 15): the document (fetcher) and every
request its scripts make (Chromium, through the engine's filtering proxy) reach the site only
through a recording forward proxy on 127.0.0.1 -- plain HTTP in absolute form, HTTPS and
WebSockets as ``CONNECT`` tunnels, each with the proxy URL's credentials; a session bound to another proxy
of the pool leaves through that one; and the SSRF guard refuses before the proxy is asked.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trustme
from aiohttp import web
from engine_sites import Site, engine_settings

from core.egress_scoring import proxy_id
from engine_container.browser import BrowserPool
from engine_container.fetcher import ProxyBook
from engine_container.settings import EngineSettings
from tests.e2e.browser import ensure_chromium
from tests.e2e.forward_proxy import ForwardProxy

pytestmark = pytest.mark.browser

CREDENTIALS = "crawler:s3cret"
BASIC = "Basic " + base64.b64encode(CREDENTIALS.encode()).decode()
#: the test's HTTPS server has a certificate of a CA Chromium does not know
TLS_ARGS = ["--ignore-certificate-errors"]


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., BrowserPool]]:
    chromium = ensure_chromium()
    made: list[BrowserPool] = []

    def make(settings: EngineSettings, **kwargs: Any) -> BrowserPool:
        made.append(BrowserPool(settings.model_copy(update={"chromium_path": chromium}), **kwargs))
        return made[-1]

    yield make
    for pool in made:
        await pool.close()


@pytest.fixture
async def tls_site() -> AsyncIterator[Site]:
    """An HTTPS server on 127.0.0.1 answering ``/data`` with JSON any origin may read."""
    site = Site(host="127.0.0.1", port=0)

    async def data(request: web.Request) -> web.Response:
        site.hits[request.path] += 1
        return web.json_response(
            {"text": "Figures fetched over TLS."}, headers={"Access-Control-Allow-Origin": "*"}
        )

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    app = web.Application()
    app.router.add_get("/data", data)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    site.port = runner.addresses[0][1]
    yield site
    await runner.cleanup()


@pytest.fixture
async def proxies() -> AsyncIterator[tuple[ForwardProxy, ForwardProxy]]:
    one = await ForwardProxy(credentials=CREDENTIALS).start()
    two = await ForwardProxy(credentials=CREDENTIALS).start()
    yield one, two
    await one.stop()
    await two.stop()


def app_js(tls_port: int) -> str:
    return f"""
    Promise.all([
      fetch("/api/home").then(r => r.json()),
      fetch("https://127.0.0.1:{tls_port}/data").then(r => r.json()),
    ]).then(([home, tls]) => {{
      const app = document.getElementById("app");
      app.innerHTML = "<h1>" + home.title + "</h1><p>" + tls.text + "</p>";
      const done = document.createElement("div"); done.id = "done"; app.appendChild(done);
    }});
    """


async def serve_app(serve: Any, tls: Site) -> Site:
    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text='<html><head><script src="/app.js" defer></script></head>'
            '<body><div id="app"></div></body></html>',
            content_type="text/html",
        )

    async def bundle(request: web.Request) -> web.Response:
        return web.Response(text=app_js(tls.port), content_type="application/javascript")

    async def home(request: web.Request) -> web.Response:
        return web.json_response({"title": "Behind the proxy"})

    site: Site = await serve({"/": page, "/app.js": bundle, "/api/home": home})
    return site


async def test_a_rendered_page_and_its_subresources_leave_through_the_egress_proxy(
    serve, crawl, pools, proxies, tls_site
) -> None:
    proxy, _ = proxies
    site = await serve_app(serve, tls_site)
    settings = engine_settings(proxy_url=proxy.url)
    book = ProxyBook()  # the fetcher's, in a container: the heartbeats' per-proxy figures
    pool = pools(settings, launch_args=TLS_ARGS, proxy_stats=book)

    outcome = await crawl(
        [site.url("/")],
        settings=settings,
        browser=pool,
        render="always",
        wait_for="#done",
        formats=["markdown"],
        respect_robots=False,
    )

    page = outcome.by_url()[site.url("/")]
    assert page["error"] is None, page["error"]
    assert page["rendered"] is True
    assert "Behind the proxy" in page["content"]["markdown"]
    assert "Figures fetched over TLS." in page["content"]["markdown"]
    # the document (fetcher), the bundle and the XHR (browser, plain HTTP in absolute form),
    # and the HTTPS fetch as a tunnel: all at the proxy, all with its credentials
    assert proxy.seen.count(site.url("/")) == 1
    assert site.url("/app.js") in proxy.seen
    assert site.url("/api/home") in proxy.seen
    assert f"CONNECT 127.0.0.1:{tls_site.port}" in proxy.seen
    assert tls_site.hits["/data"] == 1
    assert set(proxy.authorizations) == {BASIC}
    # and nothing reached the site but through it
    hit = {site.url(path) for path, count in site.hits.items() if count}
    assert hit <= set(proxy.seen)
    # every browser request (all but the fetched document) counted for that proxy, none failed
    requests, errors, bans, _ = book.take()[proxy_id(proxy.url)]
    assert (requests, errors, bans) == (len(proxy.seen) - 1, 0, 0)


async def test_a_page_websocket_is_tunnelled_through_the_egress_proxy(
    serve, crawl, pools, proxies
) -> None:
    proxy, _ = proxies

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("pushed over the socket")
        await ws.close()
        return ws

    live = await serve({"/live": socket})
    listen = f"""
    const w = new WebSocket("ws://127.0.0.1:{live.port}/live");
    w.onmessage = (event) => {{
      const done = document.createElement("div"); done.id = "done";
      done.textContent = event.data; document.body.appendChild(done);
    }};
    """

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=f"<html><body><script>{listen}</script></body></html>", content_type="text/html"
        )

    site = await serve({"/": page})
    settings = engine_settings(proxy_url=proxy.url)
    pool = pools(settings)

    outcome = await crawl(
        [site.url("/")],
        settings=settings,
        browser=pool,
        render="always",
        wait_for="#done",
        formats=["text"],
        respect_robots=False,
    )

    result = outcome.by_url()[site.url("/")]
    assert result["error"] is None, result["error"]
    assert "pushed over the socket" in result["content"]["text"]
    assert f"CONNECT 127.0.0.1:{live.port}" in proxy.seen
    assert live.hits["/live"] == 1


async def test_a_session_bound_to_another_proxy_renders_through_that_one(
    serve, crawl, pools, proxies, tls_site
) -> None:
    one, two = proxies
    site = await serve_app(serve, tls_site)
    settings = engine_settings(proxy_urls=[one.url, two.url])
    pool = pools(settings, launch_args=TLS_ARGS)

    outcome = await crawl(
        [site.url("/")],
        settings=settings,
        browser=pool,
        proxy=proxy_id(two.url),
        session="shop-7",
        render="always",
        wait_for="#done",
        respect_robots=False,
    )

    assert outcome.by_url()[site.url("/")]["rendered"] is True
    assert one.asked == []  # the pool's default was never asked
    assert {site.url("/"), site.url("/api/home"), f"CONNECT 127.0.0.1:{tls_site.port}"} <= set(
        two.seen
    )


async def test_a_proxy_that_refuses_the_credentials_fails_the_requests_not_the_crawl(
    serve, crawl, pools, tls_site
) -> None:
    strict = await ForwardProxy(credentials=CREDENTIALS).start()
    tries = f"""
    const outcome = (p) => p.then((r) => "status " + r.status, () => "failed");
    Promise.all([
      outcome(fetch("/api/home")),
      outcome(fetch("https://127.0.0.1:{tls_site.port}/data")),
    ]).then((results) => {{
      const done = document.createElement("div"); done.id = "done";
      done.textContent = results.join(", "); document.body.appendChild(done);
    }});
    """

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=f"<html><body><script>{tries}</script></body></html>", content_type="text/html"
        )

    try:
        site = await serve({"/": page, "/api/home": web_text("{}")})
        wrong = strict.url.replace("s3cret", "wrong")
        # the document is fetched directly; the browser's requests go to the strict proxy
        book = ProxyBook()
        pool = pools(engine_settings(proxy_url=wrong), launch_args=TLS_ARGS, proxy_stats=book)
        outcome = await crawl(
            [site.url("/")],
            browser=pool,
            render="always",
            wait_for="#done",
            formats=["text"],
            respect_robots=False,
        )
    finally:
        await strict.stop()

    result = outcome.by_url()[site.url("/")]
    assert result["error"] is None, result["error"]
    assert result["rendered"] is True
    # plain HTTP: the proxy's 407 is a 502 to the page (never a challenge Chromium waits on);
    # the tunnel the proxy refused is a network error
    assert result["content"]["text"].strip() == "status 502, failed"
    assert site.hits["/api/home"] == 0
    assert tls_site.hits["/data"] == 0
    assert strict.seen == []  # asked, answered 407, forwarded nothing
    assert {site.url("/api/home"), f"127.0.0.1:{tls_site.port}"} <= set(strict.asked)
    # both count as network errors of that proxy (its health score sees them)
    assert book.take()[proxy_id(wrong)][:2] == (2, 2)


async def test_the_guard_refuses_before_the_proxy_is_asked(serve, crawl, pools, proxies) -> None:
    # Only loopback targets here: were the guard broken, the proxy would forward what it is
    # asked, so a metadata or private address would leave the machine. Those refusals are
    # asserted on the guard's decision (tests/unit/engine/test_engine_browser_guard.py).
    proxy, _ = proxies
    spy = await serve({"*": web_text("secret")}, host="127.0.0.2")
    attack = f"""
    Promise.allSettled([
      fetch("http://127.0.0.2:{spy.port}/fetch"),
      fetch("https://127.0.0.2:{spy.port}/tunnel"),
    ]).then(() => {{
      const done = document.createElement("div"); done.id = "done";
      done.textContent = "attacks finished"; document.body.appendChild(done);
    }});
    """

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=f"<html><body><script>{attack}</script></body></html>", content_type="text/html"
        )

    site = await serve({"/": page})
    settings = engine_settings(proxy_url=proxy.url, allow_cidrs=["127.0.0.1/32"])
    pool = pools(
        settings,
        launch_args=[
            "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,"
            "PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults",
        ],
    )

    outcome = await crawl(
        [site.url("/")],
        settings=settings,
        browser=pool,
        render="always",
        wait_for="#done",
        formats=["markdown"],
        respect_robots=False,
    )

    result = outcome.by_url()[site.url("/")]
    assert result["error"] is None, result["error"]
    assert "attacks finished" in result["content"]["markdown"]
    assert dict(spy.hits) == {}
    assert proxy.asked == [site.url("/")]  # only the document; no refused target reached it
    refused = {url for url, reason in pool.guard.decisions if reason is not None}
    assert f"http://127.0.0.2:{spy.port}/fetch" in refused


def web_text(body: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=body)

    return handler
