"""A tiny HTTP forward proxy on 127.0.0.1 for the egress tests (a hand-written stand-in: no
forward proxy is part of this machine's test services).

It takes absolute-form requests (``GET http://127.0.0.1:PORT/path HTTP/1.1``), refuses any
target that is not on loopback (the tests send nothing off the machine), forwards the request
with ``Connection: close`` and pipes the answer back. ``seen`` lists every URL it forwarded;
``stop()`` closes the listening socket, so the proxy then refuses connections -- a failing
proxy for the scoring tests. Limits: plain HTTP only (no ``CONNECT``), one request per client
connection, no proxy authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class ForwardProxy:
    host: str = "127.0.0.1"
    port: int = 0
    seen: list[str] = field(default_factory=list)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _ = line.split(" ", 2)
            parts = urlsplit(target)
            if parts.hostname != "127.0.0.1" or parts.port is None:
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
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
