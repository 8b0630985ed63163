"""Local Provisioner: one directory per tenant, and in dedicated mode its own SQLite database.

Features
    ``provision(tenant_id=...)`` creates ``<root>/tenants/<tenant_id>/`` holding ``blobs/`` and
    returns ``{"blob_root": <path of blobs/>}`` (absolute); given the bus, it creates the
    tenant's dispatch topic ``<dispatch_topic>-<tenant>`` (``core.layout.tenant_topic``, with
    its dead-letter queue) and adds ``"dispatch_topic"``. Given ``stores`` (dedicated tenant
    data, ``SKYCRAWL_TENANT_DATA=dedicated``), it also creates the tenant's database
    ``tenant.sqlite3`` there (``adapters.local.tenant_stores``; the self-hosted provider's
    stores are PostgreSQL schemas) and adds its name as ``"tenant_store"``; in pooled mode
    there is no tenant database, the tenant's records live in the shared ``state.sqlite3``.
    It is idempotent: provisioning again keeps what exists and returns the same references.
    ``teardown`` removes the tenant's database, directory and everything in it, and its topic
    with every subscription and message; a missing one is fine.
    It only ever deletes ``<root>/tenants/<tenant_id>``, whatever ``resources`` says.

Limits
    Tenant ids are 1-64 letters, digits, ``_`` or ``-``, starting with a letter or digit, else
    ``core.errors.InvalidRequest``. Work runs in a worker thread (``asyncio.to_thread``).

Settings
    ``SKYCRAWL_LOCAL_DATA_DIR`` (the root), ``SKYCRAWL_TENANT_DATA``. Costs disk space only.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from core.errors import InvalidRequest
from core.layout import tenant_topic
from core.ports.message_bus import MessageBus
from core.ports.tenant_stores import TenantStores

_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def tenant_directory(root: Path, tenant_id: str) -> Path:
    """``<root>/tenants/<tenant_id>``, absolute; ``InvalidRequest`` for a bad tenant id."""
    if not _TENANT_ID.fullmatch(tenant_id):
        raise InvalidRequest(f"invalid tenant id {tenant_id!r}: 1-64 letters, digits, '_' or '-'")
    return (root / "tenants" / tenant_id).resolve()


class DirectoryProvisioner:
    """Provisioner creating a directory and a blob folder per tenant, the tenant's dispatch
    topic on ``bus`` and its own store in ``stores`` (each when given)."""

    def __init__(
        self,
        root: Path,
        *,
        bus: MessageBus | None = None,
        dispatch_topic: str = "skycrawl-dispatch",
        stores: TenantStores | None = None,
    ) -> None:
        self.root = root
        self._bus = bus
        self._dispatch_topic = dispatch_topic
        self._stores = stores

    def tenant_dir(self, tenant_id: str) -> Path:
        return tenant_directory(self.root, tenant_id)

    async def provision(self, *, tenant_id: str) -> Mapping[str, str]:
        directory = self.tenant_dir(tenant_id)
        resources = await asyncio.to_thread(_create, directory)
        if self._stores is not None:
            resources["tenant_store"] = await self._stores.create_store(tenant_id=tenant_id)
        if self._bus is not None:
            topic = tenant_topic(self._dispatch_topic, tenant_id)
            await self._bus.ensure_topic(topic=topic)
            resources["dispatch_topic"] = topic
        return resources

    async def teardown(self, *, tenant_id: str, resources: Mapping[str, str]) -> None:
        directory = self.tenant_dir(tenant_id)
        if self._bus is not None:
            await self._bus.delete_topic(topic=tenant_topic(self._dispatch_topic, tenant_id))
        if self._stores is not None:
            await self._stores.drop_store(tenant_id=tenant_id)
        await asyncio.to_thread(shutil.rmtree, directory, ignore_errors=True)

    async def close(self) -> None:
        """Nothing to release: plain files and directories."""


def _create(directory: Path) -> dict[str, str]:
    blobs = directory / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    return {"blob_root": str(blobs)}
