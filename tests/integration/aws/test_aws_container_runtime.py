"""ECS on moto, in place of the runtime contract suite.

The contract's workload is a Python script that writes files; moto's ECS records ``RunTask``
and moves task states but runs no container, so that suite cannot apply. Instead this module
checks what ``EcsRuntime`` asks ECS to do (task definition, launch type, network, public IP
per egress, overrides, tags, ``startedBy``, the tenant's task role) and how it reads tasks back
(``describe`` through moto's task states, ``stop``, ``list_running``, unknown GUIDs). moto's
state manager is set (``moto_server``) to keep tasks ``RUNNING`` until ``StopTask``.

moto accepts request shapes ECS refuses, so the runtime's client carries botocore hooks
(``EcsRules``) that record every ``ListTasks``, answer what ECS answers to a ``startedBy``
combined with another filter (``InvalidParameterException``), and apply ECS's default
``desiredStatus=RUNNING`` that moto skips when a ``startedBy`` is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.ecs.models import ecs_backends

from adapters.aws.container_runtime import EcsRuntime
from adapters.aws.provisioner import engine_role_name
from core.errors import ConfigurationError, InvalidRequest
from core.models import Egress
from core.ports import ContainerSpec, RunState
from tests.integration.aws.moto_deployment import Deployment, register_task_definition
from tests.integration.aws.moto_server import ACCOUNT, REGION, client

ROLE_PATTERN = "arn:aws:iam::123456789012:role/{role_name}"
#: What ``ListTasks`` may combine with ``startedBy``: "When you specify startedBy as the
#: filter, it must be the only filter that you use" (ECS API reference) -- besides the
#: cluster and the paging parameters.
STARTED_BY_ALONE = {"cluster", "startedBy", "nextToken", "maxResults"}


class EcsRules:
    """Records the parameters of every ``ListTasks`` and refuses what ECS refuses."""

    def __init__(self) -> None:
        self.list_tasks: list[dict[str, Any]] = []

    def register(self, ecs: Any) -> Any:
        ecs.meta.events.register("provide-client-params.ecs.ListTasks", self)
        ecs.meta.events.register("after-call.ecs.ListTasks", self.default_desired_status)
        return ecs

    def default_desired_status(self, parsed: dict[str, Any], **_: Any) -> None:
        """ECS lists only tasks whose desired status is RUNNING unless told otherwise."""
        params = self.list_tasks[-1]
        arns = parsed.get("taskArns", [])
        if "desiredStatus" in params or not arns:
            return
        tasks = client("ecs").describe_tasks(cluster=params.get("cluster"), tasks=arns)["tasks"]
        desired = {task["taskArn"]: task.get("desiredStatus") for task in tasks}
        parsed["taskArns"] = [arn for arn in arns if desired.get(arn) == "RUNNING"]

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        self.list_tasks.append(dict(params))
        if "startedBy" in params and not set(params) <= STARTED_BY_ALONE:
            others = sorted(set(params) - STARTED_BY_ALONE)
            raise ClientError(
                {
                    "Error": {
                        "Code": "InvalidParameterException",
                        "Message": f"startedBy cannot be combined with {', '.join(others)}",
                    },
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "ListTasks",
            )


def ecs_with_rules() -> tuple[Any, EcsRules]:
    rules = EcsRules()
    return rules.register(client("ecs")), rules


@pytest.fixture
def rules() -> EcsRules:
    return EcsRules()


@pytest.fixture
async def runtime(deployment: Deployment, rules: EcsRules) -> AsyncIterator[EcsRuntime]:
    aws = deployment.aws
    ecs = rules.register(client("ecs"))
    runtime = EcsRuntime(
        ecs=ecs,
        cluster=aws.cluster,
        task_definition=aws.task_definition,
        subnets=aws.subnets,
        security_groups=aws.security_groups,
        public_ip_egresses={"via-nat": False},
        tenant_task_role_arn=ROLE_PATTERN,
        stack_prefix=aws.stack_prefix,
    )
    yield runtime
    await runtime.close()


EGRESS = Egress(name="eu-proxy")


def spec(
    cid: str, egress: str = "eu-proxy", proxy: str | None = "http://proxy.test:3128"
) -> ContainerSpec:
    return ContainerSpec(
        container_id=cid,
        tenant_id="tn_1",
        egress=Egress(name=egress, proxy_url=proxy),
        env={"SKYCRAWL_PROVIDER": "aws", "SKYCRAWL_AWS_BUCKET": "data"},
    )


def task_of(deployment: Deployment, cid: str) -> dict[str, Any]:
    ecs = client("ecs")
    [arn] = ecs.list_tasks(cluster=deployment.aws.cluster, startedBy=cid)["taskArns"]
    [task] = ecs.describe_tasks(cluster=deployment.aws.cluster, tasks=[arn], include=["TAGS"])[
        "tasks"
    ]
    return dict(task)


async def test_run_task_carries_identity_settings_and_tags(
    runtime: EcsRuntime, deployment: Deployment
) -> None:
    await runtime.start_container(spec=spec("c-env"))
    task = task_of(deployment, "c-env")
    assert task["startedBy"] == "c-env"
    assert task["launchType"] == "FARGATE"
    assert task["taskDefinitionArn"].endswith(f"task-definition/{deployment.aws.task_definition}:1")
    [override] = task["overrides"]["containerOverrides"]
    env = {e["name"]: e["value"] for e in override["environment"]}
    assert override["name"] == "engine"
    assert env == {
        "SKYCRAWL_PROVIDER": "aws",
        "SKYCRAWL_AWS_BUCKET": "data",
        "SKYCRAWL_CONTAINER_ID": "c-env",
        "SKYCRAWL_TENANT_ID": "tn_1",
        "SKYCRAWL_EGRESS_NAME": "eu-proxy",
        "SKYCRAWL_PROXY_URL": "http://proxy.test:3128",
    }
    role = engine_role_name(deployment.aws.stack_prefix, "tn_1")
    assert task["overrides"]["taskRoleArn"] == ROLE_PATTERN.format(role_name=role)
    tags = {t["key"]: t["value"] for t in task["tags"]}
    assert tags == {
        "skycrawl:container-id": "c-env",
        "skycrawl:tenant": "tn_1",
        "skycrawl:egress": "eu-proxy",
    }
    [attachment] = task["attachments"]  # the task's network interface, in our subnet
    details = {d["name"]: d["value"] for d in attachment["details"]}
    assert details["subnetId"] == deployment.aws.subnets[0]


def _network_of(deployment: Deployment, cid: str) -> dict[str, Any]:
    """What RunTask was asked for networking (moto keeps it, but DescribeTasks has no field)."""
    backend = ecs_backends[ACCOUNT][REGION]
    [task] = [t for t in backend.tasks[deployment.aws.cluster].values() if t.started_by == cid]
    return dict(task.network_configuration["awsvpcConfiguration"])


async def test_public_ip_is_set_per_egress(runtime: EcsRuntime, deployment: Deployment) -> None:
    await runtime.start_container(spec=spec("c-public", egress="direct", proxy=None))
    await runtime.start_container(spec=spec("c-nat", egress="via-nat", proxy=None))
    public, private = _network_of(deployment, "c-public"), _network_of(deployment, "c-nat")
    assert (public["assignPublicIp"], private["assignPublicIp"]) == ("ENABLED", "DISABLED")
    assert public["securityGroups"] == deployment.aws.security_groups
    env = {
        e["name"]
        for e in task_of(deployment, "c-nat")["overrides"]["containerOverrides"][0]["environment"]
    }
    assert "SKYCRAWL_PROXY_URL" not in env


async def test_describe_stop_and_list(runtime: EcsRuntime, deployment: Deployment) -> None:
    await runtime.start_container(spec=spec("c-stop"))
    await runtime.start_container(spec=spec("c-stop"))  # still there: no second task
    assert (
        len(
            client("ecs").list_tasks(cluster=deployment.aws.cluster, startedBy="c-stop")["taskArns"]
        )
        == 1
    )
    assert (await runtime.describe(container_id="c-stop", egress=EGRESS)).state is RunState.running
    assert [s.container_id for s in await runtime.list_running(egress=EGRESS)] == ["c-stop"]

    await runtime.stop_container(container_id="c-stop", egress=EGRESS, grace_s=5)
    status = await runtime.describe(container_id="c-stop", egress=EGRESS)
    assert (status.state, status.exit_code) == (RunState.exited, 0)
    assert "grace 5 s" in status.detail
    assert await runtime.list_running(egress=EGRESS) == []
    await runtime.stop_container(
        container_id="c-stop", egress=EGRESS
    )  # stopping a stopped one is a no-op


async def test_each_egress_lists_only_its_own_tasks(runtime: EcsRuntime) -> None:
    """Two egresses on one cluster: listing one never shows the other's tasks."""
    await runtime.start_container(spec=spec("c-eu"))
    await runtime.start_container(spec=spec("c-us", egress="us-direct", proxy=None))
    assert [s.container_id for s in await runtime.list_running(egress=EGRESS)] == ["c-eu"]
    us = Egress(name="us-direct")
    assert [s.container_id for s in await runtime.list_running(egress=us)] == ["c-us"]
    await runtime.stop_container(container_id="c-us", egress=us)
    assert await runtime.list_running(egress=us) == []
    assert [s.container_id for s in await runtime.list_running(egress=EGRESS)] == ["c-eu"]


async def test_list_tasks_is_called_as_the_api_reference_allows(
    runtime: EcsRuntime, rules: EcsRules
) -> None:
    """``startedBy`` alone (besides the cluster); stopped tasks by family and desired status."""
    await runtime.start_container(spec=spec("c-shape"))
    await runtime.describe(container_id="c-shape", egress=EGRESS)
    await runtime.stop_container(container_id="c-shape", egress=EGRESS)
    await runtime.describe(container_id="c-shape", egress=EGRESS)
    await runtime.list_running(egress=EGRESS)
    shapes = {tuple(sorted(params)) for params in rules.list_tasks}
    assert ("cluster", "startedBy") in shapes
    assert ("cluster", "desiredStatus", "family") in shapes
    for params in rules.list_tasks:
        assert "startedBy" not in params or set(params) <= STARTED_BY_ALONE, params


def test_the_rule_hook_refuses_what_ecs_refuses(deployment: Deployment) -> None:
    ecs, rules = ecs_with_rules()
    with pytest.raises(ClientError, match="InvalidParameterException"):
        ecs.list_tasks(cluster=deployment.aws.cluster, startedBy="x", desiredStatus="STOPPED")
    ecs.list_tasks(cluster=deployment.aws.cluster, startedBy="x")
    assert len(rules.list_tasks) == 2


async def test_tasks_not_started_by_skycrawl_are_not_listed(
    runtime: EcsRuntime, deployment: Deployment
) -> None:
    aws = deployment.aws
    client("ecs").run_task(
        cluster=aws.cluster,
        taskDefinition=aws.task_definition,
        launchType="FARGATE",
        networkConfiguration={
            "awsvpcConfiguration": {"subnets": aws.subnets, "securityGroups": aws.security_groups}
        },
    )
    assert await runtime.list_running(egress=EGRESS) == []


async def test_unknown_and_invalid_containers(runtime: EcsRuntime) -> None:
    status = await runtime.describe(container_id="never-started", egress=EGRESS)
    assert status.state is RunState.unknown
    await runtime.stop_container(container_id="never-started", egress=EGRESS)
    with pytest.raises(InvalidRequest):
        await runtime.start_container(spec=spec("not/a guid"))


async def test_wrong_settings_are_configuration_errors(deployment: Deployment) -> None:
    aws = deployment.aws
    no_subnets = EcsRuntime(
        ecs=client("ecs"),
        cluster=aws.cluster,
        task_definition=aws.task_definition,
        subnets=[],
        security_groups=aws.security_groups,
    )
    with pytest.raises(ConfigurationError, match="SUBNETS"):
        await no_subnets.start_container(spec=spec("c-1"))
    no_cluster = EcsRuntime(
        ecs=client("ecs"),
        cluster="no-such-cluster",
        task_definition=aws.task_definition,
        subnets=aws.subnets,
        security_groups=aws.security_groups,
    )
    with pytest.raises(ConfigurationError):
        await no_cluster.describe(container_id="c-1", egress=EGRESS)
    await no_subnets.close()
    await no_cluster.close()


async def test_capacity_provider_replaces_the_launch_type(deployment: Deployment) -> None:
    aws = deployment.aws
    client("ecs").put_cluster_capacity_providers(
        cluster=aws.cluster,
        capacityProviders=["FARGATE", "FARGATE_SPOT"],
        defaultCapacityProviderStrategy=[],
    )
    spot = EcsRuntime(
        ecs=client("ecs"),
        cluster=aws.cluster,
        task_definition=aws.task_definition,
        subnets=aws.subnets,
        security_groups=aws.security_groups,
        capacity_provider="FARGATE_SPOT",
    )
    await spot.start_container(spec=spec("c-spot"))
    assert (await spot.describe(container_id="c-spot", egress=EGRESS)).state is RunState.running
    assert task_of(deployment, "c-spot").get("launchType", "") == ""
    await spot.close()


async def test_a_container_for_a_crawl_that_renders_runs_the_browser_task_definition(
    deployment: Deployment,
) -> None:
    aws = deployment.aws
    browser_family = f"{aws.task_definition}-browser"
    register_task_definition(browser_family)
    runtime = EcsRuntime(
        ecs=client("ecs"),
        cluster=aws.cluster,
        task_definition=aws.task_definition,
        subnets=aws.subnets,
        security_groups=aws.security_groups,
        browser_task_definition=browser_family,
    )
    await runtime.start_container(spec=spec("c-plain"))
    await runtime.start_container(spec=dataclasses.replace(spec("c-render"), browser=True))

    assert task_of(deployment, "c-plain")["taskDefinitionArn"].endswith(f"/{aws.task_definition}:1")
    assert task_of(deployment, "c-render")["taskDefinitionArn"].endswith(f"/{browser_family}:1")
    assert (await runtime.describe(container_id="c-render", egress=EGRESS)).state is (
        RunState.running
    )
    await runtime.close()
