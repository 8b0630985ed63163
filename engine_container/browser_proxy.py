"""The filtering proxy Chromium sends every connection through (issue 15).

Playwright's request interception (``context.route``) does not see redirect hops (Chromium
follows a 3xx itself, after the route let the first request go), and Chromium resolves names
again itself after the route's check. So the browser is launched with
``--proxy-server=<this proxy>`` and ``--proxy-bypass-list=<-loopback>`` (loopback too goes
through it), and this proxy, on 127.0.0.1, is where the SSRF guard is enforced for every
connection Chromium opens: plain-HTTP requests (absolute-form, each redirect hop a request of
its own), ``CONNECT`` tunnels (HTTPS, WebSockets). For each it asks the browser's
``RequestGuard`` (``core.netguard`` checks on the URL and on every address the host resolves
to), then connects to exactly one of the addresses it checked, so there is no DNS-rebinding
window. A refusal is a ``403`` to Chromium (the page sees a network error).

Plain HTTP is forwarded one request per connection (``Connection: close`` upstream and to
Chromium); tunnels are piped until either side closes. Request heads are capped at 64 KiB;
connecting has the engine's ``connect_timeout_s``.

Through the egress's proxy
    A ``FilteringProxy`` made with ``upstream=`` (a URL of the egress's proxy pool,
    ``http://user:pass@host:port`` or ``https://``) checks exactly as above, then forwards
    through that proxy instead of connecting itself: a tunnel becomes a ``CONNECT host:port``
    to the upstream proxy (its answer must be ``200``, else Chromium gets a ``502`` and the
    log says what the proxy answered), a plain request goes in absolute form
    (``GET http://host/path``); both carry ``Proxy-Authorization: Basic`` from the URL's
    user info. As for the fetcher, the upstream proxy host is trusted (the operator chose
    it) and the proxy resolves the target itself: the guard checked what the name resolves
    to here, so point proxies only at egress networks without private ranges.

Per-proxy stats
    With ``stats`` (the fetcher's ``ProxyBook``), every request that passed the guard counts
    for its proxy's heartbeat figures, as the fetcher's do: a network error when the proxy
    (or site) is unreachable, refuses a tunnel or answers ``407``; a ban signal for a plain
    answer of ``403``/``429``; its latency up to the answer's head (a tunnel: up to the
    proxy's ``200``). Inside a tunnel nothing is seen (TLS), so a site's ``403`` over HTTPS
    and CAPTCHA pages are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import BasicAuth
from yarl import URL

from core.egress_scoring import proxy_id
from engine_container.fetcher import ProxyBook

if TYPE_CHECKING:
    from engine_container.browser import RequestGuard

log = logging.getLogger("skycrawl.engine.browser")

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 30.0
_HOP_HEADERS = (b"proxy-", b"connection:", b"keep-alive:")
_REFUSED = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_UNREACHABLE = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Upstream:
    """The egress proxy a ``FilteringProxy`` forwards through."""

    host: str
    port: int
    tls: bool
    authorization: str | None  # the ``Proxy-Authorization`` value, from the URL's user info

    @classmethod
    def of(cls, url: str) -> Upstream:
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("an upstream proxy is an http:// or https:// URL with a host")
        auth = BasicAuth.from_url(parsed)
        tls = parsed.scheme == "https"
        port = parsed.port or (443 if tls else 80)
        return cls(parsed.host, port, tls, auth.encode() if auth is not None else None)

    def header(self) -> list[bytes]:
        if self.authorization is None:
            return []
        return [f"Proxy-Authorization: {self.authorization}".encode("latin-1")]


class FilteringProxy:
    """``await start()`` returns the proxy URL; ``await close()`` stops it. With
    ``upstream`` (a proxy URL), what passes the guard is forwarded through that proxy."""

    def __init__(
        self,
        guard: RequestGuard,
        *,
        connect_timeout_s: float = 10.0,
        upstream: str | None = None,
        stats: ProxyBook | None = None,
    ) -> None:
        self._guard = guard
        self._connect_timeout = connect_timeout_s
        self._upstream = Upstream.of(upstream) if upstream else None
        self._stats = stats
        self._stats_key = proxy_id(upstream)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._connections.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(HEAD_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD_BYTES:
            writer.write(_BAD)
            return
        request_line, *header_lines = head[:-4].split(b"\r\n")
        try:
            method, target, version = request_line.decode("latin-1").split(" ", 2)
        except ValueError:
            writer.write(_BAD)
            return
        tunnel = method.upper() == "CONNECT"
        url = f"https://{target}/" if tunnel else target
        reason, addresses = await self._guard.admit(url)
        if reason is not None or not addresses:
            log.info("browser proxy refused %s %s: %s", method, target[:200], reason)
            writer.write(_REFUSED)
            return
        kept = [h for h in header_lines if not h.lower().startswith(_HOP_HEADERS)]
        started = time.monotonic()
        if self._upstream is None:
            streams = await self._direct(url, addresses[0], method, version, kept, tunnel)
        else:
            streams = await self._through(self._upstream, target, method, version, kept, tunnel)
        if streams is None:
            self._count(started, None)
            writer.write(_UNREACHABLE)
            return
        upstream_reader, upstream = streams
        try:
            if tunnel:
                self._count(started, 200)
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await _pipe_both(reader, writer, _copy(upstream_reader, writer), upstream)
                return
            # a plain request's answer is looked at first: its status counts, and through
            # the egress proxy the proxy's own 407 must not reach Chromium
            answer = _vetted(
                upstream_reader,
                writer,
                refuse_407=self._upstream is not None,
                seen=lambda status: self._count(started, status),
            )
            await _pipe_both(reader, writer, answer, upstream)
        finally:
            upstream.close()

    def _count(self, started: float, status: int | None) -> None:
        """One request for the proxy's stats: ``status`` None (or a proxy's 407) is a
        network error, 403/429 a ban signal."""
        if self._stats is None:
            return
        error = status is None or (status == 407 and self._upstream is not None)
        self._stats.count(
            self._stats_key,
            error=error,
            banned=status in (403, 429),
            elapsed_ms=(time.monotonic() - started) * 1000,
        )

    async def _direct(
        self, url: str, address: str, method: str, version: str, kept: list[bytes], tunnel: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Connected to the checked ``address`` (a plain request already sent), or None."""
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address, port), self._connect_timeout
            )
        except (OSError, TimeoutError):
            return None
        if not tunnel:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            first = f"{method} {path} {version}".encode("latin-1")
            writer.write(b"\r\n".join([first, *kept, b"Connection: close", b"", b""]))
        return reader, writer

    async def _through(
        self,
        proxy: Upstream,
        target: str,
        method: str,
        version: str,
        kept: list[bytes],
        tunnel: bool,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Connected through the egress proxy: a tunnel it accepted, or a plain request sent
        to it in absolute form; None (logged) when the proxy is unreachable or says no."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    proxy.host, proxy.port, ssl=ssl.create_default_context() if proxy.tls else None
                ),
                self._connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            log.warning("egress proxy %s:%s unreachable: %s", proxy.host, proxy.port, exc)
            return None
        if not tunnel:
            first = f"{method} {target} {version}".encode("latin-1")
            lines = [first, *kept, *proxy.header(), b"Connection: close", b"", b""]
            writer.write(b"\r\n".join(lines))
            return reader, writer
        host = f"Host: {target}".encode("latin-1")
        connect = f"CONNECT {target} HTTP/1.1".encode("latin-1")
        writer.write(b"\r\n".join([connect, host, *proxy.header(), b"", b""]))
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                answer = await reader.readuntil(b"\r\n\r\n")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            answer = b""
        status = answer.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        if status.split(" ")[1:2] != ["200"]:
            log.warning("egress proxy refused CONNECT %s: %s", target[:200], status[:200] or "-")
            writer.close()
            return None
        return reader, writer


async def _pipe_both(
    client_reader: asyncio.StreamReader,
    client: asyncio.StreamWriter,
    answer: Coroutine[Any, Any, None],
    upstream: asyncio.StreamWriter,
) -> None:
    """Copy the client's bytes upstream while ``answer`` copies the other way, until either
    side is done (then both are closed)."""
    tasks = {
        asyncio.create_task(_copy(client_reader, upstream)),
        asyncio.create_task(answer),
    }
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()


async def _vetted(
    source: asyncio.StreamReader,
    sink: asyncio.StreamWriter,
    *,
    refuse_407: bool,
    seen: Callable[[int | None], None],
) -> None:
    """Copy an answer whose status line is read first and handed to ``seen`` (None: no
    answer). With ``refuse_407`` (through the egress proxy), the proxy's ``407`` (wrong
    credentials) is Chromium's ``502``, not a challenge it would wait on."""
    try:
        async with asyncio.timeout(HEAD_TIMEOUT_S):
            head = await source.readuntil(b"\r\n\r\n")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        seen(None)  # no answer; a request the page let go of is cancelled: never counted
        return
    line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    code = line.split(" ")[1:2]
    status = int(code[0]) if code and code[0].isdigit() else None
    seen(status)
    if refuse_407 and status == 407:
        log.warning("egress proxy refused the browser's request: %s", line[:200])
        sink.write(_UNREACHABLE)
        return
    sink.write(head)
    await _copy(source, sink)
