"""A tiny HTTP forward proxy on 127.0.0.1 for the egress tests (a hand-written stand-in: no
forward proxy is part of this machine's test services).

It takes absolute-form requests (``GET http://127.0.0.1:PORT/path HTTP/1.1``) and ``CONNECT
127.0.0.1:PORT`` tunnels, refuses any target that is not on loopback (the tests send nothing
off the machine), forwards a request with ``Connection: close`` and pipes the answer back, or
pipes a tunnel both ways. ``asked`` lists every request line's target it received (refused
or not), ``seen`` every URL it forwarded (``CONNECT host:port`` for a
tunnel) and ``authorizations`` the ``Proxy-Authorization`` each came with; with
``credentials="user:pass"`` a request without them is answered ``407``. ``stop()`` closes the
listening socket, so the proxy then refuses connections -- a failing proxy for the scoring
tests. Limits: one request per client connection, Basic authentication only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_DENIED = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
_AUTH = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
)


@dataclass
class ForwardProxy:
    host: str = "127.0.0.1"
    port: int = 0
    credentials: str | None = None  # "user:pass" to require Basic proxy authentication
    asked: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        if self.credentials:
            return f"http://{self.credentials}@{self.host}:{self.port}"
        return f"http://{self.host}:{self.port}"

    async def start(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening (the port then refuses connections)."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def _authorized(self, header_lines: list[str]) -> bool:
        given = next(
            (
                h.split(":", 1)[1].strip()
                for h in header_lines
                if h.lower().startswith("proxy-authorization:")
            ),
            None,
        )
        self.authorizations.append(given)
        if self.credentials is None:
            return True
        return given == "Basic " + base64.b64encode(self.credentials.encode()).decode()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _ = line.split(" ", 2)
            self.asked.append(target)
            if method.upper() == "CONNECT":
                await self._tunnel(target, header_lines, reader, writer)
                return
            parts = urlsplit(target)
            if parts.hostname != "127.0.0.1" or parts.port is None:
                writer.write(_DENIED)
                return
            if not self._authorized(header_lines):
                writer.write(_AUTH)
                return
            self.seen.append(target)
            up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port)
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            kept = [
                h
                for h in header_lines
                if h and not h.lower().startswith(("proxy-", "connection:", "keep-alive:"))
            ]
            request = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close"])
            up_writer.write(request.encode("latin-1") + b"\r\n\r\n")
            await up_writer.drain()
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
            up_writer.close()
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()

    async def _tunnel(
        self,
        target: str,
        header_lines: list[str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        host, _, port = target.rpartition(":")
        if host != "127.0.0.1" or not port.isdigit():
            writer.write(_DENIED)
            return
        if not self._authorized(header_lines):
            writer.write(_AUTH)
            return
        self.seen.append(f"CONNECT {target}")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()

        tasks = {
            asyncio.create_task(copy(reader, up_writer)),
            asyncio.create_task(copy(up_reader, writer)),
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            up_writer.close()
