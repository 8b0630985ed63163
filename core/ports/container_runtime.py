"""ContainerRuntime port: start, stop and describe crawler containers, one per GUID.

A deployment has one runtime per entry of its egress pool (``Ports.runtimes``, by egress
name), and every call names the egress it is about: ``spec.egress`` on start, ``egress`` on
stop, describe and list. The egress is the container record's own copy (``Container.egress``:
name, runtime, region), so a container is always stopped by the runtime that started it, and
two egresses served by the same backend (one ECS cluster, one process) list only their own
containers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from core.models import Egress


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    container_id: str  # the GUID
    tenant_id: str
    egress: Egress
    env: Mapping[str, str] = field(default_factory=dict)  # GUID + connection settings
    image: str = ""
    #: What the provisioner made for the tenant (``Tenant.resources``): a runtime finds the
    #: tenant's own identity there (``engine_identity_id`` on Azure, ``engine_service_account``
    #: on GCP) and runs the container as it.
    resources: Mapping[str, str] = field(default_factory=dict)
    #: Started for a crawl that renders: ``image`` is the browser image where the runtime
    #: takes an image (Docker, Kubernetes, ACI); ECS and Cloud Run run their task
    #: definition's / job's image (``SKYCRAWL_AWS_BROWSER_TASK_DEFINITION``).
    browser: bool = False


class RunState(StrEnum):
    pending = "pending"
    running = "running"
    exited = "exited"
    unknown = "unknown"  # the runtime has no record of it


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    container_id: str
    state: RunState
    exit_code: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RuntimeCapabilities:
    """What the core may expect of a runtime.

    ``graceful_stop`` says whether ``stop_container`` gives the container SIGTERM and up to
    ``max_grace_s`` to exit before killing it (local subprocesses, ECS, Cloud Run). Where it is
    False the runtime's stop is a kill without warning (Azure Container Instances: stopping or
    deleting a group SIGKILLs its containers), so the engine's checkpoint-and-goodbye never
    runs: the core must drain a container through its own subscription, and wait for its
    ``ContainerExited``, before it calls ``stop_container``.
    """

    name: str
    typical_start_s: float
    max_grace_s: float
    graceful_stop: bool = True


class ContainerRuntime(Protocol):
    capabilities: RuntimeCapabilities

    async def start_container(self, *, spec: ContainerSpec) -> None:
        """Start a container; returns once the start was accepted (not when ready)."""
        ...

    async def stop_container(
        self, *, container_id: str, egress: Egress, grace_s: float = 10
    ) -> None:
        """SIGTERM-like stop, forced after ``grace_s`` -- or, where
        ``capabilities.graceful_stop`` is False, a kill at once; stopping a gone one is a
        no-op."""
        ...

    async def describe(self, *, container_id: str, egress: Egress) -> ContainerStatus: ...

    async def list_running(self, *, egress: Egress) -> list[ContainerStatus]:
        """The running containers of ``egress`` (not those of other egresses)."""
        ...

    async def close(self) -> None:
        """Release clients; the local runtime also stops what it started."""
        ...
