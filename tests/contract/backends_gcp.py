"""GCP backends of the contract suites (see ``backend_factories`` in conftest.py).

============  ===================  ===================================================
port          id                   backed by
============  ===================  ===================================================
bus           pubsub-emulator      PubSubMessageBus on Google's Pub/Sub emulator
scheduler     cloudtasks-fake      CloudTasksScheduler on FakeCloudTasks, whose dispatcher
                                   calls the timer endpoint's logic (OIDC check, delivery)
state         firestore-emulator   FirestoreStateStore on Google's Firestore emulator
blob          gcs-fake             GcsBlobStore, real client, on FakeGcsServer (HTTP)
runtime       cloudrun-fake        CloudRunRuntime on FakeCloudRun (local processes)
provisioner   pubsub+gcs           GcpProvisioner on the Pub/Sub emulator + FakeGcsServer
              pubsub+gcs+iam       the same with tenant identities, on the IAM fakes
============  ===================  ===================================================

The emulators start lazily, on the first test that needs one (``emulators.py``), never at
import. They run on the wall clock, so the harnesses' ``elapse`` really sleeps (a
``SystemClock``); Pub/Sub leases have whole-second granularity, hence ``visibility_s=1``.
The emulator ignores subscription filters, which the bus reports as
``capabilities.filters_applied=False``; ``tests/integration/gcp/test_gcp_pubsub.py`` checks
that the filter is stored and that the capability tells the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import re
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc

from adapters.gcp.blob_store import GcsBlobStore
from adapters.gcp.container_runtime import CloudRunRuntime
from adapters.gcp.message_bus import PubSubMessageBus
from adapters.gcp.provider import pubsub_clients
from adapters.gcp.provisioner import GcpProvisioner
from adapters.gcp.pubsub_admin import PubSubAdmin
from adapters.gcp.scheduler import CloudTasksScheduler, deliver_timer
from adapters.gcp.state_store import FirestoreStateStore
from adapters.gcp.tenant_iam import TenantIam
from adapters.gcp.tenant_stores import FirestoreTenantStores
from core.clock import SystemClock
from core.errors import SkycrawlError
from core.ports import ContainerRuntime, StateStore
from functions.gcp.oidc import authorize
from tests.contract.harness import (
    BusHarness,
    ProvisionerHarness,
    RuntimeHarness,
    SchedulerHarness,
    StateHarness,
    TenantStoresHarness,
)
from tests.integration.gcp import emulators
from tests.integration.gcp.fake_cloud_run import FakeCloudRun
from tests.integration.gcp.fake_cloud_tasks import FakeCloudTasks, FakeIdTokens
from tests.integration.gcp.fake_iam import FakeIamAdmin, FakePubSubIam
from tests.integration.gcp.fakes import FakeGcsServer
from tests.integration.gcp.gcp_iam_eval import from_bucket, from_pubsub

TIMER_URL = "https://api.example.test/internal/timers"
TIMER_ACCOUNT = "timers@skycrawl-test.iam.gserviceaccount.com"
QUEUE_PATH = "projects/skycrawl-test/locations/us-central1/queues/skycrawl-timers"


def open_pubsub_bus() -> PubSubMessageBus:
    publisher, subscriber = pubsub_clients(emulators.pubsub_host())
    return PubSubMessageBus(
        project=emulators.PROJECT, publisher=publisher, subscriber=subscriber, emulator=True
    )


@contextlib.asynccontextmanager
async def pubsub_bus(tmp: Path) -> AsyncIterator[BusHarness]:
    opened: list[PubSubMessageBus] = []

    def open_bus() -> PubSubMessageBus:
        opened.append(open_pubsub_bus())
        return opened[-1]

    try:
        yield BusHarness(bus=open_bus(), clock=SystemClock(), reopen=open_bus, visibility_s=1.0)
    finally:
        for bus in opened:
            await bus.close()


@contextlib.asynccontextmanager
async def cloud_tasks_scheduler(tmp: Path) -> AsyncIterator[SchedulerHarness]:
    """Cloud Tasks (fake) calling the timer endpoint's logic: token check, then delivery."""
    bus, tokens = open_pubsub_bus(), FakeIdTokens()

    async def timer_endpoint(url: str, headers: dict[str, str], body: bytes) -> int:
        try:
            authorize(
                headers.get("Authorization"),
                verifier=tokens,
                audience=TIMER_URL,
                callers=[TIMER_ACCOUNT],
            )
            await deliver_timer(bus, body)
        except SkycrawlError:
            return 403
        return 204

    tasks = FakeCloudTasks(timer_endpoint, tokens)
    clock = SystemClock()
    scheduler = CloudTasksScheduler(
        client=tasks,  # type: ignore[arg-type]
        queue_path=QUEUE_PATH,
        timer_url=TIMER_URL,
        service_account=TIMER_ACCOUNT,
        bus=bus,
        clock=clock,
    )
    stop = asyncio.Event()
    dispatcher = asyncio.create_task(tasks.dispatch(stop))
    try:
        yield SchedulerHarness(scheduler=scheduler, bus=bus, clock=clock)
    finally:
        stop.set()
        await dispatcher
        await bus.close()


@contextlib.asynccontextmanager
async def firestore_state(tmp: Path) -> AsyncIterator[StateHarness]:
    clock = SystemClock()

    def open_store() -> FirestoreStateStore:
        return FirestoreStateStore(client=emulators.firestore_client(), clock=clock)

    yield StateHarness(store=open_store(), clock=clock, reopen=open_store)


async def tenant_store_names(client: Any, prefix: str) -> set[str]:
    """The tenant stores of ``prefix`` that exist on the emulator, from Firestore's own
    listing: a store's marker document, and any root collection ``<store name>-…``."""
    markers = client.collection(f"{prefix}tenant-stores").list_documents()
    found = {ref.id async for ref in markers}
    pattern = re.compile(rf"({re.escape(prefix)}t-.*-[0-9a-f]{{8}})-[a-z_]+")
    async for collection in client.collections():
        if match := pattern.fullmatch(collection.id):
            found.add(match.group(1))
    return found


@contextlib.asynccontextmanager
async def firestore_tenant_stores(tmp: Path) -> AsyncIterator[TenantStoresHarness]:
    prefix, clock = f"sc{uuid.uuid4().hex[:8]}-", SystemClock()
    client = emulators.firestore_client()
    control = FirestoreStateStore(client=client, prefix=prefix, clock=clock)
    stores = FirestoreTenantStores(client=client, prefix=prefix, clock=clock, owns_client=False)
    try:
        yield TenantStoresHarness(stores, control, lambda: tenant_store_names(client, prefix))
    finally:
        await stores.close()
        await control.close()


@contextlib.asynccontextmanager
async def firestore_tenant_state(tmp: Path) -> AsyncIterator[StateHarness]:
    """A tenant's own collections must keep every promise of the StateStore port."""
    clock = SystemClock()
    stores = FirestoreTenantStores(client=emulators.firestore_client(), clock=clock)
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    await stores.create_store(tenant_id=tenant)
    opened: list[StateStore] = []

    def open_store() -> StateStore:
        opened.append(stores.open_store(tenant))
        return opened[-1]

    try:
        yield StateHarness(store=open_store(), clock=clock, reopen=open_store)
    finally:
        await stores.drop_store(tenant_id=tenant)
        await stores.close()


@contextlib.asynccontextmanager
async def gcs_blobs(tmp: Path) -> AsyncIterator[GcsBlobStore]:
    with FakeGcsServer(buckets=["skycrawl-blobs"]) as server:
        store = GcsBlobStore(client=server.client(), bucket="skycrawl-blobs")
        try:
            yield store
        finally:
            await store.close()


@contextlib.asynccontextmanager
async def cloud_run_runtime(tmp: Path) -> AsyncIterator[RuntimeHarness]:
    """Executions of a (fake) Cloud Run job whose command runs the suite's workload script.
    SIGKILL follows SIGTERM after 1 s instead of Cloud Run's fixed 10 s (see the fake)."""
    run = FakeCloudRun(kill_after_s=1.0)
    out = tmp / "out"
    out.mkdir()

    def make(script: str) -> ContainerRuntime:
        job = f"projects/skycrawl-test/locations/us-central1/jobs/engine-{hashlib.sha1(script.encode()).hexdigest()[:8]}"
        run.add_job(job, (sys.executable, "-c", script))
        return CloudRunRuntime(jobs=run, executions=run, tasks=run, job=job)  # type: ignore[arg-type]

    harness = RuntimeHarness(make=make, out_dir=out)
    try:
        yield harness
    finally:
        for runtime in harness.opened:
            await runtime.close()
        run.shutdown()


@contextlib.asynccontextmanager
async def gcp_provisioner(
    tmp: Path, *, identities: bool = False, dedicated: bool = False
) -> AsyncIterator[ProvisionerHarness]:
    """Per-tenant dispatch topic on the Pub/Sub emulator, marker in the GCS fake; with
    ``identities``, the tenant's service account and bindings on the IAM fakes too; with
    ``dedicated`` tenant data, the tenant's Firestore collections (on the emulator)."""
    publisher, subscriber = pubsub_clients(emulators.pubsub_host())
    admin = PubSubAdmin(project=emulators.PROJECT, publisher=publisher, subscriber=subscriber)
    accounts = FakeIamAdmin()
    firestore_prefix = f"sc{uuid.uuid4().hex[:8]}-"
    database = emulators.firestore_client() if dedicated else None
    stores = (
        FirestoreTenantStores(client=database, prefix=firestore_prefix)
        if database is not None
        else None
    )

    async def found(resource: str) -> bool:
        try:
            if "/subscriptions/" in resource:
                await subscriber.get_subscription(subscription=resource)
            else:
                await publisher.get_topic(topic=resource)
        except gexc.NotFound:
            return False
        return True

    policies = FakePubSubIam(found)
    with FakeGcsServer(buckets=["skycrawl-blobs"]) as server:
        client = server.client()
        base = f"dispatch-{uuid.uuid4().hex[:8]}"
        iam = TenantIam(
            project=emulators.PROJECT,
            bucket="skycrawl-blobs",
            iam=accounts,  # type: ignore[arg-type]
            topics=policies,
            subscriptions=policies,
            storage_client=client,
            inbox_queue=f"{base}-inbox",
            dispatch_topic=base,
            backoff_s=0.01,
        )
        if identities:
            await admin.ensure_queue(f"{base}-inbox", 5)
        provisioner = GcpProvisioner(
            admin=admin,
            storage_client=client,
            bucket="skycrawl-blobs",
            dispatch_topic=base,
            iam=iam if identities else None,
            stores=stores,
        )

        async def stored() -> set[str]:
            if database is None:
                return set()
            return await tenant_store_names(database, firestore_prefix)

        async def exists(resources: Mapping[str, str]) -> bool:
            try:
                for kind, ref in resources.items():
                    if kind == "tenant_store":
                        if ref not in await stored():
                            return False
                    elif kind == "engine_service_account":
                        if ref not in accounts.accounts:
                            return False
                    elif kind == "dispatch_topic":
                        await publisher.get_topic(topic=admin.topic_path(ref))
                    else:
                        bucket, _, key = ref.removeprefix("gs://").partition("/")
                        if not await asyncio.to_thread(client.bucket(bucket).blob(key).exists):
                            return False
            except gexc.NotFound:
                return False
            return True

        async def inventory() -> set[str]:
            """The harness's topics and subscriptions on the emulator, and every object."""
            project = f"projects/{emulators.PROJECT}"
            found = {f"topic:{t.name}" async for t in await publisher.list_topics(project=project)}
            found |= {
                f"subscription:{s.name}"
                async for s in await subscriber.list_subscriptions(project=project)
            }
            found = {f for f in found if f.rsplit("/", 1)[-1].startswith(base)}
            blobs = await asyncio.to_thread(lambda: list(client.list_blobs("skycrawl-blobs")))
            found |= {f"firestore:{name}" for name in await stored()}
            found |= {f"object:{b.name}" for b in blobs}
            found |= {f"account:{email}" for email in accounts.accounts}
            await policies.prune()
            grants = [(r, from_pubsub(p)) for r, p in policies.bindings().items()]
            grants += [(f"bucket:{b}", from_bucket(p)) for b, p in server.state.policies.items()]
            return found | {
                f"grant:{resource}:{binding.role}:{who}"
                for resource, bindings in grants
                for binding in bindings
                for who in binding.members
            }

        try:
            yield ProvisionerHarness(provisioner=provisioner, exists=exists, inventory=inventory)
        finally:
            for closable in (publisher, subscriber):
                await closable.transport.close()
            client.close()
            if stores is not None:
                await stores.close()


FACTORIES = {
    "provisioner": {
        "pubsub+gcs": gcp_provisioner,
        "pubsub+gcs+iam": functools.partial(gcp_provisioner, identities=True),
        "pubsub+gcs-dedicated": functools.partial(gcp_provisioner, dedicated=True),
    },
    "tenant_stores": {"firestore-emulator": firestore_tenant_stores},
    "runtime": {"cloudrun-fake": cloud_run_runtime},
    "blob": {"gcs-fake": gcs_blobs},
    "bus": {"pubsub-emulator": pubsub_bus},
    "scheduler": {"cloudtasks-fake": cloud_tasks_scheduler},
    "state": {"firestore-emulator": firestore_state, "firestore-tenant": firestore_tenant_state},
}
