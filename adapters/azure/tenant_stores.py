"""Azure TenantStores: a Table storage table per tenant, for ``SKYCRAWL_TENANT_DATA=dedicated``.

Features
    The store of tenant ``T`` is the table ``tenant<t><8 hex>`` of the storage account
    (``adapters.azure.provisioner.tenant_names``: the tenant id's letters and digits,
    shortened, and 8 hex of its SHA-256), laid out as the shared state table
    (``TableStateStore``). The tenant's ARM deployment (``deploy/azure/tenant.json``) creates
    it and its teardown deletes it; ``create_store`` / ``drop_store`` do the same on the data
    plane (idempotent: a no-op after the deployment, what Azurite or a fresh account needs),
    and ``open_store`` is a ``TableStateStore`` on it that never creates the table, on the
    transport of the one ``TableServiceClient`` every tenant store shares. A write to a
    dropped tenant's table fails (404): nothing makes it again.

Limits and cost
    A storage account holds any number of tables; all of them share the account's
    scalability targets (20,000 entities per second for the whole account), so dedicated
    tables isolate a tenant's data and its deletion, not its throughput -- a tenant with
    heavy traffic needs an account of its own. An empty table costs nothing.

Settings
    ``SKYCRAWL_AZURE_STORAGE_CONNECTION_STRING`` or ``..._STORAGE_ACCOUNT``,
    ``SKYCRAWL_TENANT_DATA=dedicated``.
"""

from __future__ import annotations

import contextlib

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables.aio import TableServiceClient

from adapters.azure.errors import translated_errors
from adapters.azure.provisioner import tenant_names
from adapters.azure.state_store import TableStateStore
from core.clock import Clock


@translated_errors("Table storage")
class TableTenantStores:
    """One Table storage table per tenant, in the deployment's storage account."""

    def __init__(
        self,
        service: TableServiceClient,
        *,
        clock: Clock | None = None,
        credential: AsyncTokenCredential | None = None,
    ) -> None:
        self.service = service
        self._clock = clock
        self._credential = credential  # closed with the stores

    def store_name(self, tenant_id: str) -> str:
        return tenant_names(tenant_id)["table"]

    async def create_store(self, *, tenant_id: str) -> str:
        name = self.store_name(tenant_id)
        with contextlib.suppress(ResourceExistsError):
            await self.service.create_table(name)
        return name

    async def drop_store(self, *, tenant_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            await self.service.delete_table(self.store_name(tenant_id))

    def open_store(self, tenant_id: str) -> TableStateStore:
        table = self.service.get_table_client(self.store_name(tenant_id))
        return TableStateStore(table, clock=self._clock, create_table=False)

    async def close(self) -> None:
        await self.service.close()
        if self._credential is not None:
            await self._credential.close()
