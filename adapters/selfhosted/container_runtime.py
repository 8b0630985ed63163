"""Self-hosted ContainerRuntime: one Docker container per GUID, on one Docker Engine.

Features
    * ``start_container`` creates and starts a container named ``<deployment>.<GUID>`` from
      ``spec.image`` (or the runtime's ``image``) with the labels ``skycrawl.container-id``,
      ``skycrawl.tenant``, ``skycrawl.egress`` and ``skycrawl.deployment``, the environment
      ``spec.env`` plus ``SKYCRAWL_CONTAINER_ID``, ``SKYCRAWL_TENANT_ID``,
      ``SKYCRAWL_EGRESS_NAME`` and, for a proxied egress, ``SKYCRAWL_PROXY_URL`` (nothing of
      the control plane's own environment), CPU and memory limits (``cpus``, ``memory``),
      restart policy ``no`` and network mode ``host`` by default. Starting a GUID whose
      container is created or running is a no-op; one that exited is removed and started
      afresh. Two instances racing on the same GUID make one container (the name is unique
      per daemon; the loser's 409 Conflict is a no-op).
    * ``stop_container`` is Docker's stop: SIGTERM, then SIGKILL after ``grace_s`` -- rounded
      *up* to whole seconds, as the Engine API takes them (at most 300 s). The daemon keeps
      the grace timer, so a control plane that dies mid-stop still gets its container killed.
    * ``describe`` maps the container's state: ``created`` → ``pending``; ``running``,
      ``paused``, ``restarting`` → ``running``; ``exited``, ``dead``, ``removing`` →
      ``exited`` with the exit code (a signal N is 128+N: 137 after a kill) and the daemon's
      error, if any, as detail. A GUID with no container is ``unknown``.
    * ``list_running`` lists this deployment's created and running containers by label --
      of one egress when the caller names it (the reaper's view; another control plane on the same daemon and deployment sees the same).
      It also removes this deployment's containers that exited more than ``keep_exited_s``
      ago (measured on the daemon's own clock), so exited containers stay describable for a
      while and are then gone without an operator.
    * Nothing is remembered in memory: every call asks the daemon, so the conductor may run
      as several instances, and a restarted control plane sees the containers it started.

Limits
    GUIDs are 1-100 letters, digits, ``_`` or ``-`` (they name containers). One daemon: a
    multi-VM fleet runs one control plane per VM (one egress each) or uses Kubernetes
    (``adapters.selfhosted.kubernetes_runtime``). The image must already be on the daemon
    (``docker build`` / ``docker load`` on the VM): a missing image is a
    ``ConfigurationError``, not a pull. ``--network host`` means a container sees the VM's
    loopback: run the control plane's services on addresses the engines are meant to reach.
    The Docker SDK is synchronous; each call runs in a worker thread. Engines sharing the
    local provider's SQLite host limiter (``adapters.local.host_limiter``) tell each other
    apart by pid, so they need ``pid_mode="host"``; the self-hosted provider's PostgreSQL
    limiter does not.

Settings
    ``DockerSettings``: ``SKYCRAWL_DOCKER_HOST`` (e.g. ``unix:///var/run/docker.sock``,
    default: the SDK's ``DOCKER_HOST`` environment), ``_DEPLOYMENT``, ``_CPUS``, ``_MEMORY``,
    ``_NETWORK_MODE``, ``_USER``, ``_KEEP_EXITED_S``, ``_PASS_ENV``; and ``SKYCRAWL_ENGINE_IMAGE``.
    ``from_settings`` mounts the self-hosted data directory (file blobs) at the same path.

Cost
    Nothing beyond the VM: an engine container costs its memory while it runs, and no
    container runs at idle.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.errors import ConfigurationError, InvalidRequest, Retryable
from core.models import Egress
from core.ports.container_runtime import (
    ContainerSpec,
    ContainerStatus,
    RunState,
    RuntimeCapabilities,
)
from core.settings import SkycrawlSettings

if TYPE_CHECKING:
    from adapters.selfhosted.kubernetes_runtime import KubernetesJobRuntime

GUID_LABEL = "skycrawl.container-id"
TENANT_LABEL = "skycrawl.tenant"
EGRESS_LABEL = "skycrawl.egress"
DEPLOYMENT_LABEL = "skycrawl.deployment"
MAX_GRACE_S = 300.0

_GUID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
_DEPLOYMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_PENDING = frozenset({"created"})
_RUNNING = frozenset({"running", "paused", "restarting"})
_T = TypeVar("_T")


class DockerSettings(BaseSettings):
    """Settings of ``DockerRuntime``: ``SKYCRAWL_DOCKER_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="SKYCRAWL_DOCKER_", extra="ignore", frozen=True)

    host: str | None = Field(
        None,
        description="Engine API URL, e.g. unix:///var/run/docker.sock (default: DOCKER_HOST, "
        "else the local socket).",
    )
    deployment: str = Field(
        "skycrawl",
        description="Label value (and container-name prefix) that scopes this deployment's "
        "containers on a shared daemon.",
    )
    cpus: float | None = Field(1.0, gt=0, description="CPU limit of one engine container.")
    memory: str | None = Field("1g", description="Memory limit of one engine container.")
    network_mode: str = Field("host", description="Docker network mode of engine containers.")
    user: str | None = Field(
        None,
        description="uid:gid engines run as (default: the image's user; with file blobs, the "
        "owner of the data directory, so its files stay writable).",
    )
    keep_exited_s: float = Field(
        600.0, ge=0, description="Remove an exited engine container this long after it ended."
    )
    pass_env: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated names of the control plane's environment variables that "
        "engines get too, e.g. AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY for an S3-compatible "
        "store (nothing else of the control plane's environment is passed).",
    )

    @field_validator("pass_env", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


def container_env(spec: ContainerSpec) -> dict[str, str]:
    """``spec.env`` plus the container's identity, as every runtime passes it."""
    env = dict(spec.env)
    env["SKYCRAWL_CONTAINER_ID"] = spec.container_id
    env["SKYCRAWL_TENANT_ID"] = spec.tenant_id
    env["SKYCRAWL_EGRESS_NAME"] = spec.egress.name
    if spec.egress.proxy_url:
        env["SKYCRAWL_PROXY_URL"] = spec.egress.proxy_url
    else:
        env.pop("SKYCRAWL_PROXY_URL", None)
    return env


def _translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, docker.errors.ImageNotFound):
        return ConfigurationError(f"docker: {what}: image not found ({exc.explanation})")
    if isinstance(exc, docker.errors.APIError):
        if exc.is_server_error():
            return Retryable(f"docker: {what}: {exc.explanation}")
        return ConfigurationError(f"docker: {what}: {exc.explanation}")
    if isinstance(exc, requests.exceptions.RequestException | docker.errors.DockerException):
        return Retryable(f"docker: {what}: daemon unreachable ({exc})")
    return exc


def _parse_time(value: str) -> datetime | None:
    """Docker's RFC 3339 times carry nanoseconds; Python parses up to microseconds."""
    if not value or value.startswith("0001-"):
        return None
    head, dot, rest = value.partition(".")
    if dot:
        digits = re.match(r"\d*", rest)
        fraction = digits.group(0) if digits else ""
        value = f"{head}.{fraction[:6]}{rest[len(fraction) :]}"
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class DockerRuntime:
    """ContainerRuntime on a Docker Engine: one container per GUID, found by its labels."""

    capabilities = RuntimeCapabilities(
        name="docker", typical_start_s=1.0, max_grace_s=MAX_GRACE_S, graceful_stop=True
    )

    def __init__(
        self,
        *,
        image: str,
        client: docker.DockerClient | None = None,
        base_url: str | None = None,
        deployment: str = "skycrawl",
        command: Sequence[str] | None = None,
        entrypoint: Sequence[str] | None = None,
        cpus: float | None = 1.0,
        memory: str | None = "1g",
        network_mode: str = "host",
        mounts: Mapping[str, str] | None = None,
        user: str | None = None,
        pid_mode: str | None = None,
        keep_exited_s: float = 600.0,
        pass_env: Sequence[str] = (),
    ) -> None:
        if not _DEPLOYMENT.fullmatch(deployment):
            raise ConfigurationError(f"invalid docker deployment name {deployment!r}")
        self._client = client
        self._base_url = base_url
        self._owns_client = client is None
        self.image = image
        self.deployment = deployment
        self._command = list(command) if command is not None else None
        self._entrypoint = list(entrypoint) if entrypoint is not None else None
        self._cpus = cpus
        self._memory = memory
        self._network_mode = network_mode
        self._mounts = dict(mounts or {})
        self._user = user
        self._pid_mode = pid_mode
        self._keep_exited_s = keep_exited_s
        self._pass_env = tuple(pass_env)

    @classmethod
    def from_settings(
        cls,
        selfhosted: Any,
        settings: SkycrawlSettings,
        docker_settings: DockerSettings | None = None,
    ) -> DockerRuntime:
        """The runtime of a self-hosted deployment: ``settings.engine_image``, the
        ``SKYCRAWL_DOCKER_*`` settings, and -- when blobs are files -- the data directory
        mounted at the same path (the engines' ``SKYCRAWL_SELFHOSTED_DATA_DIR``)."""
        docker_settings = docker_settings or DockerSettings()
        mounts: dict[str, str] = {}
        user = docker_settings.user
        if getattr(selfhosted, "blobs", "files") == "files":
            data_dir = Path(getattr(selfhosted, "data_dir", ".skycrawl-selfhosted")).resolve()
            data_dir.mkdir(parents=True, exist_ok=True)
            mounts[str(data_dir)] = str(data_dir)
            if user is None:
                stat = data_dir.stat()
                user = f"{stat.st_uid}:{stat.st_gid}"
        return cls(
            image=settings.engine_image,
            base_url=docker_settings.host,
            deployment=docker_settings.deployment,
            cpus=docker_settings.cpus,
            memory=docker_settings.memory,
            network_mode=docker_settings.network_mode,
            mounts=mounts,
            user=user,
            keep_exited_s=docker_settings.keep_exited_s,
            pass_env=docker_settings.pass_env,
        )

    # ------------------------------------------------------------------ plumbing

    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = (
                    docker.DockerClient(base_url=self._base_url)
                    if self._base_url
                    else docker.from_env()
                )
            except docker.errors.DockerException as exc:
                raise ConfigurationError(f"docker: cannot reach the daemon: {exc}") from exc
        return self._client

    async def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        try:
            return await asyncio.to_thread(fn)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _translate(exc, what) from exc

    def name_of(self, container_id: str) -> str:
        return f"{self.deployment}.{container_id}"

    def _get(self, container_id: str) -> Container | None:
        try:
            return self._docker().containers.get(self.name_of(container_id))
        except docker.errors.NotFound:
            return None

    # ------------------------------------------------------------------ the port

    async def start_container(self, *, spec: ContainerSpec) -> None:
        if not _GUID.fullmatch(spec.container_id):
            raise InvalidRequest(f"invalid container id {spec.container_id!r}")
        await self._call(f"start {spec.container_id}", lambda: self._start(spec))

    def _start(self, spec: ContainerSpec) -> None:
        existing = self._get(spec.container_id)
        if existing is not None:
            if existing.status in _PENDING | _RUNNING:
                return
            existing.remove(force=True)
        options: dict[str, Any] = {
            "name": self.name_of(spec.container_id),
            "labels": {
                GUID_LABEL: spec.container_id,
                TENANT_LABEL: spec.tenant_id,
                EGRESS_LABEL: spec.egress.name,
                DEPLOYMENT_LABEL: self.deployment,
            },
            "environment": self._environment(spec),
            "network_mode": self._network_mode,
            "restart_policy": {"Name": "no"},
            "stop_signal": "SIGTERM",
        }
        if self._cpus is not None:
            options["nano_cpus"] = int(self._cpus * 1e9)
        if self._memory is not None:
            options["mem_limit"] = self._memory
        if self._mounts:
            options["volumes"] = {
                host: {"bind": inside, "mode": "rw"} for host, inside in self._mounts.items()
            }
        if self._user is not None:
            options["user"] = self._user
        if self._entrypoint is not None:
            options["entrypoint"] = self._entrypoint
        if self._pid_mode is not None:
            options["pid_mode"] = self._pid_mode
        containers = self._docker().containers
        try:  # create + start, never run: run would pull a missing image from a registry
            container = containers.create(spec.image or self.image, self._command, **options)
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "is already in use" in str(exc.explanation):
                return  # another instance created it first: one container per GUID
            raise
        try:
            container.start()
        except docker.errors.APIError:
            container.remove(force=True)
            raise

    def _environment(self, spec: ContainerSpec) -> dict[str, str]:
        env = container_env(spec)
        for name in self._pass_env:
            if name in os.environ and name not in env:
                env[name] = os.environ[name]
        return env

    async def stop_container(
        self, *, container_id: str, egress: Egress | None = None, grace_s: float = 10
    ) -> None:
        grace = math.ceil(min(max(grace_s, 0.0), MAX_GRACE_S))

        def stop() -> None:
            container = self._get(container_id)
            if container is None or container.status not in _PENDING | _RUNNING:
                return
            try:
                container.stop(timeout=grace)
            except docker.errors.NotFound:
                return

        await self._call(f"stop {container_id}", stop)

    async def describe(self, *, container_id: str, egress: Egress | None = None) -> ContainerStatus:
        container = await self._call(f"describe {container_id}", lambda: self._get(container_id))
        if container is None:
            return ContainerStatus(container_id, RunState.unknown, detail="no such container")
        return self._status(container_id, container)

    def _status(self, container_id: str, container: Container) -> ContainerStatus:
        state: dict[str, Any] = container.attrs.get("State", {})
        status = str(state.get("Status", container.status))
        if status in _PENDING:
            return ContainerStatus(container_id, RunState.pending, detail=container.short_id)
        if status in _RUNNING:
            return ContainerStatus(container_id, RunState.running, detail=container.short_id)
        code = state.get("ExitCode")
        detail = str(state.get("Error") or f"{status} ({container.short_id})")
        return ContainerStatus(
            container_id, RunState.exited, int(code) if code is not None else None, detail
        )

    async def list_running(self, *, egress: Egress | None = None) -> list[ContainerStatus]:
        labels = [f"{DEPLOYMENT_LABEL}={self.deployment}"]
        if egress is not None:  # several egresses may share one daemon: list only this one's
            labels.append(f"{EGRESS_LABEL}={egress.name}")

        def listing() -> list[ContainerStatus]:
            self._remove_old_exited()
            found = self._docker().containers.list(
                ignore_removed=True,
                filters={
                    "label": labels,
                    "status": ["created", "running", "paused", "restarting"],
                },
            )
            return [self._status(c.labels.get(GUID_LABEL) or str(c.name), c) for c in found]

        return await self._call("list", listing)

    def _remove_old_exited(self) -> None:
        client = self._docker()
        exited = client.containers.list(
            all=True,
            ignore_removed=True,
            filters={
                "label": [f"{DEPLOYMENT_LABEL}={self.deployment}"],
                "status": ["exited", "dead"],
            },
        )
        if not exited:
            return
        now = _parse_time(str(client.info().get("SystemTime", "")))
        for container in exited:
            finished = _parse_time(str(container.attrs.get("State", {}).get("FinishedAt", "")))
            if now is None or finished is None:
                continue
            if (now - finished).total_seconds() >= self._keep_exited_s:
                try:
                    container.remove(force=True)
                except docker.errors.NotFound:
                    continue

    async def remove_all(self) -> None:
        """Remove every container of this deployment, running or not (teardown, tests)."""

        def remove() -> None:
            for container in self._docker().containers.list(
                all=True,
                ignore_removed=True,
                filters={"label": [f"{DEPLOYMENT_LABEL}={self.deployment}"]},
            ):
                try:
                    container.remove(force=True)
                except docker.errors.NotFound:
                    continue

        await self._call("remove", remove)

    async def close(self) -> None:
        """Close the client if this runtime built it; containers keep running (the daemon,
        not this process, owns them)."""
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)


def __getattr__(name: str) -> Any:
    """``KubernetesJobRuntime`` is importable from here too (the provider looks runtimes up in
    this module), but only imported -- with the ``kubernetes`` client -- when asked for."""
    if name == "KubernetesJobRuntime":
        from adapters.selfhosted.kubernetes_runtime import KubernetesJobRuntime

        return KubernetesJobRuntime
    raise AttributeError(name)


__all__ = ["DockerRuntime", "DockerSettings", "KubernetesJobRuntime", "container_env"]
