"""Cloud Run ContainerRuntime: every crawler container is one execution of a Cloud Run job.

Why jobs, not worker pools
    A job execution is exactly our container's life: started on demand with per-execution
    environment overrides (``run_job`` with ``RunJobRequest.Overrides.container_overrides[].env``
    carries the GUID, tenant, egress and connection settings), billed per second while it
    runs, cancellable, and gone afterwards -- scale to zero for free. A worker pool would be a
    long-lived resource per container (a deploy, ~30 s, per start, and a revision to delete),
    scaled by instance count with one environment for all instances, and so cannot tell
    instances their GUIDs. The job (image, CPU, memory, service account, VPC egress, task
    timeout up to 24 h, ``max_retries`` 0) is deployed once by ``deploy/gcp``; ``spec.image``
    is ignored -- the image is the job's.

Start, stop, describe
    ``start_container`` runs the job with one task (``task_count=1``) and the environment of
    ``spec.env`` plus ``SKYCRAWL_CONTAINER_ID``, ``SKYCRAWL_TENANT_ID``,
    ``SKYCRAWL_EGRESS_NAME`` and ``SKYCRAWL_PROXY_URL`` (for a proxied egress); starting a GUID
    whose execution still runs is a no-op -- on every conductor instance, not only the one that
    started it: before running the job, ``start_container`` looks the GUID's execution up (see
    below), as ECS does with its client token and ACI with its deterministic group name. Cloud
    Run takes no idempotency key and ``RunJobRequest.Overrides`` carries no labels, so the
    lookup is by the ``SKYCRAWL_CONTAINER_ID`` of the execution's environment; it is not
    atomic with the run, so two instances starting one GUID *at the same moment* could still
    both run it -- the core never does that (a start is decided by compare-and-set), a
    redelivered start comes later and finds the first. ``stop_container`` cancels the execution: Cloud Run
    sends SIGTERM and SIGKILL 10 s later -- the grace is Cloud Run's, ``grace_s`` cannot
    shorten it (``capabilities.max_grace_s`` = 10). ``describe`` maps the execution: no
    execution -> ``unknown``; a completion time or a terminal ``Completed`` condition ->
    ``exited`` with the task's exit code (``last_attempt_result``; 128+signal when killed);
    a running task -> ``running``; else ``pending`` (scheduled, image pulling).

A tenant's identity
    When the tenant was provisioned with a service account (``spec.resources``
    ``engine_service_account``, ``adapters.gcp.tenant_iam``), its containers run as it: Cloud
    Run sets the identity per job (``template.template.service_account``; ``RunJobRequest``
    cannot override it), so the runtime runs the tenant's own job ``<job>-<slug>-<hash>``
    (``tenant_job``), created on the tenant's first start in this region as a copy of the
    shared job's template with the tenant's account (labels ``skycrawl-tenant`` and
    ``skycrawl-base-job``); the provisioner deletes it on teardown. Before the execution
    runs, ``ContainerSubscriptions.prepare`` creates the container's filtered subscription as
    the control plane and grants the tenant's account on it alone: the engine may consume
    only what was made for it. Executions are then looked up across the location's jobs
    (``jobs/-``), keeping those of the shared job and its tenant copies. A tenant recorded
    before identities (no ``engine_service_account``) runs as the account its id names, so
    provisioning it again (idempotent) is the whole upgrade; until then its job cannot be
    made and its starts fail with that error. Without identities (the emulator;
    ``SKYCRAWL_GCP_TENANT_IDENTITIES=false``) every container runs on the shared job as the
    shared engine account.

Finding a GUID's execution (stateless)
    Execution names are chosen by Cloud Run, so the runtime remembers the names of what it
    started, and otherwise lists the job's executions (``ListExecutions`` has no filter; newest
    first, at most ``lookup_limit``) and matches ``SKYCRAWL_CONTAINER_ID`` in the execution's
    template, which records the overridden environment. A start therefore costs one listing
    more (a page of executions) on an instance that does not know the GUID. Any conductor instance can therefore describe or stop
    any container; the opt-in live test checks this against the real service.

Limits and cost
    GUIDs are 1-128 letters, digits, ``_`` or ``-``. One job, one region per runtime: the
    provider builds one runtime per egress region, on the job of that name in that region
    (``adapters.gcp.provider.regional``); ``list_running(egress=...)`` matches the
    execution's ``SKYCRAWL_EGRESS_NAME``. Environment overrides are visible to whoever can
    read the execution, so keep proxy credentials out of egress URLs or use Secret Manager on
    the job. Executions
    start in ~5-20 s. Billing is per vCPU-second and GiB-second while a task runs (~$0.000018
    and ~$0.000002 in tier-1 regions), nothing while idle.

Settings
    ``SKYCRAWL_GCP_PROJECT``, ``SKYCRAWL_GCP_REGION``, ``SKYCRAWL_GCP_RUN_JOB``,
    ``SKYCRAWL_GCP_RUN_CONTAINER``, ``SKYCRAWL_GCP_RUN_LOOKUP_LIMIT``.
"""

from __future__ import annotations

import re

from google.api_core import exceptions as gexc
from google.cloud import run_v2

from adapters.gcp.errors import translate
from adapters.gcp.tenant_iam import ContainerSubscriptions, service_account_id
from core.errors import ConfigurationError, InvalidRequest
from core.models import Egress
from core.ports.container_runtime import (
    ContainerSpec,
    ContainerStatus,
    RunState,
    RuntimeCapabilities,
)

GUID_ENV = "SKYCRAWL_CONTAINER_ID"
EGRESS_ENV = "SKYCRAWL_EGRESS_NAME"
_GUID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_TERMINAL = (run_v2.Condition.State.CONDITION_SUCCEEDED, run_v2.Condition.State.CONDITION_FAILED)


IDENTITY = "engine_service_account"  # the key of a tenant's account in ``spec.resources``
DISPATCH_ENV = "SKYCRAWL_DISPATCH_TOPIC"
_MAX_JOB_ID = 63


def tenant_job(job: str, tenant_id: str) -> str:
    """The path of the tenant's copy of ``job`` (``.../jobs/<job id>-<slug>-<hash>``, the
    tenant part of its service account id; a Cloud Run job id is at most 63 characters)."""
    location, _, base = job.rpartition("/jobs/")
    suffix = service_account_id(tenant_id).removeprefix("sct-")
    return f"{location}/jobs/{base[: _MAX_JOB_ID - len(suffix) - 1].rstrip('-')}-{suffix}"


def container_env(spec: ContainerSpec) -> dict[str, str]:
    """The environment a container gets: ``spec.env`` plus its identity and egress."""
    env = {**spec.env, GUID_ENV: spec.container_id, "SKYCRAWL_TENANT_ID": spec.tenant_id}
    env[EGRESS_ENV] = spec.egress.name
    if spec.egress.proxy_url:
        env["SKYCRAWL_PROXY_URL"] = spec.egress.proxy_url
    return env


def execution_guid(execution: run_v2.Execution) -> str | None:
    """The GUID an execution was started for, from its template's environment."""
    return _execution_env(execution, GUID_ENV)


def _execution_env(execution: run_v2.Execution, name: str) -> str | None:
    for container in execution.template.containers:
        for variable in container.env:
            if variable.name == name:
                return str(variable.value)
    return None


def _finished(execution: run_v2.Execution) -> bool:
    if execution.completion_time:
        return True
    return any(c.type_ == "Completed" and c.state in _TERMINAL for c in execution.conditions)


class CloudRunRuntime:
    """ContainerRuntime on executions of one Cloud Run job."""

    capabilities = RuntimeCapabilities(
        name="cloud-run-jobs", typical_start_s=15.0, max_grace_s=10.0, graceful_stop=True
    )

    def __init__(
        self,
        *,
        jobs: run_v2.JobsAsyncClient,
        executions: run_v2.ExecutionsAsyncClient,
        tasks: run_v2.TasksAsyncClient,
        job: str,
        container: str = "",
        lookup_limit: int = 500,
        subscriptions: ContainerSubscriptions | None = None,
        browser_job: str | None = None,
    ) -> None:
        self._jobs = jobs
        self._subscriptions = subscriptions
        self._tenant_jobs: set[str] = set()  # made (or found) by this instance
        location, _, self._base_id = job.rpartition("/jobs/")
        #: containers for crawls that render run this job (the browser image), if set
        self._browser_job = browser_job or job
        self._base_ids = tuple(
            dict.fromkeys((self._base_id, self._browser_job.rpartition("/jobs/")[2]))
        )
        #: with tenant jobs or a browser job, executions are listed across the location's jobs
        several = subscriptions is not None or self._browser_job != job
        self._listed = f"{location}/jobs/-" if several else job
        self._executions = executions
        self._tasks = tasks
        self._job = job
        self._container = container
        self._lookup_limit = lookup_limit
        self._known: dict[str, str] = {}  # GUID -> execution name

    async def _find(self, container_id: str) -> run_v2.Execution | None:
        name = self._known.get(container_id)
        try:
            if name is not None:
                return await self._executions.get_execution(name=name)
            seen = 0
            pager = await self._executions.list_executions(parent=self._listed)
            async for execution in pager:
                if not self._ours(execution):
                    continue
                guid = execution_guid(execution)
                if guid is not None:
                    self._known.setdefault(guid, execution.name)
                if guid == container_id:
                    return execution
                seen += 1
                if seen >= self._lookup_limit:
                    break
        except gexc.NotFound:
            return None
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"Cloud Run: looking up {container_id}") from exc
        return None

    def _ours(self, execution: run_v2.Execution) -> bool:
        """An execution of the shared job (or the browser job) or of a tenant copy of it."""
        return any(
            execution.job == base or execution.job.startswith(f"{base}-") for base in self._base_ids
        )

    async def _job_for(self, spec: ContainerSpec) -> str:
        """The job to run: with identities the tenant's own (made if missing), else the shared
        one. The account is the provisioner's (``spec.resources``) or, for a tenant recorded
        before identities, the one its id names: provisioning it again creates it."""
        shared = self._browser_job if spec.browser else self._job
        if self._subscriptions is None:
            return shared
        account = spec.resources.get(IDENTITY) or self._subscriptions.account(spec.tenant_id)
        name = tenant_job(shared, spec.tenant_id)
        if name in self._tenant_jobs:
            return name
        try:
            with_account = await self._jobs.get_job(name=name)
            if with_account.template.template.service_account != account:
                raise ConfigurationError(f"Cloud Run job {name} does not run as {account}")
        except gexc.NotFound:
            await self._copy_job(shared, name, spec.tenant_id, account)
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"Cloud Run: reading {name}") from exc
        self._tenant_jobs.add(name)
        return name

    async def _copy_job(self, shared: str, name: str, tenant_id: str, account: str) -> None:
        location, _, job_id = name.rpartition("/jobs/")
        try:
            base = await self._jobs.get_job(name=shared)
            job = run_v2.Job(
                template=base.template,
                labels={
                    "skycrawl-tenant": service_account_id(tenant_id).removeprefix("sct-"),
                    "skycrawl-base-job": shared.rpartition("/jobs/")[2],
                },
            )
            job.template.template.service_account = account
            operation = await self._jobs.create_job(parent=location, job=job, job_id=job_id)
            await operation.result()  # type: ignore[no-untyped-call]
        except gexc.AlreadyExists:
            return  # another instance made it meanwhile
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"Cloud Run: creating {name}") from exc

    async def delete_tenant_job(self, tenant_id: str) -> None:
        """Remove the tenant's jobs in this runtime's region (gone is fine)."""
        for shared in dict.fromkeys((self._job, self._browser_job)):
            name = tenant_job(shared, tenant_id)
            self._tenant_jobs.discard(name)
            try:
                operation = await self._jobs.delete_job(name=name)
                await operation.result()  # type: ignore[no-untyped-call]
            except gexc.NotFound:
                continue
            except gexc.GoogleAPICallError as exc:
                raise translate(exc, f"Cloud Run: deleting {name}") from exc

    async def start_container(self, *, spec: ContainerSpec) -> None:
        if not _GUID.fullmatch(spec.container_id):
            raise InvalidRequest(f"invalid container id {spec.container_id!r}")
        current = await self._find(spec.container_id)  # by name, else by the GUID's env
        if current is not None and not _finished(current):
            return  # already started, by this instance or another: no second execution
        job = await self._job_for(spec)
        if self._subscriptions is not None:
            topic = spec.env.get(DISPATCH_ENV)
            if not topic:
                raise ConfigurationError(f"{DISPATCH_ENV} missing from the container's spec")
            await self._subscriptions.prepare(
                tenant_id=spec.tenant_id, container_id=spec.container_id, topic=topic
            )
        env = [run_v2.EnvVar(name=k, value=v) for k, v in sorted(container_env(spec).items())]
        override = run_v2.RunJobRequest.Overrides.ContainerOverride(env=env)
        if self._container:
            override.name = self._container
        request = run_v2.RunJobRequest(
            name=job,
            overrides=run_v2.RunJobRequest.Overrides(container_overrides=[override], task_count=1),
        )
        try:
            operation = await self._jobs.run_job(request=request)
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"Cloud Run refused to run {job}") from exc
        execution = operation.metadata
        if execution is not None and execution.name:
            self._known[spec.container_id] = execution.name

    async def stop_container(
        self, *, container_id: str, egress: Egress, grace_s: float = 10
    ) -> None:
        execution = await self._find(container_id)
        if execution is None or _finished(execution):
            return
        try:
            await self._executions.cancel_execution(name=execution.name)
        except (gexc.NotFound, gexc.FailedPrecondition):
            return  # gone, or finished meanwhile
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"Cloud Run could not cancel {execution.name}") from exc

    async def _exit_code(self, execution: run_v2.Execution) -> int | None:
        try:
            pager = await self._tasks.list_tasks(parent=execution.name)
            async for task in pager:
                result = task.last_attempt_result
                if result.term_signal:
                    return 128 + int(result.term_signal)
                return int(result.exit_code)
        except gexc.GoogleAPICallError:
            pass
        if execution.succeeded_count:
            return 0
        return 1 if execution.failed_count or execution.cancelled_count else None

    async def _status(self, container_id: str, execution: run_v2.Execution) -> ContainerStatus:
        detail = execution.name.rsplit("/", 1)[-1]
        if _finished(execution):
            code = await self._exit_code(execution)
            return ContainerStatus(container_id, RunState.exited, code, detail)
        if execution.running_count:
            return ContainerStatus(container_id, RunState.running, detail=detail)
        return ContainerStatus(container_id, RunState.pending, detail=detail)

    async def describe(self, *, container_id: str, egress: Egress) -> ContainerStatus:
        execution = await self._find(container_id)
        if execution is None:
            return ContainerStatus(container_id, RunState.unknown, detail="no execution")
        return await self._status(container_id, execution)

    async def list_running(self, *, egress: Egress) -> list[ContainerStatus]:
        running: list[ContainerStatus] = []
        try:
            pager = await self._executions.list_executions(parent=self._listed)
            async for execution in pager:
                guid = execution_guid(execution)
                if guid is None or _finished(execution) or not self._ours(execution):
                    continue
                if _execution_env(execution, EGRESS_ENV) != egress.name:
                    continue  # another egress's execution of the same job
                self._known.setdefault(guid, execution.name)
                status = await self._status(guid, execution)
                if status.state is RunState.running:
                    running.append(status)
                if len(running) >= self._lookup_limit:
                    break
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, "Cloud Run: listing executions") from exc
        return running

    async def close(self) -> None:
        for client in (self._jobs, self._executions, self._tasks):
            await client.transport.close()  # type: ignore[no-untyped-call]
