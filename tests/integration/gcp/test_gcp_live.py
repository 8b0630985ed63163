"""Opt-in tests against real Google Cloud: what only the real services can show.

Run with Application Default Credentials and ``SKYCRAWL_GCP_LIVE_PROJECT=<project>``:

* Pub/Sub really applies subscription filters (the emulator does not);
* Firestore compare-and-set, on a throw-away collection prefix;
* with ``SKYCRAWL_GCP_LIVE_BUCKET``: a Cloud Storage round trip under a throw-away prefix;
* with ``SKYCRAWL_GCP_LIVE_RUN_JOB`` (a job in ``SKYCRAWL_GCP_LIVE_REGION``, default
  us-central1, whose container sleeps until SIGTERM): start an execution with overrides, find
  it from a fresh runtime by its GUID (the execution template records overridden environment
  variables), stop it.

Each test cleans up what it made. Without the variables they are reported as skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid

import pytest
from google.api_core import exceptions as gexc

from adapters.gcp.blob_store import GcsBlobStore
from adapters.gcp.container_runtime import CloudRunRuntime
from adapters.gcp.message_bus import PubSubMessageBus
from adapters.gcp.provider import pubsub_clients
from adapters.gcp.state_store import FirestoreStateStore
from core.errors import Conflict
from core.models import Egress
from core.ports import ContainerSpec, OutboundMessage, RunState

PROJECT = os.environ.get("SKYCRAWL_GCP_LIVE_PROJECT", "")
pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not PROJECT, reason="opt-in: set SKYCRAWL_GCP_LIVE_PROJECT (and credentials) to run"
    ),
]


def suffix() -> str:
    return uuid.uuid4().hex[:8]


async def test_live_pubsub_applies_filters() -> None:
    publisher, subscriber = pubsub_clients()
    bus = PubSubMessageBus(project=PROJECT, publisher=publisher, subscriber=subscriber)
    topic, mine, theirs = f"skycrawl-live-{suffix()}", f"a{suffix()}", f"b{suffix()}"
    try:
        await bus.ensure_topic(topic=topic)
        sub = await bus.ensure_subscription(topic=topic, name=mine, filter={"container_id": mine})
        await bus.publish(topic=topic, message=OutboundMessage(b"x", {"container_id": theirs}))
        await bus.publish(topic=topic, message=OutboundMessage(b"y", {"container_id": mine}))
        leases = await bus.receive(source=sub, visibility_timeout_s=30, wait_s=10)
        assert [lease.body for lease in leases] == [b"y"]
        await bus.ack(lease=leases[0])
    finally:
        await bus.delete_subscription(topic=topic, name=mine)
        await bus.delete_subscription(topic=topic, name=f"{topic}-dlq")
        for name in (topic, f"{topic}-dlq"):
            with contextlib.suppress(gexc.NotFound):
                await publisher.delete_topic(topic=bus.topic_path(name))
        await bus.close()


async def test_live_firestore_compare_and_set() -> None:
    from google.cloud import firestore

    store = FirestoreStateStore(
        client=firestore.AsyncClient(project=PROJECT), prefix=f"skycrawl-live-{suffix()}-"
    )
    v1 = await store.create(table="t", partition="p", key="k", data={"n": 1})
    v2 = await store.replace(item=v1, data={"n": 2})
    with pytest.raises(Conflict):
        await store.replace(item=v1, data={"n": 3})
    await store.delete(item=v2)
    assert await store.get(table="t", partition="p", key="k") is None


@pytest.mark.skipif(
    not os.environ.get("SKYCRAWL_GCP_LIVE_BUCKET"), reason="opt-in: set SKYCRAWL_GCP_LIVE_BUCKET"
)
async def test_live_cloud_storage_round_trip() -> None:
    from google.cloud import storage

    prefix = f"skycrawl-live-{suffix()}/"
    store = GcsBlobStore(
        client=storage.Client(project=PROJECT),
        bucket=os.environ["SKYCRAWL_GCP_LIVE_BUCKET"],
        prefix=prefix,
    )
    try:
        await store.put(key="a/b.json", data=b"{}", content_type="application/json")
        assert await store.get(key="a/b.json") == b"{}"
        assert await store.list(prefix="a/") == ["a/b.json"]
    finally:
        assert await store.delete_prefix(prefix="") == 1
        await store.close()


@pytest.mark.skipif(
    not os.environ.get("SKYCRAWL_GCP_LIVE_RUN_JOB"), reason="opt-in: set SKYCRAWL_GCP_LIVE_RUN_JOB"
)
async def test_live_cloud_run_finds_an_execution_by_guid() -> None:
    from google.cloud import run_v2

    region = os.environ.get("SKYCRAWL_GCP_LIVE_REGION", "us-central1")
    job = f"projects/{PROJECT}/locations/{region}/jobs/{os.environ['SKYCRAWL_GCP_LIVE_RUN_JOB']}"

    def runtime() -> CloudRunRuntime:
        return CloudRunRuntime(
            jobs=run_v2.JobsAsyncClient(),
            executions=run_v2.ExecutionsAsyncClient(),
            tasks=run_v2.TasksAsyncClient(),
            job=job,
        )

    guid = f"live-{suffix()}"
    await runtime().start_container(spec=ContainerSpec(guid, "live", Egress(name="live")))
    fresh = runtime()
    for _ in range(60):
        status = await fresh.describe(container_id=guid, egress=Egress(name="live"))
        if status.state is RunState.running:
            break
        await asyncio.sleep(2)
    assert status.state is RunState.running, status
    await fresh.stop_container(container_id=guid, egress=Egress(name="live"))
    for _ in range(30):
        status = await runtime().describe(container_id=guid, egress=Egress(name="live"))
        if status.state is RunState.exited:
            break
        await asyncio.sleep(2)
    assert status.state is RunState.exited, status
