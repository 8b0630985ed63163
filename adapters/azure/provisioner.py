"""ArmProvisioner: per-tenant resources as one ARM deployment per tenant (IaC from code).

Features
    ``provision(tenant_id=...)`` deploys ``deploy/azure/tenant.json`` (compiled from
    ``tenant.bicep``) in incremental mode into ``SKYCRAWL_AZURE_RESOURCE_GROUP`` as the
    deployment ``skycrawl-tenant-<tenant>``. The template creates, in the shared storage account
    (``SKYCRAWL_AZURE_TENANT_STORAGE_ACCOUNT``, default ``..._STORAGE_ACCOUNT``), the tenant's
    blob container (its results), with ``stores`` (``SKYCRAWL_TENANT_DATA=dedicated``) its own
    table for its crawl and usage records (``adapters.azure.tenant_stores``; made sure of on
    the data plane too, and returned as ``"tenant_store"``; pooled: no table, the tenant's
    records are in the shared state table), and its dispatch topic
    ``<SKYCRAWL_DISPATCH_TOPIC>-<tenant>`` (``core.layout.tenant_topic``): a Service Bus topic
    with its dead-letter queue ``<topic>-dlq`` in ``..._TENANT_SERVICEBUS_NAMESPACE`` (the
    bus's namespace), or, for the Storage-queue bus, its dead-letter queue
    ``<topic>-poison``.

    The same deployment creates the tenant's **identity**: a user-assigned managed identity
    ``skycrawl-tenant-<slug>-<hash>`` that ``ContainerInstancesRuntime`` runs the tenant's
    container groups with, holding only Data Owner on the tenant's topic (its containers
    create, use and delete their own subscriptions there), Sender on the topic's dead-letter
    queue and on the inbox (``SKYCRAWL_INBOX_QUEUE``), and ``SKYCRAWL_AZURE_TENANT_BLOB_ROLE_ID``
    (main.bicep's data-actions-only blob role; unset: Storage Blob Data Contributor) on the
    results container under an ABAC condition: blob paths and listing prefixes must start
    with ``tenants/<tenant>/``. With the Storage-queue bus it gets Storage Queue Data
    Contributor on the account instead of the Service Bus roles (README "Tenants isolated").

    ``provision`` returns names and ids: ``{"deployment_id", "table", "table_id",
    "tenant_store", "container", "container_id", "dispatch_topic", "dispatch_topic_id",
    "dispatch_dead_letter_id", "engine_identity_id", "engine_identity_client",
    "engine_identity_principal", "topic_role_id", "dead_letter_role_id", "inbox_role_id",
    "queue_role_id", "blob_role_id"}`` (keys ending ``_id`` are resource ids; what the bus
    does not use, and the table of pooled tenant data, is left out). Given the bus, it then
    makes sure the topic exists on the bus's data plane too (``ensure_topic``: what an
    emulator or a fresh namespace needs; a no-op after the deployment). The conductor
    publishes the tenant's work to that topic, the tenant's containers subscribe to it.
    Deploying again is idempotent (same names, same outputs). Web/API access is the tenant's
    API key, created by the core; the function app's route serves every tenant.
    ``teardown`` removes the topic with every subscription on it through the bus, reads the
    deployment's outputs (never ``resources``, so it deletes only what it created), deletes
    the role assignments first (Azure would keep them, orphaned), then the table, container,
    topic, dead-letter queue and identity, then the deployment record; a missing deployment
    is fine.

    Deployments go through ``azure-mgmt-resource``'s generic resource operations
    (``resources.begin_create_or_update_by_id`` on
    ``.../providers/Microsoft.Resources/deployments/<name>``): the same ARM PUT as the
    Deployments API, which azure-mgmt-resource >= 24 moved to a separate package.

Limits
    Tenant ids are 1-64 letters, digits, ``_`` or ``-`` starting with a letter or digit, else
    ``core.errors.InvalidRequest``; resource names derive from them plus a hash (Storage name
    rules). A deployment takes 10-30 s; ARM allows 800 deployments of history per resource
    group (the deployment record is deleted on teardown). ARM errors in the 4xx range are
    ``ConfigurationError`` (template, permissions), others ``Retryable``.

Settings and cost
    ``SKYCRAWL_AZURE_SUBSCRIPTION_ID``, ``..._RESOURCE_GROUP``, ``..._TENANT_TEMPLATE``,
    ``..._TENANT_STORAGE_ACCOUNT`` / ``..._STORAGE_ACCOUNT``, ``..._TENANT_SERVICEBUS_NAMESPACE``.
    ``..._TENANT_BLOB_ROLE_ID``, ``..._BLOB_CONTAINER``, ``..._LOCATION``. The control plane's
    identity needs Contributor on the resource group (or main.bicep's custom role:
    deployments, the storage / Service Bus child resources, user-assigned identities, role
    assignments). Deployments are free; an empty table, container or queue, an identity and
    its role assignments cost nothing. A new identity takes a minute or so to replicate in
    Entra ID; ``principalType: ServicePrincipal`` lets its role assignments go in before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.resource.resources.aio import ResourceManagementClient
from azure.mgmt.resource.resources.models import GenericResource

from adapters.azure.errors import translated_errors
from adapters.azure.settings import AzureSettings
from core.errors import ConfigurationError, InvalidRequest, Retryable
from core.layout import tenant_prefix, tenant_topic
from core.ports.message_bus import MessageBus
from core.ports.tenant_stores import TenantStores

DEPLOYMENTS_API = "2024-03-01"
API_VERSIONS = {
    "Microsoft.Storage": "2023-05-01",
    "Microsoft.ServiceBus": "2021-11-01",
    "Microsoft.ManagedIdentity": "2023-01-31",
    "Microsoft.Authorization": "2022-04-01",
}
_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_OUTPUTS = {
    "table": "tableName",
    "table_id": "tableId",
    "container": "containerName",
    "container_id": "containerId",
    "dispatch_topic": "dispatchTopicName",
    "dispatch_topic_id": "dispatchTopicId",
    "dispatch_dead_letter_id": "dispatchDeadLetterId",
    "engine_identity_id": "identityId",
    "engine_identity_client": "identityClientId",
    "engine_identity_principal": "identityPrincipalId",
    "topic_role_id": "topicRoleId",
    "dead_letter_role_id": "deadLetterRoleId",
    "inbox_role_id": "inboxRoleId",
    "queue_role_id": "queueRoleId",
    "blob_role_id": "blobRoleId",
}
#: Deleted on teardown, in this order: role assignments first (Azure keeps them, orphaned,
#: when their principal or scope goes), the identity last.
_CREATED = (
    "topic_role_id",
    "dead_letter_role_id",
    "inbox_role_id",
    "queue_role_id",
    "blob_role_id",
    "table_id",
    "container_id",
    "dispatch_topic_id",
    "dispatch_dead_letter_id",
    "engine_identity_id",
)


def tenant_names(tenant_id: str) -> dict[str, str]:
    """Deployment and resource names of one tenant (valid for ARM and Storage)."""
    if not _TENANT_ID.fullmatch(tenant_id):
        raise InvalidRequest(f"invalid tenant id {tenant_id!r}: 1-64 letters, digits, '_' or '-'")
    digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:8]
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9]", "-", tenant_id.lower())).strip("-")[:40]
    alnum = re.sub(r"[^a-z0-9]", "", tenant_id.lower())[:40]
    hyphenated = f"tenant-{slug}-{digest}" if slug else f"tenant-{digest}"
    return {
        "deployment": f"skycrawl-tenant-{tenant_id[:38]}-{digest}",
        "table": f"tenant{alnum}{digest}",
        "container": hyphenated,
        "identity": f"skycrawl-{hyphenated}",
    }


def _api_version(resource_id: str) -> str:
    found = re.findall(r"/providers/([^/]+)/", resource_id)
    namespace = found[-1] if found else ""  # a role assignment's own, not its scope's
    if namespace not in API_VERSIONS:
        raise ConfigurationError(f"no API version known for {resource_id}")
    return API_VERSIONS[namespace]


def _translate(exc: HttpResponseError, what: str) -> Exception:
    status = exc.status_code or 0
    if 400 <= status < 500 and status != 429:
        return ConfigurationError(f"{what}: {exc.message}")
    return Retryable(f"{what}: {exc.message}")


@translated_errors("ARM")
class ArmProvisioner:
    """Provisioner deploying ``tenant.json`` once per tenant."""

    def __init__(
        self,
        client: ResourceManagementClient,
        settings: AzureSettings,
        *,
        template: Mapping[str, Any] | None = None,
        credential: AsyncTokenCredential | None = None,
        bus: MessageBus | None = None,
        dispatch_topic: str = "skycrawl-dispatch",
        inbox_queue: str = "skycrawl-inbox",
        stores: TenantStores | None = None,
    ) -> None:
        self.client = client
        self._stores = stores
        self._inbox = inbox_queue
        self._settings = settings
        self._bus = bus
        self._dispatch_topic = dispatch_topic
        self._credential = credential  # closed with the provisioner
        self._subscription, self._group = settings.require_arm()
        self._account = settings.tenant_storage_account or settings.storage_account
        self._namespace = settings.tenant_servicebus_namespace or ""
        if template is None:
            try:
                template = json.loads(settings.tenant_template.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigurationError(
                    f"cannot read the tenant template {settings.tenant_template}: {exc}"
                ) from exc
        self._template = dict(template)

    def deployment_id(self, tenant_id: str) -> str:
        name = tenant_names(tenant_id)["deployment"]
        return (
            f"/subscriptions/{self._subscription}/resourceGroups/{self._group}"
            f"/providers/Microsoft.Resources/deployments/{name}"
        )

    async def provision(self, *, tenant_id: str) -> Mapping[str, str]:
        names = tenant_names(tenant_id)
        if not self._account:
            raise ConfigurationError("SKYCRAWL_AZURE_STORAGE_ACCOUNT is needed to provision")
        parameters = {
            "tenantId": tenant_id,
            "storageAccountName": self._account,
            "tableName": names["table"] if self._stores is not None else "",
            "containerName": names["container"],
            "dispatchTopicName": tenant_topic(self._dispatch_topic, tenant_id),
            "serviceBusNamespaceName": self._namespace,
            "identityName": names["identity"],
            "location": self._settings.location,
            "inboxQueueName": self._inbox if self._namespace else "",
            "resultsContainerName": self._settings.blob_container,
            "blobPrefix": tenant_prefix(tenant_id),
            "blobRoleDefinitionId": self._settings.tenant_blob_role_id or "",
        }
        body = GenericResource(
            properties={
                "mode": "Incremental",
                "template": self._template,
                "parameters": {key: {"value": value} for key, value in parameters.items()},
            }
        )
        deployment_id = self.deployment_id(tenant_id)
        try:
            poller = await self.client.resources.begin_create_or_update_by_id(
                deployment_id, body, api_version=DEPLOYMENTS_API
            )
            result = await poller.result()
        except HttpResponseError as exc:
            raise _translate(exc, f"deployment {names['deployment']}") from exc
        properties = dict(result.properties or {})
        state = properties.get("provisioningState")
        if state != "Succeeded":
            raise Retryable(f"deployment {names['deployment']} ended {state}: {properties}")
        outputs = properties.get("outputs") or {}
        resources = {"deployment_id": deployment_id}
        for key, output in _OUTPUTS.items():
            if value := str(outputs[output]["value"]):  # empty: not made on this bus
                resources[key] = value
        if self._bus is not None:
            await self._bus.ensure_topic(topic=resources["dispatch_topic"])
        resources.update(await self._provision_store(tenant_id))
        return resources

    async def _provision_store(self, tenant_id: str) -> dict[str, str]:
        """Dedicated tenant data: the tenant's table, made by the deployment, made sure of on
        the data plane too (what an emulator needs; a no-op after the deployment)."""
        if self._stores is None:
            return {}
        return {"tenant_store": await self._stores.create_store(tenant_id=tenant_id)}

    async def _teardown_store(self, tenant_id: str) -> None:
        if self._stores is not None:
            await self._stores.drop_store(tenant_id=tenant_id)

    async def teardown(self, *, tenant_id: str, resources: Mapping[str, str]) -> None:
        deployment_id = self.deployment_id(tenant_id)
        if self._bus is not None:
            await self._bus.delete_topic(topic=tenant_topic(self._dispatch_topic, tenant_id))
        try:
            deployment = await self.client.resources.get_by_id(
                deployment_id, api_version=DEPLOYMENTS_API
            )
        except ResourceNotFoundError:
            await self._teardown_store(tenant_id)
            return
        outputs = dict((deployment.properties or {}).get("outputs") or {})
        created = [
            str(outputs[_OUTPUTS[key]]["value"])
            for key in _CREATED
            if _OUTPUTS[key] in outputs and outputs[_OUTPUTS[key]].get("value")
        ]
        try:
            for resource_id in [*created, deployment_id]:
                version = (
                    DEPLOYMENTS_API if resource_id == deployment_id else _api_version(resource_id)
                )
                with contextlib.suppress(ResourceNotFoundError):  # gone already: fine
                    poller = await self.client.resources.begin_delete_by_id(
                        resource_id, api_version=version
                    )
                    await poller.result()
        except HttpResponseError as exc:
            raise _translate(exc, f"teardown of tenant {tenant_id}") from exc
        await self._teardown_store(tenant_id)

    async def close(self) -> None:
        await self.client.close()
        if self._credential is not None:
            await self._credential.close()
