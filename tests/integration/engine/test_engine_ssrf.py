"""The fetcher never connects to a refused address: literal, resolved, or reached by redirect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from engine_sites import Site, StaticResolver, engine_settings, text

from engine_container.fetcher import Fetcher, FetchError


class Listener:
    """A TCP listener that only counts the connections it accepts."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0


@pytest.fixture
async def trap() -> AsyncIterator[Listener]:
    """A listener on 127.0.0.2, an address the tests never allow."""
    listener = Listener()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener.accepted += 1
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.2", 0)
    listener.port = server.sockets[0].getsockname()[1]
    yield listener
    server.close()
    await server.wait_closed()


def redirect_to(location: str) -> Callable[[web.Request], object]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": location})

    return handler


ONLY_LOOPBACK_ONE = engine_settings(allow_cidrs=["127.0.0.1/32"])


async def test_nothing_is_allowed_by_default(serve, fetchers) -> None:
    site: Site = await serve({"/": text("secret")})
    fetcher: Fetcher = fetchers(engine_settings(allow_cidrs=[]))
    for url in (site.url("/"), f"http://2130706433:{site.port}/", f"http://0x7f.1:{site.port}/"):
        result = await fetcher.fetch(url)
        assert result.error_kind is FetchError.unsafe, url
        assert result.status is None
    assert sum(site.hits.values()) == 0


async def test_localhost_resolves_to_a_refused_address(serve, fetchers) -> None:
    site: Site = await serve({"/": text("secret")})
    result = await fetchers(engine_settings(allow_cidrs=[])).fetch(site.url("/", "localhost"))
    assert result.error_kind is FetchError.unsafe
    assert "loopback" in (result.error or "")
    assert sum(site.hits.values()) == 0


@pytest.mark.parametrize(
    "addresses",
    [["127.0.0.2"], ["127.0.0.1", "127.0.0.2"], ["169.254.169.254"], ["::1"], ["10.0.0.1"]],
)
async def test_names_resolving_to_refused_addresses(serve, fetchers, trap, addresses) -> None:
    site: Site = await serve({"/": text("ok")})
    resolver = StaticResolver({"evil.test": addresses})
    result = await fetchers(ONLY_LOOPBACK_ONE, resolver).fetch(f"http://evil.test:{trap.port}/")
    assert result.error_kind is FetchError.unsafe
    assert "refused to connect" in (result.error or "")
    assert trap.accepted == 0
    assert sum(site.hits.values()) == 0


async def test_an_allowed_name_is_fetched(serve, fetchers) -> None:
    site: Site = await serve({"/": text("hello")})
    resolver = StaticResolver({"good.test": ["127.0.0.1"]})
    result = await fetchers(ONLY_LOOPBACK_ONE, resolver).fetch(
        site.url("/", "good.test"), any_type=True
    )
    assert (result.status, result.body, result.error) == (200, b"hello", None)


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/",
        "http://0x7f.2:{port}/",
        "http://2130706434:{port}/",
        "http://evil.test:{port}/",
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.2]:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://user@127.0.0.2:{port}/",
        "file:///etc/passwd",
        "gopher://127.0.0.2:{port}/",
    ],
)
async def test_redirects_to_refused_targets_open_no_connection(
    serve, fetchers, trap, target
) -> None:
    location = target.format(port=trap.port)
    site: Site = await serve({"/": redirect_to(location)})
    resolver = StaticResolver({"evil.test": ["127.0.0.2"]})
    result = await fetchers(ONLY_LOOPBACK_ONE, resolver).fetch(site.url("/"))
    assert result.error_kind is FetchError.unsafe, result
    assert result.redirects == 1
    assert result.final_url.startswith(location.split(":")[0])
    assert trap.accepted == 0
    assert site.hits["/"] == 1


async def test_a_redirect_within_the_policy_is_followed(serve, fetchers) -> None:
    site: Site = await serve({"/": redirect_to("/next"), "/next": text("arrived")})
    result = await fetchers(ONLY_LOOPBACK_ONE).fetch(site.url("/"), any_type=True)
    assert (result.status, result.body, result.redirects) == (200, b"arrived", 1)
    assert result.final_url == site.url("/next")


async def test_with_a_proxy_the_target_is_checked_before_anything_is_sent(
    serve, fetchers, trap
) -> None:
    async def proxy(request: web.Request) -> web.Response:
        return web.Response(text=f"proxied {request.url}")

    proxy_site: Site = await serve({"*": proxy})
    settings = engine_settings(allow_cidrs=["127.0.0.1/32"], proxy_url=proxy_site.base)
    resolver = StaticResolver({"evil.test": ["127.0.0.2"], "good.test": ["127.0.0.1"]})
    fetcher = fetchers(settings, resolver)

    refused = await fetcher.fetch(f"http://evil.test:{trap.port}/")
    assert refused.error_kind is FetchError.unsafe
    assert sum(proxy_site.hits.values()) == 0

    allowed = await fetcher.fetch("http://good.test:81/page", any_type=True)
    assert allowed.status == 200
    assert allowed.body == b"proxied http://good.test:81/page"
    assert trap.accepted == 0
