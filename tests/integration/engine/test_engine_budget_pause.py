"""The budget stop end to end (issue 14): the real API, conductor and housekeeping over the
embedded ports (SQLite bus, scheduler and state, file blobs), and a real engine ``Worker``
crawling a loopback site into the blob store.

Mid-crawl the tenant's budget is found spent while a page is in flight: the crawl pauses
once that page is fetched and stored (nothing fetched is lost, no further page is fetched),
the container is free again; ``PUT /v1/budget`` with a higher amount resumes it from its
checkpoint and it completes with exactly the site's pages, none fetched twice.

The container runtime is the one double: it starts the real ``Worker`` in this process
(as ``tests/integration/azure/test_servicebus_story.py`` does) instead of a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from engine_sites import Site, engine_settings

from adapters.local.blob_store import FileBlobStore
from adapters.local.message_bus import SqliteMessageBus
from adapters.local.provisioner import DirectoryProvisioner
from adapters.local.scheduler import SqliteScheduler
from adapters.local.state_store import SqliteStateStore
from core import layout
from core.api import Api
from core.api.http import ApiRequest
from core.clock import SystemClock
from core.conductor import Conductor, Housekeeper
from core.inbox import drain_inbox
from core.models import Crawl, CrawlState, Egress, Quotas, TenantCreate
from core.ports import ContainerSpec, ContainerStatus, Ports, RunState, RuntimeCapabilities
from core.records import Records
from core.settings import SkycrawlSettings
from core.tenancy import TenantService
from engine_container.bus_crawl import crawl_runner
from engine_container.fetcher import Fetcher
from engine_container.worker import Worker

PAGES = 8
GATE = 3  # the page in flight when the budget is found spent
#: 1 cent a second, billed at least 60 s: a started container has cost 0.60 at once.
PRICED = Egress(name="local", cost_per_second=0.01, min_billed_s=60.0)


class ChainSite:
    """Pages /0 → /1 → … → /7; page /3 answers only once ``gate`` is opened."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.at_gate = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        i = int(request.path.strip("/"))
        if i == GATE:
            self.at_gate.set()
            await self.gate.wait()
        link = f'<a href="/{i + 1}">next</a>' if i + 1 < PAGES else ""
        return web.Response(text=f"<title>page {i}</title>{link}", content_type="text/html")


@dataclass
class WorkerRuntime:
    """Starts the real engine ``Worker`` (real crawler, fetcher and blob sink) in-process."""

    bus_path: Path
    blobs: FileBlobStore
    settings: SkycrawlSettings
    capabilities: RuntimeCapabilities = field(
        default_factory=lambda: RuntimeCapabilities("in-process", 0.1, 10)
    )
    running: dict[str, tuple[asyncio.Event, asyncio.Task[int]]] = field(default_factory=dict)

    async def start_container(self, *, spec: ContainerSpec) -> None:
        engine = engine_settings(
            container_id=spec.container_id,
            tenant_id=spec.tenant_id,
            capacity=int(spec.env["SKYCRAWL_CAPACITY"]),
            heartbeat_interval_s=0.5,
            concurrency=2,
        )
        control = self.settings.model_copy(
            update={"dispatch_topic": spec.env["SKYCRAWL_DISPATCH_TOPIC"]}
        )
        bus = SqliteMessageBus(self.bus_path)  # the container's own client
        stop = asyncio.Event()

        async def run() -> int:
            async with Fetcher(engine) as fetcher:
                runner = crawl_runner(self.blobs, fetcher, engine)
                worker = Worker(bus=bus, engine=engine, control=control, run_crawl=runner)
                try:
                    return await worker.run(stop)
                finally:
                    await bus.close()

        self.running[spec.container_id] = (stop, asyncio.create_task(run()))

    async def stop_container(
        self, *, container_id: str, egress: Egress | None = None, grace_s: float = 10
    ) -> None:
        if container_id in self.running:
            stop, task = self.running[container_id]
            stop.set()
            await asyncio.wait_for(asyncio.shield(task), grace_s)

    async def describe(self, *, container_id: str, egress: Egress | None = None) -> ContainerStatus:
        if container_id not in self.running:
            return ContainerStatus(container_id, RunState.unknown)
        task = self.running[container_id][1]
        if task.done():
            return ContainerStatus(container_id, RunState.exited, task.result())
        return ContainerStatus(container_id, RunState.running)

    async def list_running(self, *, egress: Egress | None = None) -> list[ContainerStatus]:
        statuses = [await self.describe(container_id=cid) for cid in self.running]
        return [s for s in statuses if s.state is RunState.running]

    async def close(self) -> None:
        for cid in list(self.running):
            with contextlib.suppress(Exception):
                await self.stop_container(container_id=cid)


@dataclass
class Story:
    api: Api
    conductor: Conductor
    records: Records
    blobs_root: Path


@pytest.fixture
async def story(tmp_path: Path) -> AsyncIterator[Story]:
    settings = SkycrawlSettings(
        provider="local",
        inbox_queue="inbox",
        dispatch_topic="dispatch",
        allow_cidrs=["127.0.0.0/8"],
        egresses=[PRICED],
        idle_ttl_s=60.0,
        heartbeat_interval_s=0.5,
        heartbeat_timeout_s=60.0,
    )
    clock = SystemClock()
    bus = SqliteMessageBus(tmp_path / "bus.sqlite3")
    blobs = FileBlobStore(tmp_path / "blobs")
    state = SqliteStateStore(tmp_path / "state.sqlite3")
    runtime = WorkerRuntime(tmp_path / "bus.sqlite3", blobs, settings)
    provisioner = DirectoryProvisioner(tmp_path, bus=bus, dispatch_topic=settings.dispatch_topic)
    ports = Ports(bus, SqliteScheduler(bus), state, blobs, {"local": runtime}, provisioner, clock)
    records = Records(state)
    conductor = Conductor(ports=ports, settings=settings, engine_env={}, records=records)
    tenants = TenantService(records, provisioner, bus, blobs, ports.runtime_for, clock, settings)
    api = Api(
        records=records, tenants=tenants, bus=bus, blobs=blobs, clock=clock, settings=settings
    )
    await bus.ensure_queue(name=settings.inbox_queue)
    stop = asyncio.Event()

    async def host() -> None:  # the inbox trigger
        while not stop.is_set():
            await drain_inbox(conductor, bus, queue=settings.inbox_queue, wait_s=0.1)

    task = asyncio.create_task(host())
    try:
        yield Story(api, conductor, records, tmp_path / "blobs")
    finally:
        stop.set()
        await task
        await ports.close()


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _manifest_urls(root: Path, tenant_id: str, crawl_id: str) -> list[str]:
    folder = root / layout.crawl_prefix(tenant_id, crawl_id) / "manifest"
    lines = [line for f in sorted(folder.iterdir()) for line in f.read_text().splitlines()]
    return [json.loads(line)["url"] for line in lines if line]


async def test_a_crawl_over_budget_pauses_after_its_page_in_flight_and_resumes_when_raised(
    story: Story, serve: Callable[..., Awaitable[Site]]
) -> None:
    chain = ChainSite()
    site = await serve({"*": chain.handle})
    tenants = TenantService(
        story.records,
        story.conductor.ports.provisioner,
        story.conductor.ports.bus,
        story.conductor.ports.blobs,
        story.conductor.ports.runtime_for,
        story.conductor.ports.clock,
        story.conductor.settings,
    )
    tenant, key = await tenants.create(TenantCreate(name="contoso", quotas=Quotas()))
    auth = {"authorization": f"Bearer {key}", "content-type": "application/json"}

    async def call(method: str, path: str, body: object = None) -> tuple[int, dict]:
        raw = b"" if body is None else json.dumps(body).encode()
        answer = await story.api.handle(ApiRequest(method, path, headers=auth, body=raw))
        return answer.status, (answer.parsed() if answer.body else {})

    spec = {
        "seeds": [site.url("/0")],
        "max_pages": 50,
        "max_depth": 50,
        "respect_robots": False,
        "use_sitemaps": False,
    }
    status, accepted = await call("POST", "/v1/crawls", spec)
    assert status == 202, accepted
    crawl_id = accepted["id"]

    async def crawl() -> Crawl:
        found = await story.records.crawls.get(tenant.id, crawl_id)
        assert found is not None
        return found.value

    await asyncio.wait_for(chain.at_gate.wait(), 15)  # page /3 is in flight
    status, _ = await call("PUT", "/v1/budget", {"monthly_amount": 0.5})
    assert status == 200
    await Housekeeper(story.conductor).run()  # 0.60 spent: the limit is seen
    assert (await crawl()).pause_requested == "budget reached"
    status, refused = await call("POST", "/v1/crawls", spec)
    assert (status, refused["type"]) == (402, "urn:skycrawl:problem:budget-reached")
    await asyncio.sleep(0.3)  # the engine has the pause while /3 is still in flight
    chain.gate.set()

    async def paused() -> bool:
        return (await crawl()).state is CrawlState.paused

    await _until(paused, "the crawl to pause")
    stopped = await crawl()
    assert stopped.reason == "budget reached"
    fetched = [site.url(f"/{i}") for i in range(GATE + 1)]
    assert sorted(_manifest_urls(story.blobs_root, tenant.id, crawl_id)) == sorted(fetched)
    assert stopped.counts.fetched == GATE + 1, "the page in flight was finished and stored"
    assert site.hits[f"/{GATE + 1}"] == 0, "no page after the pause"
    status, body = await call("GET", "/v1/budget")
    assert body["reached"] is True
    status, denied = await call("POST", f"/v1/crawls/{crawl_id}/resume")
    assert status == 402, denied

    status, _ = await call("PUT", "/v1/budget", {"monthly_amount": 1000})  # raised: resumes
    assert status == 200

    async def completed() -> bool:
        return (await crawl()).state is CrawlState.completed

    await _until(completed, "the resumed crawl to complete")
    done = await crawl()
    assert done.attempts == 2, "one more attempt, from the checkpoint"
    assert done.counts.fetched == PAGES
    every = [site.url(f"/{i}") for i in range(PAGES)]
    assert sorted(_manifest_urls(story.blobs_root, tenant.id, crawl_id)) == sorted(every)
    assert {path: n for path, n in site.hits.items()} == {f"/{i}": 1 for i in range(PAGES)}
