"""One AWS deployment (moto), two runtimes at once: egress ``fargate`` starts its containers
as ECS tasks (RunTask on moto, which records them but runs nothing), egress ``here`` as
engine subprocesses on this machine -- through the same Lambda handlers, bus and state."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from adapters.aws.container_runtime import EcsRuntime
from adapters.local.container_runtime import SubprocessRuntime
from core.models import Egress
from functions.aws import bootstrap
from tests.e2e.support import serve_site
from tests.e2e.test_aws_story import AwsWorld, LambdaContext, event_source_mapping, eventbridge_rule
from tests.integration.aws import moto_server
from tests.integration.aws.moto_deployment import OPERATOR_KEY, deploy

pytestmark = pytest.mark.e2e

POOL = [
    Egress(name="fargate", runtime="ecs", region="us-east-1"),
    Egress(name="here", runtime="local", region="lab"),
]


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AwsWorld]:
    for name, value in moto_server.CREDENTIALS.items():  # engine processes inherit these
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    deployment = deploy(
        egresses=POOL,
        allow_cidrs=["127.0.0.0/8"],
        idle_ttl_s=2.0,
        heartbeat_interval_s=0.5,
        heartbeat_timeout_s=20.0,
        startup_timeout_s=60.0,
        checkpoint_interval_s=0.5,
        stop_grace_s=3.0,
    )
    local = SubprocessRuntime(
        command=(sys.executable, "-m", "engine_container"),
        log_dir=tmp_path / "logs",
        close_grace_s=3.0,
    )
    # ECS is built from the deployment's settings, as in Lambda; only "here" is given
    stack = bootstrap.build_aws_stack(deployment.settings, deployment.aws, runtimes={"here": local})
    bootstrap.install(stack)
    world = AwsWorld(stack, ThreadPoolExecutor(1, thread_name_prefix="lambda"), LambdaContext())
    stop = asyncio.Event()
    loops = [
        asyncio.create_task(event_source_mapping(world, stop)),
        asyncio.create_task(eventbridge_rule(world, stop)),
    ]
    try:
        yield world
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*loops), 15)
        await world.invoke(bootstrap.run, stack.ports.close())
        bootstrap.install(None)
        world.lambda_thread.shutdown(wait=True)


async def test_one_deployment_starts_containers_on_ecs_and_as_subprocesses(
    world: AwsWorld,
) -> None:
    w, stack = world, world.stack
    assert isinstance(stack.ports.runtime_for(POOL[0]), EcsRuntime)
    assert isinstance(stack.ports.runtime_for(POOL[1]), SubprocessRuntime)
    created = await w.http(
        "POST", "/v1/tenants", OPERATOR_KEY, body={"name": "acme", "quotas": {"max_containers": 2}}
    )
    key = created["id"], created["api_key"]
    async with serve_site(pages=5) as site:
        body: dict[str, Any] = {"seeds": [site.url], "max_pages": 10}
        far = await w.http("POST", "/v1/crawls", key[1], body={**body, "egress": "fargate"})
        near = await w.http("POST", "/v1/crawls", key[1], body={**body, "egress": "here"})
        status: dict[str, Any] = {}

        async def near_done() -> bool:
            nonlocal status
            status = await w.http("GET", f"/v1/crawls/{near['id']}", key[1])
            return status["status"] not in ("pending", "dispatched")

        await w.wait_for(near_done, 60, "the subprocess crawl to finish")
    assert status["status"] == "completed", status
    assert status["counts"]["fetched"] == 6

    far_status = await w.http("GET", f"/v1/crawls/{far['id']}", key[1])
    assert far_status["status"] == "dispatched"  # reserved on its ECS task, which moto never runs
    listed = await w.http("GET", "/v1/containers", OPERATOR_KEY)
    where = {c["id"]: (c["egress"]["name"], c["runtime"], c["region"]) for c in listed["items"]}
    assert where[far_status["container_id"]] == ("fargate", "ecs", "us-east-1")
    assert where[status["container_id"]] == ("here", "local", "lab")

    ecs = moto_server.client("ecs")
    arns = await asyncio.to_thread(
        ecs.list_tasks, cluster=stack.aws.cluster, startedBy=far_status["container_id"]
    )
    (task,) = (
        await asyncio.to_thread(
            ecs.describe_tasks, cluster=stack.aws.cluster, tasks=arns["taskArns"], include=["TAGS"]
        )
    )["tasks"]
    tags = {t["key"]: t["value"] for t in task["tags"]}
    assert tags["skycrawl:egress"] == "fargate"
    # each runtime lists only its own egress's containers
    ecs_listed = await w.invoke(bootstrap.run, stack.ports.list_running([POOL[0]]))
    assert [s.container_id for s in ecs_listed] == [far_status["container_id"]]
    near_listed = await w.invoke(bootstrap.run, stack.ports.list_running([POOL[1]]))
    assert far_status["container_id"] not in [s.container_id for s in near_listed]
