"""A tenant's containers run as the tenant's service account: CloudRunRuntime runs them on the
tenant's own copy of the engine job (Cloud Run sets the identity per job), and before each
execution creates the container's filtered subscription as the control plane and grants the
tenant's account on it alone. The engine, refused ``create``, finds that subscription."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from adapters.gcp.container_runtime import CloudRunRuntime, tenant_job
from adapters.gcp.provisioner import GcpProvisioner
from adapters.gcp.pubsub_admin import PubSubAdmin, subscription_filter
from adapters.gcp.tenant_iam import ContainerSubscriptions, service_account_email
from core.errors import ConfigurationError
from core.layout import subscription_name
from core.models import Egress
from core.ports import ContainerSpec, RunState
from tests.integration.gcp.fake_cloud_run import FakeCloudRun
from tests.integration.gcp.iam_world import BUCKET, DISPATCH, A, B, World, open_world

SLEEPER = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\ntime.sleep(60)"
EGRESS = Egress(name="us", runtime="cloud-run", region="us-central1")
SHARED = "skycrawl-engine@p.iam.gserviceaccount.com"


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with open_world() as opened:
        yield opened


@pytest.fixture
def run() -> Iterator[FakeCloudRun]:
    fake = FakeCloudRun(kill_after_s=1.0)
    yield fake
    fake.shutdown()


def job(world: World) -> str:
    return f"projects/{world.project}/locations/us-central1/jobs/skycrawl-engine"


def runtime(world: World, run: FakeCloudRun) -> CloudRunRuntime:
    if job(world) not in run.jobs():
        run.add_job(job(world), (sys.executable, "-c", SLEEPER), service_account=SHARED)
    subscriptions = ContainerSubscriptions(admin=world.bus.admin, iam=world.iam)
    return CloudRunRuntime(
        jobs=run,  # type: ignore[arg-type]
        executions=run,  # type: ignore[arg-type]
        tasks=run,  # type: ignore[arg-type]
        job=job(world),
        subscriptions=subscriptions,
    )


async def spec(world: World, tenant: str, guid: str) -> ContainerSpec:
    """What the conductor passes: the tenant's resources from provisioning."""
    provisioner = GcpProvisioner(
        admin=world.bus.admin,
        storage_client=world.gcs.client(world.project),
        bucket=BUCKET,
        dispatch_topic=DISPATCH,
        iam=world.iam,
    )
    resources = await provisioner.provision(tenant_id=tenant)
    env = {"SKYCRAWL_DISPATCH_TOPIC": world.dispatch(tenant)}
    return ContainerSpec(guid, tenant, EGRESS, env=env, resources=resources)


def execution_of(run: FakeCloudRun, guid: str) -> Any:
    return run.started(guid)


async def test_the_tenants_container_runs_on_its_job_as_its_account(
    world: World, run: FakeCloudRun
) -> None:
    cloud_run = runtime(world, run)
    await cloud_run.start_container(spec=await spec(world, A, "g-1"))
    await cloud_run.start_container(spec=await spec(world, A, "g-2"))
    mine = tenant_job(job(world), A)
    assert mine in run.jobs()
    assert [r.name for r in run.requests] == [mine, mine]  # one job, made once
    for guid in ("g-1", "g-2"):
        execution = execution_of(run, guid)
        assert execution.job == mine
        assert execution.service_account == service_account_email(world.project, A)
        assert execution.message().template.service_account != SHARED


async def test_a_tenant_recorded_before_identities_runs_as_the_account_its_id_names(
    world: World, run: FakeCloudRun
) -> None:
    """Its stored resources lack ``engine_service_account``; provisioning it again (which made
    the account) is the whole upgrade."""
    made = await spec(world, A, "g-1")
    old = {k: v for k, v in made.resources.items() if k != "engine_service_account"}
    await runtime(world, run).start_container(
        spec=ContainerSpec("g-1", A, EGRESS, env=dict(made.env), resources=old)
    )
    assert run.started("g-1").job == tenant_job(job(world), A)
    assert run.started("g-1").service_account == service_account_email(world.project, A)
    assert world.may(A, "pubsub.subscriptions.consume", world.subscription("g-1"))


async def test_the_subscription_is_made_and_granted_before_the_container_starts(
    world: World, run: FakeCloudRun
) -> None:
    cloud_run = runtime(world, run)
    await cloud_run.start_container(spec=await spec(world, A, "g-1"))
    await spec(world, B, "g-b")  # B provisioned, no container
    sub = world.subscription("g-1")
    found = await world.bus.admin.subscriber.get_subscription(subscription=sub)
    assert found.filter == subscription_filter({"container_id": "g-1"})
    assert world.may(A, "pubsub.subscriptions.consume", sub)
    assert not world.may(B, "pubsub.subscriptions.consume", sub)


async def test_another_instance_finds_and_stops_a_tenant_jobs_execution(
    world: World, run: FakeCloudRun
) -> None:
    """Stateless conductors: the GUID's execution is looked up across the location's jobs."""
    await runtime(world, run).start_container(spec=await spec(world, A, "g-1"))
    other = runtime(world, run)
    assert (await other.describe(container_id="g-1", egress=EGRESS)).state is RunState.running
    assert [s.container_id for s in await other.list_running(egress=EGRESS)] == ["g-1"]
    await other.stop_container(container_id="g-1", egress=EGRESS)
    execution_of(run, "g-1").process.wait(10)
    assert (await other.describe(container_id="g-1", egress=EGRESS)).state is RunState.exited


async def test_teardown_deletes_the_tenants_job(world: World, run: FakeCloudRun) -> None:
    cloud_run = runtime(world, run)
    made = await spec(world, A, "g-1")
    await cloud_run.start_container(spec=made)
    await cloud_run.stop_container(container_id="g-1", egress=EGRESS)
    execution_of(run, "g-1").process.wait(10)
    provisioner = GcpProvisioner(
        admin=world.bus.admin,
        storage_client=world.gcs.client(world.project),
        bucket=BUCKET,
        dispatch_topic=DISPATCH,
        iam=world.iam,
        tenant_jobs=[cloud_run],
    )
    await provisioner.teardown(tenant_id=A, resources=made.resources)
    assert run.jobs() == {job(world)}
    await provisioner.teardown(tenant_id=A, resources=made.resources)  # again: fine


class _RefusesCreate:
    """The subscriber client as a tenant's account sees it: no ``subscriptions.create``."""

    def __init__(self, real: Any) -> None:
        self._real = real

    async def create_subscription(self, **_: Any) -> None:
        raise gexc.PermissionDenied("pubsub.subscriptions.create denied")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def test_the_engine_refused_create_uses_the_subscription_made_for_it(
    world: World, run: FakeCloudRun
) -> None:
    await runtime(world, run).start_container(spec=await spec(world, A, "g-1"))
    engine = PubSubAdmin(
        project=world.project,
        publisher=world.publisher,
        subscriber=_RefusesCreate(world.bus.admin.subscriber),  # type: ignore[arg-type]
    )
    name = subscription_name("g-1")
    await engine.ensure_container_subscription(world.dispatch(A), name, {"container_id": "g-1"})
    with pytest.raises(ConfigurationError):  # one not made for it: the refusal stands
        await engine.ensure_container_subscription(
            world.dispatch(A), subscription_name("g-9"), {"container_id": "g-9"}
        )


def browser_job(world: World) -> str:
    return f"projects/{world.project}/locations/us-central1/jobs/skycrawl-engine-browser"


def runtime_with_browser_job(world: World, run: FakeCloudRun) -> CloudRunRuntime:
    plain = runtime(world, run)  # registers the plain job
    if browser_job(world) not in run.jobs():
        run.add_job(browser_job(world), (sys.executable, "-c", SLEEPER), service_account=SHARED)
    return CloudRunRuntime(
        jobs=run,  # type: ignore[arg-type]
        executions=run,  # type: ignore[arg-type]
        tasks=run,  # type: ignore[arg-type]
        job=job(world),
        browser_job=browser_job(world),
        subscriptions=plain._subscriptions,
    )


async def test_a_container_for_a_crawl_that_renders_runs_on_the_browser_job(
    world: World, run: FakeCloudRun
) -> None:
    """A Cloud Run job has one image: the browser image is a job of its own
    (``SKYCRAWL_GCP_RUN_BROWSER_JOB``), copied per tenant like the plain one."""
    cloud_run = runtime_with_browser_job(world, run)
    made = await spec(world, A, "g-plain")
    await cloud_run.start_container(spec=made)
    await cloud_run.start_container(
        spec=dataclasses.replace(made, container_id="g-render", browser=True)
    )

    assert run.started("g-plain").job == tenant_job(job(world), A)
    assert run.started("g-render").job == tenant_job(browser_job(world), A)
    assert run.started("g-render").service_account == service_account_email(world.project, A)
    other = runtime_with_browser_job(world, run)  # another instance finds both
    running = sorted(s.container_id for s in await other.list_running(egress=EGRESS))
    assert running == ["g-plain", "g-render"]
    for guid in running:
        await other.stop_container(container_id=guid, egress=EGRESS)
        execution_of(run, guid).process.wait(10)
    provisioner = GcpProvisioner(
        admin=world.bus.admin,
        storage_client=world.gcs.client(world.project),
        bucket=BUCKET,
        dispatch_topic=DISPATCH,
        iam=world.iam,
        tenant_jobs=[cloud_run],
    )
    await provisioner.teardown(tenant_id=A, resources=made.resources)
    assert run.jobs() == {job(world), browser_job(world)}  # the tenant's copies are gone
