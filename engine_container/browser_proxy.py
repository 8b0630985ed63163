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
connecting has the engine's ``connect_timeout_s``. Limit: the browser's traffic leaves from
the container directly, not through the egress's proxy (``SKYCRAWL_PROXY_URL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from engine_container.browser import RequestGuard

log = logging.getLogger("skycrawl.engine.browser")

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 30.0
_HOP_HEADERS = (b"proxy-", b"connection:", b"keep-alive:")
_REFUSED = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_UNREACHABLE = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class FilteringProxy:
    """``await start()`` returns the proxy URL; ``await close()`` stops it."""

    def __init__(self, guard: RequestGuard, *, connect_timeout_s: float = 10.0) -> None:
        self._guard = guard
        self._connect_timeout = connect_timeout_s
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
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            upstream_reader, upstream = await asyncio.wait_for(
                asyncio.open_connection(addresses[0], port), self._connect_timeout
            )
        except (OSError, TimeoutError):
            writer.write(_UNREACHABLE)
            return
        try:
            if tunnel:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                kept = [h for h in header_lines if not h.lower().startswith(_HOP_HEADERS)]
                first = f"{method} {path} {version}".encode("latin-1")
                upstream.write(b"\r\n".join([first, *kept, b"Connection: close", b"", b""]))
            await _pipe_both(reader, writer, upstream_reader, upstream)
        finally:
            upstream.close()


async def _pipe_both(
    client_reader: asyncio.StreamReader,
    client: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream: asyncio.StreamWriter,
) -> None:
    """Copy both ways until either side is done (then both are closed)."""
    tasks = {
        asyncio.create_task(_copy(client_reader, upstream)),
        asyncio.create_task(_copy(upstream_reader, client)),
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
