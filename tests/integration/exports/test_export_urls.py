"""Large exports as signed URLs (issue 12), through the API on real stores: S3 on moto and
Blob storage on Azurite sign, the file store streams. A request gets the same bytes whether it
streams (``delivery=stream``) or follows the ``303`` to the signed URL; the stored export is
made once per state of the crawl and made again when the crawl grows."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from adapters.local.blob_store import FileBlobStore
from adapters.local.container_runtime import SubprocessRuntime
from adapters.local.message_bus import SqliteMessageBus
from adapters.local.provisioner import DirectoryProvisioner
from adapters.local.state_store import SqliteStateStore
from core.api import Api, ApiRequest, ApiResponse
from core.clock import FakeClock
from core.layout import crawl_prefix
from core.ports import BlobStore
from core.records import Records
from core.tenancy import TenantService
from functions.local.asgi import create_asgi_app
from skycrawl_client import AsyncSkycrawl
from tests.contract.backends_aws import moto_blobs
from tests.contract.backends_azure import azurite_blobs
from tests.unit.api.api_harness import OPERATOR_KEY, SEED, START, make_settings


@contextlib.asynccontextmanager
async def file_blobs(tmp: Path) -> AsyncIterator[BlobStore]:
    store = FileBlobStore(tmp / "blobs")
    yield store
    await store.close()


STORES: dict[str, Callable[[Path], AbstractAsyncContextManager[Any]]] = {
    "moto": moto_blobs,
    "azurite": azurite_blobs,
    "files": file_blobs,
}
#: which stores sign URLs: the tests below branch on the capability, this pins it
SIGNS = {"moto": True, "azurite": True, "files": False}
THRESHOLD = 20_000


class Deployment:
    """The API over local state and bus and the blob store under test."""

    def __init__(self, root: Path, blobs: BlobStore) -> None:
        self.clock = FakeClock(START)
        self.settings = make_settings(export_url_bytes=THRESHOLD, export_url_ttl_s=120)
        self.state = SqliteStateStore(root / "state.sqlite3", clock=self.clock)
        self.bus = SqliteMessageBus(root / "bus.sqlite3", clock=self.clock)
        self.blobs = blobs
        self.runtime = SubprocessRuntime(
            command=(sys.executable, "-c", "import time; time.sleep(60)"), log_dir=root / "logs"
        )
        provisioner = DirectoryProvisioner(
            root / "provisioned", bus=self.bus, dispatch_topic=self.settings.dispatch_topic
        )
        records = Records(self.state)
        runtime = self.runtime
        tenants = TenantService(
            records, provisioner, self.bus, blobs, lambda _e: runtime, self.clock, self.settings
        )
        self.api = Api(
            records=records,
            tenants=tenants,
            bus=self.bus,
            blobs=blobs,
            clock=self.clock,
            settings=self.settings,
        )

    async def call(
        self, method: str, path: str, *, key: str, body: Any = None, **query: str
    ) -> ApiResponse:
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        data = b"" if body is None else json.dumps(body).encode()
        return await self.api.handle(ApiRequest(method, path, query, headers, data))

    async def close(self) -> None:
        await self.runtime.close()
        await self.bus.close()
        await self.state.close()


@pytest.fixture(params=sorted(STORES))
async def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Deployment]:
    async with STORES[request.param](tmp_path) as blobs:
        assert blobs.capabilities.signed_urls is SIGNS[request.param]
        deployment = Deployment(tmp_path, blobs)
        await deployment.bus.ensure_queue(name=deployment.settings.inbox_queue)
        try:
            yield deployment
        finally:
            await deployment.close()


async def _crawl(d: Deployment) -> tuple[str, str, str]:
    created = await d.call("POST", "/v1/tenants", key=OPERATOR_KEY, body={"name": "acme"})
    assert created.status == 201, created.body
    tenant_id, key = created.parsed()["id"], created.parsed()["api_key"]
    submitted = await d.call("POST", "/v1/crawls", key=key, body=SEED)
    assert submitted.status == 202, submitted.body
    return tenant_id, key, submitted.parsed()["id"]


async def _add_items(d: Deployment, tenant_id: str, crawl_id: str, seq: int, n: int) -> None:
    items = [{"n": seq * 1000 + i, "name": f"item {i}", "text": "ü" * 100} for i in range(n)]
    data = b"".join(json.dumps(item, ensure_ascii=False).encode() + b"\n" for item in items)
    await d.blobs.put(key=f"{crawl_prefix(tenant_id, crawl_id)}items/{seq:08d}.jsonl", data=data)


async def _follow(response: ApiResponse) -> httpx.Response:
    assert response.status == 303, response.body
    assert response.body == b""
    async with httpx.AsyncClient() as http:  # the stores listen on 127.0.0.1
        return await http.get(response.headers["location"])


async def _exports(d: Deployment, tenant_id: str, crawl_id: str) -> list[str]:
    return await d.blobs.list(prefix=f"{crawl_prefix(tenant_id, crawl_id)}exports/")


async def test_a_large_export_is_a_redirect_to_the_same_bytes(deployment: Deployment) -> None:
    d = deployment
    tenant_id, key, crawl_id = await _crawl(d)
    await _add_items(d, tenant_id, crawl_id, 0, 100)  # ~30 kB of JSON lines
    path = f"/v1/crawls/{crawl_id}/export"
    for fmt in ("items.jsonl", "items.csv"):
        streamed = await d.call("GET", path, key=key, format=fmt, delivery="stream")
        assert streamed.status == 200
        assert len(streamed.body) > THRESHOLD
        answer = await d.call("GET", path, key=key, format=fmt)
        if not d.blobs.capabilities.signed_urls:  # files: no URL to give, the body it is
            assert (answer.status, answer.body) == (200, streamed.body)
            continue
        got = await _follow(answer)
        assert got.status_code == 200
        assert got.content == streamed.body
        assert got.headers["content-type"].startswith(streamed.headers["content-type"][:8])
        assert f'filename="{crawl_id}.{fmt}"' in got.headers["content-disposition"]


async def test_a_stored_export_is_reused_until_the_crawl_grows(deployment: Deployment) -> None:
    d = deployment
    if not d.blobs.capabilities.signed_urls:
        tenant_id, key, crawl_id = await _crawl(d)
        forced = await d.call("GET", f"/v1/crawls/{crawl_id}/export", key=key, delivery="url")
        assert forced.status == 400
        assert "signed URL" in forced.parsed()["detail"]
        return
    tenant_id, key, crawl_id = await _crawl(d)
    await _add_items(d, tenant_id, crawl_id, 0, 100)
    path = f"/v1/crawls/{crawl_id}/export"
    first = await d.call("GET", path, key=key, format="items.jsonl")
    again = await d.call("GET", path, key=key, format="items.jsonl")
    assert urlsplit(first.headers["location"]).path == urlsplit(again.headers["location"]).path
    assert len(await _exports(d, tenant_id, crawl_id)) == 1

    await _add_items(d, tenant_id, crawl_id, 1, 3)  # the crawl goes on: a new chunk
    grown = await d.call("GET", path, key=key, format="items.jsonl")
    lines = (await _follow(grown)).content.splitlines()
    assert len(lines) == 103
    assert json.loads(lines[-1])["n"] == 1002
    [stored] = await _exports(d, tenant_id, crawl_id)  # the older export is gone
    assert urlsplit(grown.headers["location"]).path.endswith(stored)


async def test_small_exports_stream_unless_a_url_is_asked_for(deployment: Deployment) -> None:
    d = deployment
    tenant_id, key, crawl_id = await _crawl(d)
    await _add_items(d, tenant_id, crawl_id, 0, 2)
    path = f"/v1/crawls/{crawl_id}/export"
    small = await d.call("GET", path, key=key, format="items")
    assert small.status == 200
    assert len(small.body.splitlines()) == 2
    assert await _exports(d, tenant_id, crawl_id) == []
    bad = await d.call("GET", path, key=key, format="items", delivery="email")
    assert bad.status == 400
    assert "auto, url, stream" in bad.parsed()["detail"]
    if d.blobs.capabilities.signed_urls:
        forced = await d.call("GET", path, key=key, format="items", delivery="url")
        assert (await _follow(forced)).content == small.body


async def test_the_client_follows_the_redirect_without_the_key(deployment: Deployment) -> None:
    """``skycrawl_client`` (and so ``skycrawl export``) gets the bytes whichever way the API
    answers; the signed URL is fetched without the bearer key (S3 refuses two auths)."""
    d = deployment
    tenant_id, key, crawl_id = await _crawl(d)
    await _add_items(d, tenant_id, crawl_id, 0, 100)
    streamed = await d.call(
        "GET", f"/v1/crawls/{crawl_id}/export", key=key, format="items.csv", delivery="stream"
    )
    transport = httpx.ASGITransport(app=create_asgi_app(d.api))
    async with AsyncSkycrawl("http://testserver", api_key=key, transport=transport) as api:
        got = b"".join([c async for c in api.export_crawl(crawl_id, format="items.csv")])
    assert got == streamed.body
    assert bool(await _exports(d, tenant_id, crawl_id)) is d.blobs.capabilities.signed_urls
