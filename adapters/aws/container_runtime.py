"""AWS ContainerRuntime: one ECS task on Fargate per container GUID.

Features
    * ``start_container`` is one ``RunTask`` of the engine's task definition on the cluster,
      with ``startedBy = GUID`` and ``clientToken = GUID`` (a retried start is one task), the
      tags ``skycrawl:container-id``, ``skycrawl:tenant`` and ``skycrawl:egress``, and the GUID
      and connection settings as environment overrides of the engine container
      (``spec.env`` plus ``SKYCRAWL_CONTAINER_ID``, ``SKYCRAWL_TENANT_ID``,
      ``SKYCRAWL_EGRESS_NAME`` and, for a proxied egress, ``SKYCRAWL_PROXY_URL``). Networking
      is ``awsvpc`` in the configured subnets and security groups, with a public IP or not per
      egress (``public_ip_egresses``, default ``assign_public_ip``). With
      ``tenant_task_role_arn`` set, the task runs with the tenant's own role (created by the
      tenant's stack, see ``adapters.aws.provisioner``). Starting a GUID that has a task not yet
      stopped is a no-op.
    * The conductor is stateless, so nothing maps GUIDs to task ARNs in memory: every call
      finds the GUID's tasks with ``ListTasks(startedBy=GUID)`` -- ECS requires ``startedBy``
      to be the only filter besides the cluster (anything more is
      ``InvalidParameterException``), and lists the tasks whose desired status is RUNNING --
      and ``DescribeTasks``. ``describe`` of a GUID with no such task looks among the stopped
      tasks of the task definition's family (``family`` + ``desiredStatus=STOPPED``, ECS keeps
      them about an hour) and matches ``startedBy``.
    * ``describe`` maps ``lastStatus``: PROVISIONING / PENDING / ACTIVATING → ``pending``;
      RUNNING, and DEACTIVATING / STOPPING / DEPROVISIONING (still running, being stopped) →
      ``running``; STOPPED / DELETED → ``exited`` with the engine container's exit code (None
      if it never ran) and the stop reason as detail. ECS forgets a stopped task after about
      an hour, and a GUID it has no task for is ``unknown``.
    * ``stop_container`` is ``StopTask`` on each task of the GUID not yet stopped: SIGTERM,
      then SIGKILL after the container's ``stopTimeout`` (task definition; the template sets
      30 s, Fargate allows at most 120 s). ``grace_s`` cannot be set per call on ECS; it is
      written into the stop reason. It returns once ECS accepted the stop.
    * ``list_running(egress=...)`` lists the cluster's tasks whose desired status is RUNNING,
      that carry the ``skycrawl:container-id`` tag and the egress's ``skycrawl:egress`` tag.
    * One runtime per egress (``adapters.runtimes``): an egress whose ``region`` is an AWS
      region other than ``SKYCRAWL_AWS_REGION`` gets an ECS client in that region (deploy the
      same cluster, task definition, subnets and security groups there).

Limits
    GUIDs are 1-36 letters, digits, ``-`` or ``_`` (``startedBy`` takes 128, ``clientToken``
    64, both must match). ``spec.image`` is not used: the image is the task definition's
    (containers cannot override it) -- register a new revision to change it. Environment
    overrides are limited to 8 KiB in all. A Fargate task typically starts in 30-60 s
    (image pull included). ``RunTask`` failures (capacity, quota) are
    ``core.errors.Retryable``; a wrong cluster, subnet or role is ``ConfigurationError``.

Settings
    ``SKYCRAWL_AWS_CLUSTER``, ``_TASK_DEFINITION``, ``_CONTAINER_NAME``, ``_SUBNETS``,
    ``_SECURITY_GROUPS``, ``_ASSIGN_PUBLIC_IP``, ``_PUBLIC_IP_EGRESSES``,
    ``_CAPACITY_PROVIDER`` (e.g. ``FARGATE_SPOT``), ``_TENANT_TASK_ROLE_ARN``,
    ``_STACK_PREFIX``.

Cost
    Fargate bills per second while a task runs (minimum one minute): about $0.025 an hour for
    the template's 0.5 vCPU / 1 GB in us-east-1, ~70% less on FARGATE_SPOT. No task runs at
    idle, so nothing is billed; the cluster itself is free.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from adapters.aws.errors import ClientError, call, error_code, error_message
from adapters.aws.provisioner import engine_role_name
from adapters.aws.settings import AwsSettings
from core.errors import ConfigurationError, InvalidRequest, Retryable
from core.models import Egress
from core.ports.container_runtime import (
    ContainerSpec,
    ContainerStatus,
    RunState,
    RuntimeCapabilities,
)

GUID_TAG = "skycrawl:container-id"
EGRESS_TAG = "skycrawl:egress"
MAX_OVERRIDE_BYTES = 8192
_GUID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,35}")
_PENDING = frozenset({"PROVISIONING", "PENDING", "ACTIVATING"})
_RUNNING = frozenset({"RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING"})
_CONFIGURATION = frozenset(
    {
        "ClusterNotFoundException",
        "InvalidParameterException",
        "AccessDeniedException",
        "PlatformUnknownException",
        "UnsupportedFeatureException",
    }
)


def _check_guid(container_id: str) -> None:
    if not _GUID.fullmatch(container_id):
        raise InvalidRequest(f"invalid container id {container_id!r} for ECS")


def task_family(task_definition: str) -> str:
    """The family of ``family``, ``family:revision`` or a task definition ARN."""
    return task_definition.rsplit("/", 1)[-1].split(":", 1)[0]


class EcsRuntime:
    """ContainerRuntime running each container as one ECS task (Fargate)."""

    capabilities = RuntimeCapabilities(
        name="ecs-fargate", typical_start_s=45.0, max_grace_s=120.0, graceful_stop=True
    )

    def __init__(
        self,
        *,
        ecs: Any,  # a boto3 ECS client (Any: boto3 ships no type stubs)
        cluster: str,
        task_definition: str,
        subnets: list[str],
        security_groups: list[str],
        container_name: str = "engine",
        assign_public_ip: bool = True,
        public_ip_egresses: Mapping[str, bool] | None = None,
        capacity_provider: str | None = None,
        tenant_task_role_arn: str | None = None,
        stack_prefix: str = "skycrawl",
        browser_task_definition: str | None = None,
    ) -> None:
        self._ecs = ecs
        self._cluster = cluster
        self._task_definition = task_definition
        self._subnets = list(subnets)
        self._security_groups = list(security_groups)
        self._container = container_name
        self._public_ip = assign_public_ip
        self._public_ip_egresses = dict(public_ip_egresses or {})
        self._capacity_provider = capacity_provider
        self._role_pattern = tenant_task_role_arn
        self._stack_prefix = stack_prefix
        self._family = task_family(task_definition)
        # containers started for crawls that render run this one (the browser image)
        self._browser_task_definition = browser_task_definition or task_definition
        self._families = tuple(
            dict.fromkeys((self._family, task_family(self._browser_task_definition)))
        )

    @classmethod
    def from_settings(cls, aws: AwsSettings) -> EcsRuntime:
        return cls(
            ecs=aws.client("ecs"),
            cluster=aws.cluster,
            task_definition=aws.task_definition,
            subnets=aws.subnets,
            security_groups=aws.security_groups,
            container_name=aws.container_name,
            assign_public_ip=aws.assign_public_ip,
            public_ip_egresses=aws.public_ip_egresses,
            capacity_provider=aws.capacity_provider,
            tenant_task_role_arn=aws.tenant_task_role_arn,
            stack_prefix=aws.stack_prefix,
            browser_task_definition=aws.browser_task_definition,
        )

    async def _ecs_call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return await call(fn, cluster=self._cluster, **kwargs)
        except ClientError as exc:
            if error_code(exc) in _CONFIGURATION:
                raise ConfigurationError(f"ECS {error_code(exc)}: {error_message(exc)}") from exc
            raise

    # ------------------------------------------------------------------ start

    def _run_request(self, spec: ContainerSpec) -> dict[str, Any]:
        env = {
            **spec.env,
            "SKYCRAWL_CONTAINER_ID": spec.container_id,
            "SKYCRAWL_TENANT_ID": spec.tenant_id,
            "SKYCRAWL_EGRESS_NAME": spec.egress.name,
        }
        if spec.egress.proxy_url:
            env["SKYCRAWL_PROXY_URL"] = spec.egress.proxy_url
        overrides: dict[str, Any] = {
            "containerOverrides": [
                {
                    "name": self._container,
                    "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
                }
            ]
        }
        if self._role_pattern:
            role = engine_role_name(self._stack_prefix, spec.tenant_id)
            overrides["taskRoleArn"] = self._role_pattern.format(role_name=role)
        if len(json.dumps(overrides)) > MAX_OVERRIDE_BYTES:
            raise InvalidRequest(f"container overrides exceed {MAX_OVERRIDE_BYTES} bytes on ECS")
        public = self._public_ip_egresses.get(spec.egress.name, self._public_ip)
        request: dict[str, Any] = {
            "taskDefinition": (
                self._browser_task_definition if spec.browser else self._task_definition
            ),
            "count": 1,
            "startedBy": spec.container_id,
            "clientToken": spec.container_id,
            "overrides": overrides,
            "networkConfiguration": {
                "awsvpcConfiguration": {
                    "subnets": self._subnets,
                    "securityGroups": self._security_groups,
                    "assignPublicIp": "ENABLED" if public else "DISABLED",
                }
            },
            "tags": [
                {"key": GUID_TAG, "value": spec.container_id},
                {"key": "skycrawl:tenant", "value": spec.tenant_id},
                {"key": EGRESS_TAG, "value": spec.egress.name},
            ],
        }
        if self._capacity_provider:
            request["capacityProviderStrategy"] = [
                {"capacityProvider": self._capacity_provider, "weight": 1}
            ]
        else:
            request["launchType"] = "FARGATE"
        return request

    async def start_container(self, *, spec: ContainerSpec) -> None:
        _check_guid(spec.container_id)
        if not self._subnets:
            raise ConfigurationError("SKYCRAWL_AWS_SUBNETS is empty: Fargate tasks need subnets")
        request = self._run_request(spec)
        running = await self._tasks(spec.container_id, stopped=False)
        if any(task.get("lastStatus") != "STOPPED" for task in running):
            return  # started before (a retried start): still there
        response = await self._ecs_call(self._ecs.run_task, **request)
        failures = response.get("failures", [])
        if failures or not response.get("tasks"):
            reason = "; ".join(f"{f.get('reason')} {f.get('detail', '')}".strip() for f in failures)
            raise Retryable(f"ECS did not start {spec.container_id}: {reason or 'no task'}")

    # ------------------------------------------------------------------ find, stop, describe

    async def _task_arns(self, **filters: Any) -> list[str]:
        paginator = self._ecs.get_paginator("list_tasks")

        def list_all() -> list[str]:
            pages = paginator.paginate(cluster=self._cluster, **filters)
            return [arn for page in pages for arn in page.get("taskArns", [])]

        try:
            arns: list[str] = await call(list_all)
        except ClientError as exc:
            if error_code(exc) in _CONFIGURATION:
                raise ConfigurationError(f"ECS {error_code(exc)}: {error_message(exc)}") from exc
            raise
        return arns

    async def _describe_tasks(self, arns: list[str]) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = []
        for start in range(0, len(arns), 100):
            response = await self._ecs_call(
                self._ecs.describe_tasks, tasks=arns[start : start + 100], include=["TAGS"]
            )
            tasks.extend(response.get("tasks", []))
        return tasks

    async def _tasks(self, container_id: str, *, stopped: bool = True) -> list[dict[str, Any]]:
        """Every task ECS still knows for ``container_id``, newest first: those not stopped
        (``ListTasks`` by ``startedBy`` -- which must be its only filter, and lists the tasks
        whose desired status is RUNNING), else, with ``stopped``, the stopped ones (by family
        and ``desiredStatus=STOPPED``, matched on ``startedBy`` by ``DescribeTasks``)."""
        arns = await self._task_arns(startedBy=container_id)
        if not arns and stopped:
            for family in self._families:
                arns += await self._task_arns(family=family, desiredStatus="STOPPED")
        if not arns:
            return []
        tasks = await self._describe_tasks(sorted(set(arns)))
        mine = [task for task in tasks if task.get("startedBy") == container_id]
        return sorted(mine, key=lambda task: str(task.get("createdAt", "")), reverse=True)

    async def stop_container(
        self, *, container_id: str, egress: Egress, grace_s: float = 10
    ) -> None:
        _check_guid(container_id)
        for task in await self._tasks(container_id, stopped=False):
            if task.get("desiredStatus") == "STOPPED" or task.get("lastStatus") == "STOPPED":
                continue
            try:
                await self._ecs_call(
                    self._ecs.stop_task,
                    task=task["taskArn"],
                    reason=f"skycrawl: stop requested (grace {grace_s:g} s)"[:255],
                )
            except ConfigurationError as exc:  # stopped and gone meanwhile
                if "not found" not in str(exc).lower():
                    raise

    def _status(self, container_id: str, task: Mapping[str, Any]) -> ContainerStatus:
        last = str(task.get("lastStatus", ""))
        if last in _PENDING:
            return ContainerStatus(container_id, RunState.pending, detail=last)
        if last in _RUNNING:
            return ContainerStatus(container_id, RunState.running, detail=last)
        engine = next(
            (c for c in task.get("containers", []) if c.get("name") == self._container),
            None,
        )
        code = None if engine is None else engine.get("exitCode")
        detail = str(task.get("stoppedReason") or task.get("stopCode") or last)
        return ContainerStatus(container_id, RunState.exited, code, detail)

    async def describe(self, *, container_id: str, egress: Egress) -> ContainerStatus:
        _check_guid(container_id)
        tasks = await self._tasks(container_id)
        if not tasks:
            return ContainerStatus(container_id, RunState.unknown, detail="no ECS task")
        return self._status(container_id, tasks[0])

    async def list_running(self, *, egress: Egress) -> list[ContainerStatus]:
        arns = await self._task_arns(desiredStatus="RUNNING")
        statuses = []
        for task in await self._describe_tasks(arns):
            tags = {t.get("key"): t.get("value") for t in task.get("tags", [])}
            guid = tags.get(GUID_TAG)
            if tags.get(EGRESS_TAG) != egress.name:
                continue  # another egress's task on the same cluster
            if guid and guid == task.get("startedBy"):
                status = self._status(str(guid), task)
                if status.state is not RunState.exited:
                    statuses.append(status)
        return statuses

    async def close(self) -> None:
        self._ecs.close()
