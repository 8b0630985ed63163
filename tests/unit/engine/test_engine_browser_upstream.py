"""The egress proxy a browser's filtering proxy forwards through: host, port, TLS and the
``Proxy-Authorization`` it sends, read from the proxy URL (percent-encoded user info too)."""

from __future__ import annotations

import base64

import pytest

from engine_container.browser_proxy import Upstream


def basic(user_pass: str) -> str:
    return "Basic " + base64.b64encode(user_pass.encode()).decode()


def test_credentials_come_from_the_url_decoded() -> None:
    up = Upstream.of("http://shop%40eu:p%3As%2Fs@proxy.internal:3128")
    assert (up.host, up.port, up.tls) == ("proxy.internal", 3128, False)
    assert up.authorization == basic("shop@eu:p:s/s")
    assert up.header() == [f"Proxy-Authorization: {basic('shop@eu:p:s/s')}".encode()]


def test_default_ports_and_no_credentials_no_header() -> None:
    assert Upstream.of("https://proxy.internal").port == 443
    assert Upstream.of("https://proxy.internal").tls is True
    plain = Upstream.of("http://127.0.0.1")
    assert (plain.port, plain.authorization, plain.header()) == (80, None, [])


@pytest.mark.parametrize("url", ["socks5://127.0.0.1:1080", "http://", "127.0.0.1:3128"])
def test_anything_but_an_http_proxy_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        Upstream.of(url)
