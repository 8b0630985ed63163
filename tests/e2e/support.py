"""Helpers of the end-to-end tests: a site on 127.0.0.1 and a driver for the local stack."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from core.api import ApiRequest, ApiResponse
from functions.local.bootstrap import LocalStack

OPERATOR_KEY = "op_e2e_operator_key_for_tests_only"


@dataclass
class Site:
    url: str
    pages: int
    hits: Counter[str] = field(default_factory=Counter)
    delay_s: float = 0.0


def _page(i: int, pages: int) -> bytes:
    links = {(i + 1) % pages, (i * 7 + 3) % pages, (i * 13 + 5) % pages}
    anchors = "".join(f'<a href="/p/{j}">page {j}</a> ' for j in sorted(links))
    return f"<html><head><title>Page {i}</title></head><body>{anchors}</body></html>".encode()


@contextlib.asynccontextmanager
async def serve_site(pages: int, delay_s: float = 0.0) -> AsyncIterator[Site]:
    site = Site(url="", pages=pages, delay_s=delay_s)

    async def handle(request: web.Request) -> web.Response:
        site.hits[request.path] += 1
        if request.path == "/robots.txt":
            return web.Response(text="User-agent: *\nAllow: /\n")
        if site.delay_s:
            await asyncio.sleep(site.delay_s)
        if request.path == "/":
            return web.Response(body=_page(0, pages), content_type="text/html")
        if request.path.startswith("/p/"):
            index = int(request.path[3:])
            if 0 <= index < pages:
                return web.Response(body=_page(index, pages), content_type="text/html")
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    site.url = f"http://127.0.0.1:{port}/"
    try:
        yield site
    finally:
        await runner.cleanup()


@dataclass
class Harness:
    stack: LocalStack
    stop: asyncio.Event

    async def call(
        self,
        method: str,
        path: str,
        key: str,
        body: Any = None,
        query: dict[str, str] | None = None,
    ) -> ApiResponse:
        headers = {"authorization": f"Bearer {key}"}
        raw = b""
        if body is not None:
            raw = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        return await self.stack.api.handle(
            ApiRequest(method=method, path=path, query=query or {}, headers=headers, body=raw)
        )

    async def json(self, method: str, path: str, key: str, body: Any = None) -> Any:
        response = await self.call(method, path, key, body)
        assert response.status < 400, response.body
        return json.loads(response.body)

    async def tenant(self, name: str, max_containers: int, parallel: int) -> tuple[str, str]:
        quotas = {"max_containers": max_containers, "parallel_per_container": parallel}
        created = await self.json(
            "POST", "/v1/tenants", OPERATOR_KEY, {"name": name, "quotas": quotas}
        )
        return created["id"], created["api_key"]

    async def live_containers(self, tenant_id: str) -> list[Any]:
        return [
            c.value
            for c in await self.stack.records.containers.query(tenant_id)
            if c.value.state.live
        ]

    async def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if await predicate():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
