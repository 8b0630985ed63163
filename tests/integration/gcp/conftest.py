"""Fixtures of the GCP integration tests: adapters on Google's emulators (started once per
session by ``emulators``), the fakes of ``fakes.py``, ``fake_cloud_run.py`` and
``fake_cloud_tasks.py``, and a whole functions stack (``gcp_stack``) for the entry points."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from adapters.gcp.container_runtime import CloudRunRuntime
from adapters.gcp.message_bus import PubSubMessageBus
from adapters.gcp.provider import GcpClients, pubsub_clients
from adapters.gcp.settings import GcpSettings
from adapters.gcp.state_store import FirestoreStateStore
from core.settings import SkycrawlSettings
from functions.gcp.bootstrap import GcpStack, build_gcp_stack
from tests.integration.gcp import emulators
from tests.integration.gcp.fake_cloud_run import FakeCloudRun
from tests.integration.gcp.fake_cloud_tasks import FakeCloudTasks, FakeIdTokens
from tests.integration.gcp.fakes import FakeGcsServer

OPERATOR_KEY = "op_gcp_integration_key_for_tests_only"
TIMER_URL = "https://skycrawl-api.example.test/internal/timers"
CALLER = "skycrawl-timers@skycrawl-test.iam.gserviceaccount.com"
JOB = "projects/skycrawl-test/locations/us-central1/jobs/skycrawl-engine"


@pytest.fixture(scope="session", autouse=True)
def _stop_emulators_at_the_end() -> Iterator[None]:
    yield
    emulators.stop_all()


@pytest.fixture
def names() -> Callable[[str], str]:
    return lambda stem: f"{stem}-{uuid.uuid4().hex[:8]}"


def open_bus(**options: object) -> PubSubMessageBus:
    publisher, subscriber = pubsub_clients(emulators.pubsub_host())
    return PubSubMessageBus(
        project=emulators.PROJECT,
        publisher=publisher,
        subscriber=subscriber,
        emulator=True,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
async def bus() -> AsyncIterator[PubSubMessageBus]:
    opened = open_bus()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def store() -> FirestoreStateStore:
    return FirestoreStateStore(client=emulators.firestore_client())


@pytest.fixture(scope="module")
def gcp_stack() -> Iterator[GcpStack]:
    """The functions' composition root on the emulators and fakes, with its own project."""
    project = f"it-{uuid.uuid4().hex[:8]}"
    settings = SkycrawlSettings(operator_key=OPERATOR_KEY, max_request_bytes=10_000)

    async def unused_post(url: str, headers: dict[str, str], body: bytes) -> int:
        return 204

    with FakeGcsServer(buckets=["skycrawl-it"]) as gcs:
        gcp = GcpSettings(
            project=project,
            bucket="skycrawl-it",
            pubsub_emulator_host=emulators.pubsub_host(),
            storage_emulator_host=gcs.url,
            timer_url=TIMER_URL,
            timer_service_account=CALLER,
        )
        run = FakeCloudRun()
        stack = build_gcp_stack(
            settings,
            gcp,
            clients=lambda: GcpClients(
                firestore=emulators.firestore_client(project),
                tasks=FakeCloudTasks(unused_post),  # type: ignore[arg-type]
            ),
            runtime=lambda: CloudRunRuntime(jobs=run, executions=run, tasks=run, job=JOB),  # type: ignore[arg-type]
            verifier=FakeIdTokens(),
        )
        try:
            stack.run(stack.prepare())
            yield stack
        finally:
            stack.close()
            run.shutdown()
