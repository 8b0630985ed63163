"""The whole story on the GCP adapters: Pub/Sub and Firestore on Google's emulators, Cloud
Storage and Cloud Tasks faked at their SDK boundary, the functions served by
functions-framework's test client, and real engine subprocesses as containers.

The test plays Google's part: it pushes inbox messages to the ``conductor`` CloudEvent
function (as Pub/Sub push does), runs the Cloud Tasks dispatcher that calls
``/internal/timers`` with an OIDC token, and calls ``/internal/housekeeping`` the way Cloud
Scheduler would. Containers are ``python -m engine_container`` processes
(``SubprocessRuntime``) with ``SKYCRAWL_PROVIDER=gcp`` and the emulator hosts in their
environment (``adapters.gcp.provider.engine_env``): they subscribe on the emulator, crawl a site
served on 127.0.0.1, write pages to the fake Cloud Storage server and report on the inbox.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from google.api_core import exceptions as gexc

from adapters.gcp.message_bus import PubSubMessageBus
from adapters.gcp.provider import GcpClients, pubsub_clients
from adapters.gcp.settings import GcpSettings
from adapters.local.container_runtime import SubprocessRuntime
from core.layout import subscription_name, tenant_topic
from core.ports import Queue
from core.settings import SkycrawlSettings
from functions.gcp import bootstrap
from functions.gcp.bootstrap import GcpStack, build_gcp_stack
from tests.e2e.support import OPERATOR_KEY, serve_site
from tests.integration.gcp import emulators
from tests.integration.gcp.fake_cloud_tasks import FakeCloudTasks, FakeIdTokens
from tests.integration.gcp.fakes import FakeGcsServer

pytestmark = pytest.mark.e2e

MAIN = str(Path(__file__).resolve().parents[2] / "functions" / "gcp" / "main.py")
TIMER_URL = "https://skycrawl-api.example.test/internal/timers"
CALLER = "skycrawl-timers@e2e.iam.gserviceaccount.com"


@dataclass
class Cloud:
    stack: GcpStack
    api: Any  # flask test client of the ``api`` function
    conductor: Any  # flask test client of the ``conductor`` function
    tasks: FakeCloudTasks
    tokens: FakeIdTokens
    bus: PubSubMessageBus  # the test's own client, on the test's loop
    subscriber: Any
    pushed: list[int]
    publisher: Any = None

    async def call(self, method: str, path: str, key: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {key}"}
        response = await asyncio.to_thread(
            self.api.open, path, method=method, headers=headers, json=body
        )
        return response

    async def json(self, method: str, path: str, key: str, body: Any = None) -> Any:
        response = await self.call(method, path, key, body)
        assert response.status_code < 400, response.get_data()
        return response.get_json()


def cloud_event(project: str, inbox: str, lease: Any) -> tuple[dict[str, str], bytes]:
    """The binary-mode CloudEvent Eventarc delivers for a published Pub/Sub message."""
    message = {
        "data": base64.b64encode(lease.body).decode(),
        "attributes": dict(lease.attributes),
        "messageId": lease.message_id,
        "publishTime": "2030-01-01T00:00:00Z",
    }
    headers = {
        "ce-id": lease.message_id,
        "ce-specversion": "1.0",
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/{inbox}",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "Content-Type": "application/json",
    }
    body = {"message": message, "subscription": f"projects/{project}/subscriptions/{inbox}"}
    return headers, json.dumps(body).encode()


async def push_inbox(cloud: Cloud, project: str, inbox: str, stop: asyncio.Event) -> None:
    """Pub/Sub push: deliver each inbox message to the conductor; ack on 2xx, else retry."""
    while not stop.is_set():
        leases = await cloud.bus.receive(
            source=Queue(inbox), max_messages=10, visibility_timeout_s=60, wait_s=0.3
        )
        for lease in leases:
            headers, body = cloud_event(project, inbox, lease)
            response = await asyncio.to_thread(
                cloud.conductor.post, "/", headers=headers, data=body
            )
            cloud.pushed.append(response.status_code)
            if response.status_code < 300:
                await cloud.bus.ack(lease=lease)
            else:
                await cloud.bus.release(lease=lease, delay_s=1)


async def cloud_scheduler(cloud: Cloud, audience: str, stop: asyncio.Event) -> None:
    token = cloud.tokens.issue(CALLER, audience)
    while not stop.is_set():
        response = await asyncio.to_thread(
            cloud.api.post, "/internal/housekeeping", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200, response.get_data()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    project = f"e2e-{uuid.uuid4().hex[:8]}"
    settings = SkycrawlSettings(
        allow_cidrs=["127.0.0.0/8"],
        idle_ttl_s=2.0,
        heartbeat_interval_s=0.5,
        heartbeat_timeout_s=20.0,
        startup_timeout_s=30.0,
        checkpoint_interval_s=0.5,
        stop_grace_s=3.0,
        operator_key=OPERATOR_KEY,
    )
    tokens = FakeIdTokens()
    with FakeGcsServer(buckets=["skycrawl-e2e"]) as gcs:
        gcp = GcpSettings(
            project=project,
            bucket="skycrawl-e2e",
            pubsub_emulator_host=emulators.pubsub_host(),
            storage_emulator_host=gcs.url,
            timer_url=TIMER_URL,
            timer_service_account=CALLER,
        )
        apps: dict[str, Any] = {}

        async def post(url: str, headers: dict[str, str], body: bytes) -> int:
            assert url == TIMER_URL
            response = await asyncio.to_thread(
                apps["api"].post, "/internal/timers", headers=headers, data=body
            )
            return int(response.status_code)

        tasks = FakeCloudTasks(post, tokens)
        stack = build_gcp_stack(
            settings,
            gcp,
            clients=lambda: GcpClients(firestore=emulators.firestore_client(project), tasks=tasks),  # type: ignore[arg-type]
            runtime=lambda: SubprocessRuntime(
                command=(sys.executable, "-m", "engine_container"),
                log_dir=tmp_path / "logs",
                close_grace_s=3.0,
            ),
            verifier=tokens,
        )
        previous = bootstrap.install_stack(stack)
        publisher, subscriber = pubsub_clients(gcp.pubsub_emulator_host)
        bus = PubSubMessageBus(project=project, publisher=publisher, subscriber=subscriber)
        try:
            stack.run(stack.prepare())
            apps["api"] = functions_framework.create_app("api", MAIN).test_client()
            conductor = functions_framework.create_app("conductor", MAIN).test_client()
            cloud = Cloud(
                stack, apps["api"], conductor, tasks, tokens, bus, subscriber, [], publisher
            )
            stop = asyncio.Event()
            background = [
                asyncio.create_task(push_inbox(cloud, project, settings.inbox_queue, stop)),
                asyncio.create_task(tasks.dispatch(stop)),
                asyncio.create_task(cloud_scheduler(cloud, gcp.audience, stop)),
            ]
            try:
                yield cloud
            finally:
                stop.set()
                await asyncio.gather(*background)
        finally:
            await bus.close()
            await asyncio.to_thread(stack.close)
            bootstrap.install_stack(previous)


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def test_crawl_on_gcp_adapters_completes_and_scales_to_zero(cloud: Cloud) -> None:
    stack = cloud.stack
    created = await cloud.json(
        "POST", "/v1/tenants", OPERATOR_KEY, {"name": "acme", "quotas": {"max_containers": 2}}
    )
    tenant_id, key = created["id"], created["api_key"]
    topic = tenant_topic(stack.settings.dispatch_topic, tenant_id)  # the tenant's own
    assert created["resources"]["dispatch_topic"] == topic
    await cloud.publisher.get_topic(topic=cloud.bus.topic_path(topic))

    async with serve_site(pages=30) as site:
        submitted = await cloud.call(
            "POST", "/v1/crawls", key, {"seeds": [site.url], "max_pages": 200, "max_depth": 20}
        )
        assert submitted.status_code == 202, submitted.get_data()
        crawl_id = submitted.get_json()["id"]
        status: dict[str, Any] = {}

        async def finished() -> bool:
            nonlocal status
            status = await cloud.json("GET", f"/v1/crawls/{crawl_id}", key)
            return status["status"] in ("completed", "failed", "dead-lettered", "cancelled")

        await wait_for(finished, 90, "the crawl to finish")
    assert status["status"] == "completed", status
    assert status["counts"]["fetched"] == 31  # "/" and /p/0 ... /p/29
    container_id = status["container_id"]

    urls: list[str] = []
    cursor = ""
    while True:
        page = await cloud.json("GET", f"/v1/crawls/{crawl_id}/pages?limit=10{cursor}", key)
        urls += [item["url"] for item in page["items"]]
        if not page.get("next_cursor"):
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert len(urls) == len(set(urls)) == 31
    export = await cloud.call("GET", f"/v1/crawls/{crawl_id}/export?format=jsonl", key)
    assert export.status_code == 200
    assert len(export.get_data().splitlines()) == 31
    manifest = await stack.ports.blobs.list(prefix=f"tenants/{tenant_id}/crawls/{crawl_id}/")
    assert any("/manifest/" in k for k in manifest)
    assert any("/warc/" in k for k in manifest)

    async def stopped() -> bool:
        found = stack.records.containers.get(tenant_id, container_id)
        record = await asyncio.to_thread(stack.run, found)
        return record is not None and not record.value.state.live

    await wait_for(stopped, 30, "the idle container to be stopped by its kill timer")
    record = stack.run(stack.records.containers.get(tenant_id, container_id))
    assert record is not None
    assert (record.value.state.value, record.value.reason) == ("stopped", "idle")
    timers = [t for t in cloud.tasks.dispatched if t.http_request.url == TIMER_URL]
    assert timers, "the kill timer went through Cloud Tasks and /internal/timers"
    assert all(
        t.http_request.oidc_token.service_account_email == CALLER for t in cloud.tasks.created
    )
    assert stack.run(stack.ports.list_running(stack.settings.egresses)) == []
    with pytest.raises(gexc.NotFound):  # its dispatch subscription is gone
        await cloud.subscriber.get_subscription(
            subscription=cloud.bus.subscription_path(subscription_name(container_id))
        )
    assert cloud.pushed
    assert all(code < 300 for code in cloud.pushed)
    # deleting the tenant removes its topic, dead-letter topic and that topic's subscription
    response = await cloud.call("DELETE", f"/v1/tenants/{tenant_id}", OPERATOR_KEY)
    assert response.status_code == 204
    for path in (cloud.bus.topic_path(topic), cloud.bus.topic_path(f"{topic}-dlq")):
        with pytest.raises(gexc.NotFound):
            await cloud.publisher.get_topic(topic=path)
    with pytest.raises(gexc.NotFound):
        await cloud.subscriber.get_subscription(
            subscription=cloud.bus.subscription_path(f"{topic}-dlq")
        )
