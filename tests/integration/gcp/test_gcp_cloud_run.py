"""CloudRunRuntime against the Cloud Run fake: the run request it sends, and finding a GUID's
execution from an instance that did not start it (a stateless conductor)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest

from adapters.gcp.container_runtime import CloudRunRuntime
from core.models import Egress
from core.ports import ContainerSpec, RunState
from tests.integration.gcp.fake_cloud_run import FakeCloudRun

JOB = "projects/p/locations/europe-west1/jobs/skycrawl-engine"
SLEEPER = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\ntime.sleep(60)"


@pytest.fixture
def run() -> Iterator[FakeCloudRun]:
    fake = FakeCloudRun(kill_after_s=1.0)
    fake.add_job(JOB, (sys.executable, "-c", SLEEPER), env={"FROM_JOB": "1"})
    yield fake
    fake.shutdown()


def runtime(run: FakeCloudRun, **options: object) -> CloudRunRuntime:
    return CloudRunRuntime(jobs=run, executions=run, tasks=run, job=JOB, **options)  # type: ignore[arg-type]


EGRESS = Egress(name="eu", region="europe-west1", proxy_url="http://proxy.test:3128")


def spec(guid: str) -> ContainerSpec:
    return ContainerSpec(guid, "tenant-1", EGRESS, env={"SKYCRAWL_PROVIDER": "gcp"})


async def test_start_sends_one_task_with_the_environment_as_overrides(run: FakeCloudRun) -> None:
    await runtime(run, container="engine").start_container(spec=spec("g-1"))
    [request] = run.requests
    assert request.name == JOB
    assert request.overrides.task_count == 1
    [override] = request.overrides.container_overrides
    assert override.name == "engine"
    assert {v.name: v.value for v in override.env} == {
        "SKYCRAWL_PROVIDER": "gcp",
        "SKYCRAWL_CONTAINER_ID": "g-1",
        "SKYCRAWL_TENANT_ID": "tenant-1",
        "SKYCRAWL_EGRESS_NAME": "eu",
        "SKYCRAWL_PROXY_URL": "http://proxy.test:3128",
    }


async def test_a_fresh_instance_finds_stops_and_lists_by_guid(run: FakeCloudRun) -> None:
    starter = runtime(run)
    await starter.start_container(spec=spec("g-2"))
    await starter.start_container(spec=spec("g-2"))  # still running: a no-op
    await starter.start_container(spec=spec("g-3"))
    assert len(run.requests) == 2

    other = runtime(run)  # another conductor instance: knows no execution names
    assert (await other.describe(container_id="g-2", egress=EGRESS)).state is RunState.running
    assert sorted(s.container_id for s in await other.list_running(egress=EGRESS)) == ["g-2", "g-3"]
    await asyncio.sleep(0.5)  # let it install its SIGTERM handler
    await other.stop_container(container_id="g-2", egress=EGRESS)
    for _ in range(100):
        status = await runtime(run).describe(container_id="g-2", egress=EGRESS)
        if status.state is RunState.exited:
            break
        await asyncio.sleep(0.05)
    assert (status.state, status.exit_code) == (RunState.exited, 0)
    assert [s.container_id for s in await other.list_running(egress=EGRESS)] == ["g-3"]
    await other.stop_container(container_id="g-2", egress=EGRESS)  # finished: a no-op


async def test_two_instances_starting_one_guid_make_one_execution(run: FakeCloudRun) -> None:
    """A start redelivered to another conductor instance finds the running execution by the
    GUID in its environment instead of running the job a second time (and billing twice)."""
    await runtime(run).start_container(spec=spec("g-dup"))
    await runtime(run).start_container(spec=spec("g-dup"))
    assert len(run.requests) == 1
    listed = [s.container_id for s in await runtime(run).list_running(egress=EGRESS)]
    assert listed == ["g-dup"]


async def test_a_guid_whose_execution_ended_can_be_started_again(run: FakeCloudRun) -> None:
    first = runtime(run)
    await first.start_container(spec=spec("g-again"))
    await asyncio.sleep(0.5)  # let it install its SIGTERM handler
    await first.stop_container(container_id="g-again", egress=EGRESS)
    for _ in range(100):
        if (await first.describe(container_id="g-again", egress=EGRESS)).state is RunState.exited:
            break
        await asyncio.sleep(0.05)
    await runtime(run).start_container(spec=spec("g-again"))
    assert len(run.requests) == 2


async def test_lookup_is_bounded(run: FakeCloudRun) -> None:
    starter = runtime(run)
    for guid in ("old", "new-1", "new-2"):
        await starter.start_container(spec=spec(guid))
    bounded = runtime(run, lookup_limit=2)  # newest first: "old" is out of reach
    assert (await bounded.describe(container_id="new-1", egress=EGRESS)).state is RunState.running
    assert (await bounded.describe(container_id="old", egress=EGRESS)).state is RunState.unknown
