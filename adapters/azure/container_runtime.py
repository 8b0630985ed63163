"""ContainerInstancesRuntime: crawler containers on Azure Container Instances (ACI).

Features
    * One container group per GUID, named ``skycrawl-<GUID>``, in
      ``SKYCRAWL_AZURE_RESOURCE_GROUP``, Linux, restart policy **Never**, one container
      ``engine`` running ``spec.image`` (else ``default_image``, ``SKYCRAWL_ENGINE_IMAGE``) with ``SKYCRAWL_AZURE_ENGINE_CPU`` vCPUs and
      ``..._ENGINE_MEMORY_GB`` GiB. Tags: ``skycrawl=engine``, ``skycrawl-tenant``,
      ``skycrawl-egress``. The region is the egress's ``region`` (else
      ``SKYCRAWL_AZURE_LOCATION``), so the egress pool can spread containers over regions.
    * Every variable of ``spec.env`` plus ``SKYCRAWL_CONTAINER_ID``, ``SKYCRAWL_TENANT_ID``,
      ``SKYCRAWL_EGRESS_NAME`` and ``SKYCRAWL_PROXY_URL`` is passed as a **secure**
      environment variable (never shown by the portal or the API): they carry connection
      strings.
    * The tenant's identity: a group runs with the user-assigned identity the tenant's
      deployment created (``spec.resources["engine_identity_id"]``, see
      ``adapters.azure.provisioner``), and the engine authenticates as it
      (``SKYCRAWL_AZURE_MANAGED_IDENTITY_CLIENT_ID`` is its client id): it reaches only that
      tenant's topic, blobs under ``tenants/<tenant>/`` and the inbox. The deployment's shared
      ``ENGINE_IDENTITY_ID`` rides along only to pull the image from ACR (AcrPull, no data
      access); a tenant provisioned before per-tenant identities runs with the shared one
      alone until it is provisioned again (idempotent).
    * Optional: registry credentials (``REGISTRY_*``), a subnet (``ENGINE_SUBNET_ID``).
    * ``start_container`` returns once ARM accepted the group (the create is a long-running
      operation; pulling the image and starting take tens of seconds, reported by ``describe``
      as ``pending``). Starting a GUID whose group is pending or running is a no-op.
    * ``stop_container`` stops the group, waits up to ``grace_s`` for ACI to report it
      terminated, then **deletes** the group. **ACI gives no SIGTERM**: stopping (or deleting)
      a container group kills its containers at once, SIGKILL without a grace period
      (azure-cli issue 16673; there is no stop timeout to configure), so the engine's
      checkpoint-and-goodbye never runs inside ``stop_container``.
      ``capabilities.graceful_stop`` is therefore False (and ``max_grace_s`` 0): the core
      must first send the container a drain message down its own subscription and wait for
      its ``ContainerExited`` before calling ``stop_container``. The final state is
      remembered by this instance, so ``describe`` of a GUID it stopped reports ``exited``
      with the exit code seen (137 when it was killed); another instance sees ``unknown``, as
      for any deleted group.
    * ``describe`` maps the instance view: container state ``Waiting`` (or no view yet) →
      ``pending``, ``Running`` → ``running``, ``Terminated`` → ``exited`` with its exit code; a
      failed provisioning → ``exited``; a group that does not exist → ``unknown``.

Limits
    GUIDs of letters, digits and hyphens (1-50 characters). ACI quotas per region apply
    (by default 100 container groups and 100 vCPUs per subscription and region). Exited
    groups (restart policy Never) are not deleted until ``stop_container`` runs for them --
    the conductor's housekeeping does so when it reaps them; a stopped group costs nothing.

Settings and cost
    ``SKYCRAWL_AZURE_SUBSCRIPTION_ID``, ``..._RESOURCE_GROUP``, ``..._LOCATION``,
    ``..._ENGINE_CPU``, ``..._ENGINE_MEMORY_GB``, ``..._ENGINE_IDENTITY_ID``,
    ``..._ENGINE_SUBNET_ID``, ``..._REGISTRY_SERVER`` / ``_USERNAME`` / ``_PASSWORD``; the
    engine image is ``SKYCRAWL_ENGINE_IMAGE``. Billed per second while a group runs (about
    $0.0000135 per vCPU-second and $0.0000015 per GiB-second on Linux, ~$0.06 an hour for 1
    vCPU / 2 GiB); nothing once stopped or deleted -- scale to zero costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.containerinstance.aio import ContainerInstanceManagementClient
from azure.mgmt.containerinstance.models import (
    Container,
    ContainerGroup,
    ContainerGroupIdentity,
    ContainerGroupSubnetId,
    EnvironmentVariable,
    ImageRegistryCredential,
    ResourceRequests,
    ResourceRequirements,
    UserAssignedIdentities,
)

from adapters.azure.errors import translated_errors
from adapters.azure.settings import AzureSettings
from core.errors import InvalidRequest
from core.models import Egress
from core.ports.container_runtime import (
    ContainerSpec,
    ContainerStatus,
    RunState,
    RuntimeCapabilities,
)

GROUP_PREFIX = "skycrawl-"
ENGINE = "engine"
KILLED = 137
_GUID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,49}")
_PENDING_PROVISIONING = {"Pending", "Creating", "Accepted", "Updating", "Repairing"}
_POLL_S = 1.0


def group_name(container_id: str) -> str:
    if not _GUID.fullmatch(container_id):
        raise InvalidRequest(f"invalid container id {container_id!r}")
    return f"{GROUP_PREFIX}{container_id.lower()}"


def status_of(container_id: str, group: ContainerGroup) -> ContainerStatus:
    """The port's view of a container group (its instance view)."""
    provisioning = group.provisioning_state or ""
    engine = next(iter(group.containers or []), None)
    view = engine.instance_view if engine is not None else None
    current = view.current_state if view is not None else None
    state = (current.state or "") if current is not None else ""
    if state == "Running" and current is not None:
        return ContainerStatus(container_id, RunState.running, detail=current.detail_status or "")
    if state == "Terminated" and current is not None:
        return ContainerStatus(
            container_id, RunState.exited, current.exit_code, current.detail_status or ""
        )
    if provisioning == "Failed":
        return ContainerStatus(container_id, RunState.exited, None, "provisioning failed")
    group_state = group.instance_view.state if group.instance_view is not None else None
    if group_state in ("Stopped", "Succeeded", "Failed"):
        return ContainerStatus(container_id, RunState.exited, None, f"group {group_state}")
    return ContainerStatus(container_id, RunState.pending, detail=provisioning or state)


@translated_errors("Container Instances")
class ContainerInstancesRuntime:
    """ContainerRuntime on Azure Container Instances, one container group per GUID."""

    capabilities = RuntimeCapabilities(
        name="azure-container-instances", typical_start_s=45.0, max_grace_s=0.0, graceful_stop=False
    )

    def __init__(
        self,
        client: ContainerInstanceManagementClient,
        settings: AzureSettings,
        *,
        default_image: str = "skycrawl-engine:latest",
        credential: AsyncTokenCredential | None = None,
    ) -> None:
        self.client = client
        self._credential = credential  # closed with the runtime
        self._settings = settings
        self._default_image = default_image
        _, self._group = settings.require_arm()
        self._final: dict[str, ContainerStatus] = {}

    def _environment(self, spec: ContainerSpec) -> list[EnvironmentVariable]:
        env = dict(spec.env)
        env["SKYCRAWL_CONTAINER_ID"] = spec.container_id
        env["SKYCRAWL_TENANT_ID"] = spec.tenant_id
        env["SKYCRAWL_EGRESS_NAME"] = spec.egress.name
        if client_id := spec.resources.get("engine_identity_client"):
            env["SKYCRAWL_AZURE_MANAGED_IDENTITY_CLIENT_ID"] = client_id
        if spec.egress.proxy_url:
            env["SKYCRAWL_PROXY_URL"] = spec.egress.proxy_url
        return [EnvironmentVariable(name=k, secure_value=v) for k, v in sorted(env.items())]

    def _group_of(self, spec: ContainerSpec) -> ContainerGroup:
        s = self._settings
        container = Container(
            name=ENGINE,
            image=spec.image or self._default_image,
            resources=ResourceRequirements(
                requests=ResourceRequests(memory_in_gb=s.engine_memory_gb, cpu=s.engine_cpu)
            ),
            environment_variables=self._environment(spec),
        )
        group = ContainerGroup(
            location=spec.egress.region or s.location,
            containers=[container],
            os_type="Linux",
            restart_policy="Never",
            tags={
                "skycrawl": "engine",
                "skycrawl-tenant": spec.tenant_id,
                "skycrawl-egress": spec.egress.name,
            },
        )
        identities = [
            i for i in (spec.resources.get("engine_identity_id"), s.engine_identity_id) if i
        ]
        if identities:
            group.identity = ContainerGroupIdentity(
                type="UserAssigned",
                user_assigned_identities={i: UserAssignedIdentities() for i in identities},
            )
        if s.registry_server and s.registry_username and s.registry_password:
            group.image_registry_credentials = [
                ImageRegistryCredential(
                    server=s.registry_server,
                    username=s.registry_username,
                    password=s.registry_password.get_secret_value(),
                )
            ]
        elif s.registry_server and s.engine_identity_id:
            group.image_registry_credentials = [
                ImageRegistryCredential(server=s.registry_server, identity=s.engine_identity_id)
            ]
        if s.engine_subnet_id:
            group.subnet_ids = [ContainerGroupSubnetId(id=s.engine_subnet_id)]
        return group

    async def _get(self, container_id: str) -> ContainerGroup | None:
        try:
            return await self.client.container_groups.get(self._group, group_name(container_id))
        except ResourceNotFoundError:
            return None

    async def start_container(self, *, spec: ContainerSpec) -> None:
        name = group_name(spec.container_id)
        existing = await self._get(spec.container_id)
        if existing is not None:
            if status_of(spec.container_id, existing).state in (RunState.pending, RunState.running):
                return
            await self._delete(name)
        group = self._group_of(spec)
        self._final.pop(spec.container_id, None)
        # Accepted once this returns; the long-running create goes on without us.
        await self.client.container_groups.begin_create_or_update(self._group, name, group)

    async def stop_container(
        self, *, container_id: str, egress: Egress, grace_s: float = 10
    ) -> None:
        name = group_name(container_id)
        group = await self._get(container_id)
        if group is None:
            return
        status = status_of(container_id, group)
        if status.state is not RunState.exited:
            with contextlib.suppress(ResourceNotFoundError):
                await self.client.container_groups.stop(self._group, name)
            status = await self._wait_exit(container_id, min(max(grace_s, 0), 300.0))
        if status.state is not RunState.exited:
            status = ContainerStatus(container_id, RunState.exited, KILLED, "killed after grace")
        await self._delete(name)
        self._final[container_id] = status

    async def _wait_exit(self, container_id: str, grace_s: float) -> ContainerStatus:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        pause = 0.05
        while True:
            group = await self._get(container_id)
            if group is None:
                return ContainerStatus(container_id, RunState.exited, None, "deleted")
            status = status_of(container_id, group)
            if status.state is RunState.exited or loop.time() >= deadline:
                return status
            await asyncio.sleep(min(pause, max(deadline - loop.time(), 0)))
            pause = min(pause * 2, _POLL_S)

    async def _delete(self, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            poller = await self.client.container_groups.begin_delete(self._group, name)
            await poller.result()

    async def describe(self, *, container_id: str, egress: Egress) -> ContainerStatus:
        group = await self._get(container_id)
        if group is None:
            final = self._final.get(container_id)
            return final or ContainerStatus(container_id, RunState.unknown, detail="no such group")
        return status_of(container_id, group)

    async def list_running(self, *, egress: Egress) -> list[ContainerStatus]:
        found: list[ContainerStatus] = []
        async for group in self.client.container_groups.list_by_resource_group(self._group):
            name = group.name or ""
            tags = group.tags or {}
            if tags.get("skycrawl") != "engine" or not name.startswith(GROUP_PREFIX):
                continue
            if tags.get("skycrawl-egress") != egress.name:
                continue  # another egress's group in the same resource group
            status = await self.describe(container_id=name[len(GROUP_PREFIX) :], egress=egress)
            if status.state is RunState.running:
                found.append(status)
        return found

    async def close(self) -> None:
        await self.client.close()
        if self._credential is not None:
            await self._credential.close()
