"""Kubernetes ContainerRuntime: one Job per container GUID, in one namespace.

Features
    * ``start_container`` makes sure the tenant's Secret (``secret_name``:
      ``skycrawl-env-<tenant slug>-<hash>``) holds
      ``spec.env`` (the connection strings: created, or replaced when its data differ, with
      the ``resourceVersion`` read, so a concurrent writer is a retried 409 Conflict, not a
      lost update), then creates the Job ``skycrawl-<GUID>``: labels
      ``skycrawl.io/container-id``, ``skycrawl.io/tenant``, ``skycrawl.io/egress`` and
      ``skycrawl.io/deployment`` on the Job and its pod, ``backoffLimit: 0`` and
      ``restartPolicy: Never`` (the conductor, not Kubernetes, decides about a retry),
      ``activeDeadlineSeconds`` (``active_deadline_s``), ``ttlSecondsAfterFinished``
      (``ttl_after_finished_s``), ``terminationGracePeriodSeconds`` (``max_grace_s``), CPU
      and memory requests and limits, the Secret as ``envFrom`` and only the container's
      identity (``SKYCRAWL_CONTAINER_ID``, ``SKYCRAWL_TENANT_ID``, ``SKYCRAWL_EGRESS_NAME``,
      ``SKYCRAWL_PROXY_URL``) as plain ``env``; ``engine_secret``, when set, is a Secret of
      the deployment every pod also reads (e.g. the object store's keys). The pod runs as uid ``run_as_user`` (the
      engine image's 10001), non-root, without privilege escalation or capabilities, with
      seccomp ``RuntimeDefault``: the pod security standard "restricted". A 409
      AlreadyExists on the Job means the GUID was started already (a retry, or another
      conductor instance): a no-op.
    * ``stop_container`` deletes the Job with ``propagationPolicy: Foreground`` and
      ``gracePeriodSeconds`` = ``grace_s`` rounded up (its pod gets SIGTERM, then SIGKILL
      after the grace, from the kubelet), then waits until the Job is gone (at most the grace
      plus ``stop_wait_slack_s``), noting the pod's exit code when it sees it terminate.
    * ``describe`` maps the Job and its pod: no pod yet, or a pod ``Pending`` → ``pending``;
      a running container → ``running``; a terminated container → ``exited`` with its exit
      code; a Job that is ``Complete`` / ``Failed`` without a pod left → ``exited`` (0, or
      None with the condition's reason). A GUID without a Job is ``unknown`` -- unless this
      instance stopped it, in which case the exit code it saw is reported.
    * ``list_running`` lists the deployment's Jobs (of one egress, when the caller names it)
      by label selector and reports those not
      finished (the reaper's view); the Job TTL removes finished ones without an operator.

Limits
    GUIDs are 1-50 lower-case letters, digits or ``-`` (Job names are DNS-1123 labels, and
    the pod name adds a suffix). All containers of a tenant share one Secret, so a start
    with a different ``spec.env`` rewrites it for pods started later. After a stop the Job
    is deleted: only the instance that stopped it remembers the exit code (others describe
    ``unknown``). The image must be pullable by the cluster. The client is synchronous;
    each call runs in a worker thread. The tests run against a fake API server
    (``tests/integration/kubernetes/fake_apiserver.py``), whose limits are listed there.

Settings
    ``KubernetesSettings``: ``SKYCRAWL_KUBERNETES_NAMESPACE``, ``_KUBECONFIG`` (default: the
    in-cluster service account, else ``~/.kube/config``), ``_DEPLOYMENT``,
    ``_SERVICE_ACCOUNT``, ``_ENGINE_SECRET``, ``_CPU_REQUEST``, ``_CPU_LIMIT``, ``_MEMORY_REQUEST``,
    ``_MEMORY_LIMIT``, ``_ACTIVE_DEADLINE_S``, ``_TTL_AFTER_FINISHED_S``, ``_MAX_GRACE_S``;
    and ``SKYCRAWL_ENGINE_IMAGE``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from urllib3.exceptions import HTTPError

from adapters.selfhosted.container_runtime import container_env
from core.errors import ConfigurationError, InvalidRequest, Retryable
from core.models import Egress
from core.ports.container_runtime import (
    ContainerSpec,
    ContainerStatus,
    RunState,
    RuntimeCapabilities,
)
from core.settings import SkycrawlSettings

GUID_LABEL = "skycrawl.io/container-id"
TENANT_LABEL = "skycrawl.io/tenant"
EGRESS_LABEL = "skycrawl.io/egress"
DEPLOYMENT_LABEL = "skycrawl.io/deployment"
IDENTITY = ("SKYCRAWL_CONTAINER_ID", "SKYCRAWL_TENANT_ID", "SKYCRAWL_EGRESS_NAME")
_GUID = re.compile(r"[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?")
_T = TypeVar("_T")


class KubernetesSettings(BaseSettings):
    """Settings of ``KubernetesJobRuntime``: ``SKYCRAWL_KUBERNETES_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="SKYCRAWL_KUBERNETES_", extra="ignore", frozen=True
    )

    namespace: str = Field("skycrawl", description="Namespace of the engine Jobs and Secrets.")
    kubeconfig: str | None = Field(
        None,
        description="Path of a kubeconfig (default: the pod's service account when running "
        "in a cluster, else ~/.kube/config).",
    )
    deployment: str = Field("skycrawl", description="Label value scoping this deployment's Jobs.")
    engine_secret: str | None = Field(
        None,
        description="A Secret every engine pod also reads (envFrom, optional), for what the "
        "deployment shares, such as the object store's AWS_ACCESS_KEY_ID / "
        "AWS_SECRET_ACCESS_KEY.",
    )
    service_account: str | None = Field(
        "skycrawl-engine", description="Service account of engine pods (no API token mounted)."
    )
    cpu_request: str = Field("250m", description="CPU request of one engine pod.")
    cpu_limit: str = Field("1", description="CPU limit of one engine pod.")
    memory_request: str = Field("256Mi", description="Memory request of one engine pod.")
    memory_limit: str = Field("1Gi", description="Memory limit of one engine pod.")
    active_deadline_s: int = Field(
        6 * 3600, gt=0, description="activeDeadlineSeconds: the longest an engine Job may run."
    )
    ttl_after_finished_s: int = Field(
        600, ge=0, description="ttlSecondsAfterFinished: delete a finished Job this much later."
    )
    max_grace_s: int = Field(
        120, ge=0, description="terminationGracePeriodSeconds and the longest stop grace."
    )


def api_client_from(settings: KubernetesSettings) -> k8s.ApiClient:
    """An API client from the kubeconfig setting, the in-cluster service account or
    ``~/.kube/config``, in that order."""
    configuration = k8s.Configuration()
    try:
        if settings.kubeconfig:
            k8s_config.load_kube_config(
                config_file=settings.kubeconfig, client_configuration=configuration
            )
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)
            except ConfigException:
                k8s_config.load_kube_config(client_configuration=configuration)
    except (ConfigException, OSError) as exc:
        raise ConfigurationError(f"kubernetes: no usable configuration: {exc}") from exc
    return k8s.ApiClient(configuration)


def job_name(container_id: str) -> str:
    return f"skycrawl-{container_id}"


def secret_name(tenant_id: str) -> str:
    """A DNS-1123 name for the tenant's Secret, unique per tenant id."""
    slug = re.sub(r"[^a-z0-9-]+", "-", tenant_id.lower()).strip("-")[:40] or "tenant"
    return f"skycrawl-env-{slug}-{hashlib.sha256(tenant_id.encode()).hexdigest()[:8]}"


def _label_value(value: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:63].strip("-_.")
    return cleaned or "x"


def _translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, ApiException):
        if exc.status in (401, 403):
            return ConfigurationError(f"kubernetes: {what}: {exc.status} {exc.reason}")
        if exc.status in (409, 429) or (exc.status or 0) >= 500:
            return Retryable(f"kubernetes: {what}: {exc.status} {exc.reason}")
        return ConfigurationError(f"kubernetes: {what}: {exc.status} {exc.reason} {exc.body}")
    if isinstance(exc, HTTPError | OSError):
        return Retryable(f"kubernetes: {what}: API server unreachable ({exc})")
    return exc


class KubernetesJobRuntime:
    """ContainerRuntime on Kubernetes Jobs, through the official (synchronous) client."""

    def __init__(
        self,
        *,
        api_client: k8s.ApiClient,
        namespace: str,
        image: str,
        deployment: str = "skycrawl",
        command: Sequence[str] | None = None,
        cpu_request: str = "250m",
        cpu_limit: str = "1",
        memory_request: str = "256Mi",
        memory_limit: str = "1Gi",
        active_deadline_s: int = 6 * 3600,
        ttl_after_finished_s: int = 600,
        max_grace_s: int = 120,
        service_account: str | None = None,
        engine_secret: str | None = None,
        run_as_user: int = 10001,
        stop_wait_slack_s: float = 10.0,
        poll_s: float = 0.05,
    ) -> None:
        self._api = api_client
        self._batch = k8s.BatchV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self.namespace = namespace
        self.image = image
        self.deployment = deployment
        self._command = list(command) if command is not None else None
        self._resources = k8s.V1ResourceRequirements(
            requests={"cpu": cpu_request, "memory": memory_request},
            limits={"cpu": cpu_limit, "memory": memory_limit},
        )
        self._active_deadline_s = active_deadline_s
        self._ttl_s = ttl_after_finished_s
        self._max_grace_s = max_grace_s
        self._service_account = service_account
        self._engine_secret = engine_secret
        self._run_as_user = run_as_user
        self._slack_s = stop_wait_slack_s
        self._poll_s = poll_s
        self._ended: dict[str, ContainerStatus] = {}
        self.capabilities = RuntimeCapabilities(
            name="kubernetes",
            typical_start_s=5.0,
            max_grace_s=float(max_grace_s),
            graceful_stop=True,
        )

    @classmethod
    def from_settings(
        cls,
        selfhosted: Any,
        settings: SkycrawlSettings,
        kubernetes_settings: KubernetesSettings | None = None,
    ) -> KubernetesJobRuntime:
        """The runtime of a self-hosted deployment: ``settings.engine_image`` and the
        ``SKYCRAWL_KUBERNETES_*`` settings (``selfhosted`` is not needed: engines get the
        database URL and blob settings through ``spec.env``, hence the tenant Secret)."""
        k = kubernetes_settings or KubernetesSettings()
        return cls(
            api_client=api_client_from(k),
            namespace=k.namespace,
            image=settings.engine_image,
            deployment=k.deployment,
            cpu_request=k.cpu_request,
            cpu_limit=k.cpu_limit,
            memory_request=k.memory_request,
            memory_limit=k.memory_limit,
            active_deadline_s=k.active_deadline_s,
            ttl_after_finished_s=k.ttl_after_finished_s,
            max_grace_s=k.max_grace_s,
            service_account=k.service_account,
            engine_secret=k.engine_secret,
        )

    async def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        try:
            return await asyncio.to_thread(fn)
        except (ApiException, HTTPError, OSError) as exc:
            raise _translate(exc, what) from exc

    # ------------------------------------------------------------------ start

    async def start_container(self, *, spec: ContainerSpec) -> None:
        if not _GUID.fullmatch(spec.container_id):
            raise InvalidRequest(f"invalid container id {spec.container_id!r}")
        await self._call(f"start {spec.container_id}", lambda: self._start(spec))

    def _start(self, spec: ContainerSpec) -> None:
        secret = secret_name(spec.tenant_id)
        identity = container_env(spec)
        data = {k: v for k, v in identity.items() if k not in IDENTITY}
        self._ensure_secret(secret, spec.tenant_id, data)
        plain = [k8s.V1EnvVar(name=k, value=identity[k]) for k in IDENTITY]
        if "SKYCRAWL_PROXY_URL" in data:  # the proxy names the egress: also plain, for logs
            plain.append(k8s.V1EnvVar(name="SKYCRAWL_PROXY_URL", value=data["SKYCRAWL_PROXY_URL"]))
        labels = {
            GUID_LABEL: spec.container_id,
            TENANT_LABEL: _label_value(spec.tenant_id),
            EGRESS_LABEL: _label_value(spec.egress.name),
            DEPLOYMENT_LABEL: self.deployment,
        }
        container = k8s.V1Container(
            name="engine",
            image=spec.image or self.image,
            command=self._command,
            env=plain,
            env_from=self._env_from(secret),
            resources=self._resources,
            security_context=k8s.V1SecurityContext(
                allow_privilege_escalation=False,
                capabilities=k8s.V1Capabilities(drop=["ALL"]),
            ),
        )
        job = k8s.V1Job(
            api_version="batch/v1",
            kind="Job",
            metadata=k8s.V1ObjectMeta(name=job_name(spec.container_id), labels=labels),
            spec=k8s.V1JobSpec(
                backoff_limit=0,
                active_deadline_seconds=self._active_deadline_s,
                ttl_seconds_after_finished=self._ttl_s,
                template=k8s.V1PodTemplateSpec(
                    metadata=k8s.V1ObjectMeta(labels=labels),
                    spec=k8s.V1PodSpec(
                        restart_policy="Never",
                        containers=[container],
                        termination_grace_period_seconds=self._max_grace_s,
                        service_account_name=self._service_account,
                        automount_service_account_token=False,
                        security_context=k8s.V1PodSecurityContext(
                            run_as_non_root=True,
                            run_as_user=self._run_as_user,
                            run_as_group=self._run_as_user,
                            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
                        ),
                    ),
                ),
            ),
        )
        try:
            self._batch.create_namespaced_job(namespace=self.namespace, body=job)
        except ApiException as exc:
            if exc.status != 409:
                raise
            return  # AlreadyExists: this GUID was started already
        self._ended.pop(spec.container_id, None)

    def _env_from(self, tenant_secret: str) -> list[k8s.V1EnvFromSource]:
        sources = []
        if self._engine_secret:  # first: the tenant's own values win over shared ones
            shared = k8s.V1SecretEnvSource(name=self._engine_secret, optional=True)
            sources.append(k8s.V1EnvFromSource(secret_ref=shared))
        sources.append(k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=tenant_secret)))
        return sources

    def _ensure_secret(self, name: str, tenant_id: str, data: Mapping[str, str]) -> None:
        body = k8s.V1Secret(
            api_version="v1",
            kind="Secret",
            metadata=k8s.V1ObjectMeta(
                name=name,
                labels={TENANT_LABEL: _label_value(tenant_id), DEPLOYMENT_LABEL: self.deployment},
            ),
            type="Opaque",
            string_data=dict(data),
        )
        for _ in range(5):
            try:
                self._core.create_namespaced_secret(namespace=self.namespace, body=body)
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
            current = self._core.read_namespaced_secret(name=name, namespace=self.namespace)
            stored = {k: base64.b64decode(v).decode() for k, v in (current.data or {}).items()}
            if stored == dict(data):
                return
            body.metadata.resource_version = current.metadata.resource_version
            try:
                self._core.replace_namespaced_secret(name=name, namespace=self.namespace, body=body)
                return
            except ApiException as exc:
                if exc.status != 409:  # 409: someone wrote it since we read it: read again
                    raise
        raise Retryable(f"kubernetes: secret {name} keeps changing")

    # ------------------------------------------------------------------ stop

    async def stop_container(
        self, *, container_id: str, egress: Egress | None = None, grace_s: float = 10
    ) -> None:
        grace = math.ceil(min(max(grace_s, 0.0), float(self._max_grace_s)))
        await self._call(f"stop {container_id}", lambda: self._stop(container_id, grace))

    def _stop(self, container_id: str, grace: int) -> None:
        name = job_name(container_id)
        try:
            self._batch.delete_namespaced_job(
                name=name,
                namespace=self.namespace,
                propagation_policy="Foreground",
                grace_period_seconds=grace,
            )
        except ApiException as exc:
            if exc.status == 404:
                return  # gone already
            raise
        deadline = time.monotonic() + grace + self._slack_s
        last: ContainerStatus | None = None
        while time.monotonic() < deadline:
            job = self._read_job(name)
            if job is None:
                break
            status = self._status(container_id, job)
            if status.state is RunState.exited:
                last = status
            time.sleep(self._poll_s)
        self._ended[container_id] = last or ContainerStatus(
            container_id, RunState.exited, None, "stopped; its exit was not seen"
        )

    # ------------------------------------------------------------------ describe

    def _read_job(self, name: str) -> Any:
        try:
            return self._batch.read_namespaced_job(name=name, namespace=self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _pod_of(self, container_id: str) -> Any:
        pods = self._core.list_namespaced_pod(
            namespace=self.namespace,
            label_selector=f"{GUID_LABEL}={container_id},{DEPLOYMENT_LABEL}={self.deployment}",
        ).items
        return pods[-1] if pods else None

    def _status(self, container_id: str, job: Any) -> ContainerStatus:
        pod = self._pod_of(container_id)
        if pod is not None:
            for cs in (pod.status.container_statuses or []) if pod.status else []:
                if cs.state and cs.state.terminated is not None:
                    t = cs.state.terminated
                    return ContainerStatus(
                        container_id, RunState.exited, t.exit_code, t.reason or pod.metadata.name
                    )
                if cs.state and cs.state.running is not None:
                    return ContainerStatus(container_id, RunState.running, detail=pod.metadata.name)
        if job.status and job.status.succeeded:
            return ContainerStatus(container_id, RunState.exited, 0, "succeeded")
        for condition in (job.status.conditions or []) if job.status else []:
            if condition.status == "True" and condition.type in ("Complete", "Failed"):
                code = 0 if condition.type == "Complete" else None
                return ContainerStatus(container_id, RunState.exited, code, condition.reason or "")
        return ContainerStatus(container_id, RunState.pending, detail=job.metadata.name)

    async def describe(self, *, container_id: str, egress: Egress | None = None) -> ContainerStatus:
        def read() -> ContainerStatus:
            job = self._read_job(job_name(container_id))
            if job is None:
                return self._ended.get(container_id) or ContainerStatus(
                    container_id, RunState.unknown, detail="no such job"
                )
            return self._status(container_id, job)

        return await self._call(f"describe {container_id}", read)

    async def list_running(self, *, egress: Egress | None = None) -> list[ContainerStatus]:
        selector = f"{DEPLOYMENT_LABEL}={self.deployment},{GUID_LABEL}"
        if egress is not None:  # several egresses may share one namespace: only this one's
            selector += f",{EGRESS_LABEL}={_label_value(egress.name)}"

        def listing() -> list[ContainerStatus]:
            jobs = self._batch.list_namespaced_job(
                namespace=self.namespace, label_selector=selector
            ).items
            statuses = []
            for job in jobs:
                if job.metadata.deletion_timestamp is not None:
                    continue  # being stopped
                status = self._status(job.metadata.labels[GUID_LABEL], job)
                if status.state is not RunState.exited:
                    statuses.append(status)
            return statuses

        return await self._call("list", listing)

    async def close(self) -> None:
        """Close the API client's connection pool (Jobs keep running: the cluster owns them)."""
        await asyncio.to_thread(self._api.close)
