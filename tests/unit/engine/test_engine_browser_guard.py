"""The browser's SSRF decision (``RequestGuard``) for the addresses no test may send a packet
to: cloud metadata, private, link-local, and names resolving to them. Asserted on the
decision alone (no browser, no network: names resolve through a static resolver). Also the
``render: auto`` test for an app shell."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from core.netguard import AddressPolicy
from engine_container.browser import RequestGuard, looks_like_app_shell


class Names(AbstractResolver):
    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.names[host]
        ]

    async def close(self) -> None:
        pass


NAMES = {
    "site.test": ["127.0.0.1"],
    "intranet.test": ["10.1.2.3"],
    "split.test": ["127.0.0.1", "192.168.0.7"],  # one bad answer is enough to refuse
    "cloud.test": ["169.254.169.254"],
}


@pytest.fixture
async def guard() -> RequestGuard:
    return RequestGuard(AddressPolicy.from_cidrs(["127.0.0.1/32"]), Names(NAMES))


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata endpoint 169.254.169.254"),
        ("http://[fd00:ec2::254]/", "cloud metadata endpoint fd00:ec2::254"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata endpoint"),
        ("http://cloud.test/", "cloud metadata endpoint 169.254.169.254"),
        ("http://10.0.0.1/admin", "private address 10.0.0.1"),
        ("https://192.168.1.1:8443/", "private address 192.168.1.1"),
        ("http://0x7f.2/", "loopback address 127.0.0.2"),
        ("http://[::ffff:10.0.0.1]/", "private address 10.0.0.1 embedded in ::ffff:a00:1"),
        ("http://intranet.test/", "private address 10.1.2.3"),
        ("http://split.test/", "private address 192.168.0.7"),
        ("ws://10.0.0.1/socket", "private address 10.0.0.1"),
        ("wss://169.254.170.2/", "cloud metadata endpoint 169.254.170.2"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("http://nowhere.test/", "DNS lookup failed"),
    ],
)
async def test_refused_before_any_connection(guard: RequestGuard, url: str, why: str) -> None:
    reason, addresses = await guard.admit(url)
    assert reason is not None
    assert why in reason
    assert addresses == ()
    assert guard.decisions[-1] == (url, reason)


async def test_allowed_requests_get_the_checked_addresses(guard: RequestGuard) -> None:
    assert await guard.admit("http://127.0.0.1:8080/app.js") == (None, ("127.0.0.1",))
    assert await guard.admit("http://site.test/api") == (None, ("127.0.0.1",))
    assert await guard.admit("ws://site.test/live") == (None, ("127.0.0.1",))
    assert await guard.admit("data:text/plain,hi") == (None, ())


def test_auto_renders_app_shells_only() -> None:
    shell = b'<html><head><title>App</title><script src="/main.js"></script></head><body><div id="root"></div></body></html>'
    article = b"<html><body><p>" + b"Plenty of server-rendered words here. " * 20 + b"</p>"
    article += b"<script>track()</script></body></html>"
    no_script = b"<html><body><p>Short.</p></body></html>"
    inline_text = b"<html><body><script>" + b"var a = 'x';" * 100 + b"</script></body></html>"
    assert looks_like_app_shell(shell)
    assert looks_like_app_shell(inline_text)  # the text is all script
    assert not looks_like_app_shell(article)
    assert not looks_like_app_shell(no_script)  # little text, but nothing would render more
