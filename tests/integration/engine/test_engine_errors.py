"""What a page record says when a fetch fails before any response: refused, DNS, TLS, timed
out — and when it was robots.txt that could not be fetched, that, not "disallowed"."""

from __future__ import annotations

import asyncio
import socket
import ssl

import trustme
from aiohttp import web
from engine_sites import NoSuchName, Site, StaticResolver, engine_settings, links_page, text

from engine_container.fetcher import FetchError


def _closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then closed: connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_connection_says_connection_refused(fetchers) -> None:
    result = await fetchers().fetch(f"http://127.0.0.1:{_closed_port()}/")
    assert result.status is None
    assert result.error_kind is FetchError.connect
    assert result.error == "connection refused"


async def test_a_name_that_does_not_resolve_says_dns_lookup_failed(fetchers) -> None:
    result = await fetchers(resolver=NoSuchName()).fetch("http://no-such-host.invalid/")
    assert result.error_kind is FetchError.dns
    assert result.error == "DNS lookup failed: no-such-host.invalid"
    assert not result.error_kind.transient, "a name that does not exist is not retried"


async def test_tls_to_a_plain_http_server_says_tls_error(serve, fetchers) -> None:
    site: Site = await serve({"/": text("plain")})
    result = await fetchers().fetch(f"https://127.0.0.1:{site.port}/")
    assert result.error_kind is FetchError.tls
    assert result.error is not None
    assert result.error.startswith("TLS error: "), result.error
    assert len(result.error) < 200


async def test_an_untrusted_certificate_says_so(fetchers) -> None:
    ca = trustme.CA()  # a CA nobody trusts, and a certificate it issued for 127.0.0.1
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    app = web.Application()
    app.router.add_get("/", text("secret"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    try:
        port = runner.addresses[0][1]
        result = await fetchers().fetch(f"https://127.0.0.1:{port}/")
    finally:
        await runner.cleanup()
    assert result.error_kind is FetchError.tls
    assert result.error == "TLS error: certificate: unable to get local issuer certificate"


async def test_a_timeout_says_timed_out(serve, fetchers) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    site: Site = await serve({"/": slow})
    fetcher = fetchers(engine_settings(read_timeout_s=0.2, total_timeout_s=0.5))
    result = await fetcher.fetch(site.url("/"))
    assert result.error == "timed out"


async def test_unreachable_robots_is_reported_as_unreachable_not_disallowed(crawl) -> None:
    outcome = await crawl([f"http://127.0.0.1:{_closed_port()}/"])
    assert outcome.counts.failed == 1
    assert outcome.pages[0]["error"] == "robots.txt unreachable: connection refused"


async def test_robots_on_a_name_that_does_not_resolve(crawl) -> None:
    outcome = await crawl(["http://no-such-host.invalid/"], resolver=NoSuchName())
    error = outcome.pages[0]["error"]
    assert error == "robots.txt unreachable: DNS lookup failed: no-such-host.invalid"


async def test_a_server_error_on_robots_names_the_status(serve, crawl) -> None:
    site: Site = await serve({"/": links_page(), "/robots.txt": text("oops", status=503)})
    outcome = await crawl([site.url("/")])
    assert site.hits["/"] == 0, "RFC 9309: an unreachable robots.txt means do not crawl"
    assert outcome.pages[0]["error"] == "robots.txt unreachable: HTTP 503"


async def test_a_robots_url_the_guard_refuses_reports_the_refusal(serve, crawl) -> None:
    """What a control plane without ``--allow-cidr`` did to a loopback crawl it took over:
    every page came back "disallowed by robots.txt" though no robots.txt was ever read."""
    site: Site = await serve({"/": links_page(), "/robots.txt": text("User-agent: *\nAllow: /")})
    resolver = StaticResolver({"site.test": ["127.0.0.1"]})
    outcome = await crawl(
        [site.url("/", "site.test")], settings=engine_settings(allow_cidrs=[]), resolver=resolver
    )
    assert sum(site.hits.values()) == 0
    error = outcome.pages[0]["error"]
    assert "disallowed by robots.txt" not in error
    assert "127.0.0.1" in error, error


async def test_a_failed_robots_fetch_is_retried_before_giving_up(serve, crawl) -> None:
    """One 503 on robots.txt must not disallow a whole site for a minute."""
    calls = {"n": 0}

    async def flaky(request: web.Request) -> web.StreamResponse:
        calls["n"] += 1
        if calls["n"] == 1:
            return web.Response(status=503, text="busy")
        return web.Response(text="User-agent: *\nAllow: /\n")

    site: Site = await serve({"/": links_page("/a"), "/a": links_page(), "/robots.txt": flaky})
    outcome = await crawl([site.url("/")])
    assert site.hits["/robots.txt"] == 2
    assert outcome.counts.fetched == 2


async def test_a_dead_proxy_is_named_as_the_proxy(serve, fetchers) -> None:
    site: Site = await serve({"/": text("hello")})
    settings = engine_settings(proxy_url=f"http://127.0.0.1:{_closed_port()}")
    result = await fetchers(settings).fetch(site.url("/"))
    assert result.error == "proxy: connection refused"
    assert sum(site.hits.values()) == 0
