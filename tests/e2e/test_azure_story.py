"""The whole story on the Azure adapters: Storage queues, Table storage and Blob storage on
Azurite, engine containers as real ``python -m engine_container`` subprocesses configured by
``engine_env`` (``SKYCRAWL_PROVIDER=azure`` and Azurite's connection string), tenant
provisioning through ``ArmProvisioner`` on the fake Resource Manager, and the function app's
three functions invoked in-process with real ``azure.functions`` objects -- this test is the
Functions host: it pulls inbox messages and invokes the queue trigger, settles them as the
host does, fires the timer and turns HTTP calls into ``func.HttpRequest``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage as TriggerQueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from adapters.azure.settings import AzureSettings
from adapters.azure.storage_queue_wire import decode_envelope, subscription_queue
from adapters.local.container_runtime import SubprocessRuntime
from core.layout import subscription_name, tenant_topic
from core.settings import SkycrawlSettings
from functions.azure import function_app
from functions.azure.bootstrap import AzureStack, build_stack, use_stack
from tests.e2e.support import OPERATOR_KEY, serve_site
from tests.integration.azure.azurite import azurite
from tests.integration.azure.fakes_mgmt import FakeResourceManagementClient

pytestmark = pytest.mark.e2e

ACCOUNT_ID = (
    "/subscriptions/sub-e2e/resourceGroups/rg-e2e/providers/"
    "Microsoft.Storage/storageAccounts/skycrawle2e"
)
MAX_DEQUEUE = 5


@dataclass
class FunctionsHost:
    """Plays the Azure Functions host for ``function_app.app``."""

    stack: AzureStack
    connection_string: str
    inbox: QueueClient
    functions: dict[str, Callable[..., Awaitable[Any]]]
    handled: Counter[str] = field(default_factory=Counter)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def check(self) -> None:
        """Fail at once if a host loop died."""
        for task in self.tasks:
            if task.done() and task.exception() is not None:
                raise AssertionError("a Functions host loop failed") from task.exception()

    async def http(
        self,
        method: str,
        path: str,
        key: str,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        raw = json.dumps(body).encode() if body is not None else b""
        request = func.HttpRequest(
            method=method,
            url=f"https://skycrawl.azurewebsites.net{path}",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            params=params or {},
            route_params={"path": path.lstrip("/")},
            body=raw,
        )
        response: func.HttpResponse = await self.functions["api"](request)
        assert response.status_code < 400, response.get_body()
        return json.loads(response.get_body()) if response.get_body() else None

    async def pump_inbox(self, stop: asyncio.Event) -> None:
        """The queue trigger: receive, invoke, delete on success, poison after 5 tries."""
        while not stop.is_set():
            seen = 0
            async for message in self.inbox.receive_messages(
                messages_per_page=16, max_messages=16, visibility_timeout=30
            ):
                seen += 1
                await self._deliver(message)
            if not seen:
                await asyncio.sleep(0.2)

    async def _deliver(self, message: Any) -> None:
        trigger_message = TriggerQueueMessage(
            id=message.id,
            body=message.content.encode(),
            dequeue_count=message.dequeue_count,
            pop_receipt=message.pop_receipt,
        )
        self.handled[json.loads(decode_envelope(message.content).body)["type"]] += 1
        try:
            await self.functions["inbox"](trigger_message)
        except Exception:
            if message.dequeue_count >= MAX_DEQUEUE:
                poison = QueueClient.from_connection_string(
                    self.connection_string, self.inbox.queue_name + "-poison"
                )
                async with poison:
                    await poison.send_message(message.content)
                await self.inbox.delete_message(message)
            else:
                await self.inbox.update_message(message, visibility_timeout=1)
            return
        await self.inbox.delete_message(message)

    async def fire_timer(self, stop: asyncio.Event, period_s: float) -> None:
        while not stop.is_set():
            await self.functions["housekeeping"](TimerRequest())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period_s)


@pytest.fixture
async def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FunctionsHost]:
    conn = azurite().connection_string
    # the host indexes function_app.py with the app settings in its environment
    monkeypatch.setenv("SKYCRAWL_AZURE_BUS", "storage-queue")
    app_module = importlib.reload(function_app)
    tag = uuid.uuid4().hex[:8]
    settings = SkycrawlSettings(
        provider="azure",
        inbox_queue=f"inbox-{tag}",
        dispatch_topic=f"dispatch-{tag}",
        allow_cidrs=["127.0.0.0/8"],
        idle_ttl_s=2.0,
        heartbeat_interval_s=0.5,
        heartbeat_timeout_s=30.0,
        startup_timeout_s=60.0,
        checkpoint_interval_s=0.5,
        stop_grace_s=5.0,
        operator_key=OPERATOR_KEY,
    )
    azure = AzureSettings(
        bus="storage-queue",
        storage_connection_string=conn,
        storage_account="skycrawle2e",
        state_table=f"state{tag}",
        blob_container=f"results-{tag}",
        subscription_id="sub-e2e",
        resource_group="rg-e2e",
    )
    runtime = SubprocessRuntime(
        command=(sys.executable, "-m", "engine_container"), log_dir=tmp_path / "logs"
    )
    arm = FakeResourceManagementClient(subscription_id="sub-e2e", existing=[ACCOUNT_ID])
    stack = build_stack(settings, azure, runtime=runtime, arm=arm)
    use_stack(stack)
    functions = {
        f.get_function_name(): f.get_user_function() for f in app_module.app.get_functions()
    }
    inbox = QueueClient.from_connection_string(conn, settings.inbox_queue)
    host = FunctionsHost(stack=stack, connection_string=conn, inbox=inbox, functions=functions)
    stop = asyncio.Event()
    await stack.prepare()
    host.tasks = tasks = [
        asyncio.create_task(host.pump_inbox(stop)),
        # once now, then not again during the test: the idle stop must come from the kill timer
        asyncio.create_task(host.fire_timer(stop, period_s=600.0)),
    ]
    try:
        yield host
    finally:
        stop.set()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        await inbox.close()
        await stack.close()
        use_stack(None)


async def _wait(
    host: FunctionsHost, predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        host.check()
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def test_crawl_on_azure_adapters_completes_and_scales_to_zero(
    host: FunctionsHost, tmp_path: Path
) -> None:
    created = await host.http(
        "POST", "/v1/tenants", OPERATOR_KEY, {"name": "contoso", "quotas": {"max_containers": 2}}
    )
    tenant_id, key = created["id"], created["api_key"]
    tenant = await host.stack.records.tenants.get("tenants", tenant_id)
    assert tenant is not None
    assert tenant.value.resources["container_id"].endswith(tenant.value.resources["container"])
    assert "table_id" not in tenant.value.resources  # pooled tenant data: the shared table

    async with serve_site(pages=25) as site:
        crawl = await host.http(
            "POST", "/v1/crawls", key, {"seeds": [site.url], "max_pages": 100, "max_depth": 10}
        )
        status: dict[str, Any] = {}

        async def finished() -> bool:
            nonlocal status
            status = await host.http("GET", f"/v1/crawls/{crawl['id']}", key)
            return status["status"] in ("completed", "failed", "dead-lettered", "cancelled")

        await _wait(host, finished, 90, "the crawl to finish")
    assert status["status"] == "completed", status
    assert status["counts"]["fetched"] == 26  # "/" and /p/0 … /p/24
    pages = await host.http("GET", f"/v1/crawls/{crawl['id']}/pages", key, params={"limit": "100"})
    assert len(pages["items"]) == 26

    containers = await host.stack.records.containers.query(tenant_id)
    assert len(containers) == 1
    guid = containers[0].value.id

    async def stopped() -> bool:
        found = await host.stack.records.containers.get(tenant_id, guid)
        return found is not None and not found.value.state.live

    await _wait(host, stopped, 30, "the idle container to be stopped")
    final = await host.stack.records.containers.get(tenant_id, guid)
    assert final is not None
    assert final.value.reason == "idle"
    assert host.handled["container.kill-timer"] >= 1  # stopped by its kill timer
    assert host.handled["container.ready"] == 1
    assert host.handled["crawl.completed"] == 1
    assert await host.stack.ports.list_running(host.stack.settings.egresses) == []

    topic = tenant_topic(host.stack.settings.dispatch_topic, tenant_id)  # the tenant's own
    assert tenant.value.resources["dispatch_topic"] == topic
    queue = subscription_queue(topic, subscription_name(guid))
    service = QueueServiceClient.from_connection_string(azurite().connection_string)
    async with service:
        names = [q.name async for q in service.list_queues(name_starts_with="sub-")]
    assert queue not in names  # the container's subscription queue is gone
    log = (tmp_path / "logs" / f"{guid}.log").read_text()
    assert f"container {guid} ready" in log
