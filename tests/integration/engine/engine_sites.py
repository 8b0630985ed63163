"""Helpers of the engine integration tests: a name→address resolver, test sites and handlers,
engine settings for tests, and crawl outcomes read back from ``pages.jsonl``.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from core.models import CrawlCounts
from engine_container.settings import EngineSettings


class NoSuchName(AbstractResolver):
    """A resolver for which every name is NXDOMAIN, as getaddrinfo reports it; no lookup
    leaves the process."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        pass


class StaticResolver(AbstractResolver):
    """DNS for tests: fixed names → addresses; anything else does not exist."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.lookups: Counter[str] = Counter()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups[host] += 1
        if host not in self.names:
            raise OSError(f"no such host {host!r}")
        return [
            ResolveResult(
                hostname=host,
                host=addr,
                port=port,
                family=socket.AF_INET6 if ":" in addr else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for addr in self.names[host]
        ]

    async def close(self) -> None:
        pass


@dataclass
class Site:
    """A running test server and what it saw."""

    host: str
    port: int
    hits: Counter[str] = field(default_factory=Counter)
    times: dict[str, list[float]] = field(default_factory=dict)
    active: int = 0
    max_active: int = 0

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def html(body: str, title: str = "t") -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            text=f"<html><head><title>{title}</title></head><body>{body}</body></html>",
            content_type="text/html",
        )

    return handler


def text(body: str, status: int = 200, content_type: str = "text/plain") -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=body, status=status, content_type=content_type)

    return handler


def links_page(*hrefs: str, title: str = "t") -> Handler:
    return html("".join(f'<a href="{h}">{h}</a>' for h in hrefs), title=title)


def engine_settings(**overrides: Any) -> EngineSettings:
    values: dict[str, Any] = {
        "allow_cidrs": ["127.0.0.0/8"],
        "retry_base_s": 0.01,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 5.0,
        "total_timeout_s": 10.0,
        "checkpoint_interval_s": 60.0,
    }
    values.update(overrides)
    return EngineSettings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class CrawlOutcome:
    counts: CrawlCounts
    pages: list[dict[str, Any]]
    out: Path

    def by_url(self) -> dict[str, dict[str, Any]]:
        return {p["url"]: p for p in self.pages}

    def urls(self) -> set[str]:
        return {p["url"] for p in self.pages}


def read_pages(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def make_pdf(*lines: str, title: str = "A test document") -> bytes:
    """A one-page PDF 1.4 whose text is ``lines`` (Helvetica), with a correct xref table."""
    text = " ".join(f"({line}) Tj 0 -16 Td" for line in lines)
    stream = f"BT /F1 12 Tf 72 720 Td {text} ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        f"<< /Title ({title}) >>".encode(),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def payload(data: bytes, content_type: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=data, content_type=content_type)

    return handler
