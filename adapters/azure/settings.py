"""Settings of the Azure provider: every field is ``SKYCRAWL_AZURE_<FIELD>`` in the environment.

Two ways to authenticate, per service:

* a **connection string** (``SERVICEBUS_CONNECTION_STRING``, ``STORAGE_CONNECTION_STRING``):
  simplest, and what Azurite and the tests use;
* **Microsoft Entra ID** through ``azure-identity``'s ``DefaultAzureCredential`` when only the
  namespace / account name is set (``SERVICEBUS_NAMESPACE``, ``STORAGE_ACCOUNT``): the
  function app's and the engines' managed identity in production, ``az login`` on a laptop.
  ``MANAGED_IDENTITY_CLIENT_ID`` picks a user-assigned identity.

The bus is Service Bus by default; ``BUS=storage-queue`` runs everything on one storage
account (no namespace to pay for; see ``adapters.azure.message_bus_storage_queue``).
Container Instances and ARM deployments need ``SUBSCRIPTION_ID`` and ``RESOURCE_GROUP``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigurationError

#: The tenant template shipped with the code (``deploy/azure/tenant.json``).
DEFAULT_TENANT_TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "azure" / "tenant.json"


class AzureSettings(BaseSettings):
    """Everything the Azure adapters read from ``SKYCRAWL_AZURE_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="SKYCRAWL_AZURE_", extra="ignore", frozen=True)

    bus: Literal["servicebus", "storage-queue"] = Field(
        "servicebus",
        description="Message bus and scheduler: 'servicebus' (queues, topic, scheduled "
        "messages) or 'storage-queue' (Storage queues only, no namespace needed).",
    )
    servicebus_connection_string: SecretStr | None = Field(
        None, description="Service Bus connection string (Endpoint=sb://...;SharedAccessKey...)."
    )
    servicebus_namespace: str | None = Field(
        None,
        description="Fully qualified namespace (<name>.servicebus.windows.net), used with "
        "Entra ID when no connection string is set.",
    )
    servicebus_lock_duration_s: float = Field(
        60.0,
        ge=5,
        le=300,
        description="Peek-lock duration of the queues and subscriptions this provider creates; "
        "longer leases are kept by renewing the lock.",
    )
    servicebus_max_message_bytes: int = Field(
        192 * 1024,
        gt=0,
        description="Largest body plus attributes sent (Standard tier: 256 KiB including "
        "headers; Premium: up to 100 MiB).",
    )
    storage_connection_string: SecretStr | None = Field(
        None, description="Storage account connection string (blobs, tables, queues)."
    )
    storage_account: str | None = Field(
        None, description="Storage account name, used with Entra ID when no connection string."
    )
    managed_identity_client_id: str | None = Field(
        None, description="Client id of the user-assigned managed identity to authenticate as."
    )
    state_table: str = Field(
        "skycrawlstate", description="Table holding every StateStore item (created if missing)."
    )
    blob_container: str = Field(
        "skycrawl", description="Blob container of pages, manifests, checkpoints and exports."
    )
    subscription_id: str | None = Field(
        None, description="Azure subscription of the container groups and tenant deployments."
    )
    resource_group: str | None = Field(
        None, description="Resource group of the container groups and tenant deployments."
    )
    location: str = Field(
        "westeurope", description="Region of engine containers whose egress names none."
    )
    engine_cpu: float = Field(1.0, gt=0, le=4, description="vCPUs of each engine container.")
    engine_memory_gb: float = Field(
        2.0, gt=0, le=16, description="Memory (GiB) of each engine container."
    )
    engine_identity_id: str | None = Field(
        None,
        description="Resource id of a user-assigned identity attached to engine containers "
        "(lets them use Entra ID instead of connection strings, and pull from ACR).",
    )
    engine_identity_client_id: str | None = Field(
        None,
        description="Client id of ENGINE_IDENTITY_ID: engines authenticate as it (passed to "
        "them as their MANAGED_IDENTITY_CLIENT_ID).",
    )
    engine_identity_principal_id: str | None = Field(
        None,
        description="Principal (object) id of ENGINE_IDENTITY_ID (informational: data access "
        "goes to each tenant's own identity, created by ArmProvisioner).",
    )
    tenant_blob_role_id: str | None = Field(
        None,
        description="GUID of the role each tenant's identity gets on the results container, "
        "under a condition on its tenants/<tenant>/ path (main.bicep defines one with the blob "
        "data actions only); unset: the built-in Storage Blob Data Contributor.",
    )
    engine_subnet_id: str | None = Field(
        None, description="Subnet resource id to run engines in (private egress); optional."
    )
    registry_server: str | None = Field(
        None, description="Registry of the engine image (e.g. myacr.azurecr.io)."
    )
    registry_username: str | None = Field(None, description="Registry user (admin or token).")
    registry_password: SecretStr | None = Field(None, description="Registry password.")
    tenant_template: Path = Field(
        DEFAULT_TENANT_TEMPLATE,
        description="Compiled ARM template deployed per tenant (deploy/azure/tenant.json).",
    )
    tenant_storage_account: str | None = Field(
        None,
        description="Storage account that per-tenant tables, containers and queues go into "
        "(defaults to storage_account).",
    )
    tenant_servicebus_namespace: str | None = Field(
        None,
        description="Service Bus namespace *name* of the bus, where each tenant's deployment "
        "declares its dispatch topic; unset: the Storage-queue bus (a poison queue per tenant).",
    )

    def require_arm(self) -> tuple[str, str]:
        """``(subscription_id, resource_group)``, or ``ConfigurationError`` naming the gap."""
        if not self.subscription_id or not self.resource_group:
            raise ConfigurationError(
                "SKYCRAWL_AZURE_SUBSCRIPTION_ID and SKYCRAWL_AZURE_RESOURCE_GROUP must be set"
            )
        return self.subscription_id, self.resource_group
