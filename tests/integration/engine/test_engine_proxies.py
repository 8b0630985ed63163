"""The engine leaves through the proxy its crawl is bound to, and counts requests, errors and
ban signals per proxy for its heartbeats (proxies and sites served on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from engine_sites import Site, engine_settings, html, text

from core.egress_scoring import DIRECT, proxy_id
from engine_container.fetcher import ProxyBook
from tests.e2e.forward_proxy import ForwardProxy


@pytest.fixture
async def proxies() -> AsyncIterator[tuple[ForwardProxy, ForwardProxy]]:
    first, second = await ForwardProxy().start(), await ForwardProxy().start()
    yield first, second
    await first.stop()
    await second.stop()


async def test_each_session_leaves_through_its_bound_proxy(serve, fetchers, proxies) -> None:
    one, two = proxies
    site: Site = await serve({"/": html("hello")})
    settings = engine_settings(proxy_urls=[one.url, two.url])
    fetcher = fetchers(settings)
    fetcher.bind_proxy("login", proxy_id(two.url))
    fetcher.bind_proxy("plain", DIRECT)

    assert (await fetcher.fetch(site.url("/?s=login"), session_key="login")).status == 200
    assert (await fetcher.fetch(site.url("/?s=default"))).status == 200
    assert (await fetcher.fetch(site.url("/?s=plain"), session_key="plain")).status == 200

    assert two.seen == [site.url("/?s=login")]
    assert one.seen == [site.url("/?s=default")]  # the pool's first is the default
    assert site.hits["/?s=plain"] == 1  # direct: through neither proxy
    taken = fetcher.proxy_stats.take()
    assert set(taken) == {proxy_id(one.url), proxy_id(two.url), DIRECT}
    assert fetcher.proxy_stats.take() == {}  # taken once, then afresh


async def test_an_unknown_proxy_id_keeps_the_default(serve, fetchers, proxies) -> None:
    one, _ = proxies
    site: Site = await serve({"/": html("hello")})
    fetcher = fetchers(engine_settings(proxy_urls=[one.url]))
    fetcher.bind_proxy("s", "px-0000000000")
    assert (await fetcher.fetch(site.url("/"), session_key="s")).status == 200
    assert one.seen == [site.url("/")]


async def test_a_dead_proxy_counts_as_errors_of_that_proxy(serve, fetchers, proxies) -> None:
    one, two = proxies
    site: Site = await serve({"/": html("hello")})
    await one.stop()  # refuses connections from now on
    fetcher = fetchers(engine_settings(proxy_urls=[one.url, two.url], retries=0))
    result = await fetcher.fetch(site.url("/"))
    assert result.status is None
    assert (result.error or "").startswith("proxy:")
    fetcher.bind_proxy("s", proxy_id(two.url))
    assert (await fetcher.fetch(site.url("/"), session_key="s")).status == 200
    taken = fetcher.proxy_stats.take()
    assert taken[proxy_id(one.url)][:2] == (1, 1)  # (requests, errors)
    assert taken[proxy_id(two.url)][:2] == (1, 0)


async def test_403_429_and_captcha_pages_are_ban_signals(serve, fetchers) -> None:
    site: Site = await serve(
        {
            "/denied": text("no", status=403),
            "/slow-down": text("later", status=429),
            "/challenge": html('<div class="g-recaptcha" data-sitekey="x"></div>'),
            "/fine": html("a normal page"),
            "/missing": text("gone", status=404),
        }
    )
    fetcher = fetchers()
    for path in ("/denied", "/slow-down", "/challenge", "/fine", "/missing"):
        await fetcher.fetch(site.url(path))
    requests, errors, bans, _ = fetcher.proxy_stats.take()[DIRECT]
    assert (requests, errors, bans) == (5, 0, 3)


def test_the_book_reports_only_proxies_that_saw_traffic() -> None:
    assert ProxyBook().take() == {}
