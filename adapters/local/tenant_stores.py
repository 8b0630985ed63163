"""Local TenantStores: a tenant's own SQLite file, for ``SKYCRAWL_TENANT_DATA=dedicated``.

Features
    The store of tenant ``T`` is ``<data_dir>/tenants/T/tenant.sqlite3`` (the tenant's
    directory, ``adapters.local.provisioner``): the same ``items`` table and rules as the
    shared ``state.sqlite3`` (``SqliteStateStore``), and a ``meta`` table recording the tenant
    id, the schema version and when it was provisioned.
    ``create_store`` makes the file with its schema (idempotent), ``drop_store`` deletes it
    with its WAL files, ``open_store`` opens a ``SqliteStateStore`` that never creates the
    file: once dropped, the tenant's store answers ``core.errors.NotFound``.

Limits
    One connection and worker thread per open tenant store (``core.tenant_data`` opens a
    tenant's store on its first record and keeps it until the tenant is deleted).

Settings
    ``SKYCRAWL_LOCAL_DATA_DIR``; ``SKYCRAWL_TENANT_DATA=dedicated``. Costs disk space only.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from adapters.local.provisioner import tenant_directory
from adapters.local.state_store import SqliteStateStore
from core.clock import Clock

DATABASE_NAME = "tenant.sqlite3"
SCHEMA_VERSION = "1"


class SqliteTenantStores:
    """One SQLite file per tenant, in the tenant's directory under ``root``."""

    def __init__(self, root: Path, *, clock: Clock | None = None) -> None:
        self.root = root
        self._clock = clock

    def store_name(self, tenant_id: str) -> str:
        return str(tenant_directory(self.root, tenant_id) / DATABASE_NAME)

    async def create_store(self, *, tenant_id: str) -> str:
        path = self.store_name(tenant_id)
        store = SqliteStateStore(Path(path), clock=self._clock)
        try:
            await store.prepare()
        finally:
            await store.close()
        await asyncio.to_thread(_write_meta, Path(path), tenant_id)
        return path

    async def drop_store(self, *, tenant_id: str) -> None:
        path = Path(self.store_name(tenant_id))

        def remove() -> None:
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)

        await asyncio.to_thread(remove)

    def open_store(self, tenant_id: str) -> SqliteStateStore:
        return SqliteStateStore(Path(self.store_name(tenant_id)), clock=self._clock, create=False)

    async def close(self) -> None:
        """Nothing shared: each tenant store owns its connection."""


def _write_meta(database: Path, tenant_id: str) -> None:
    """The ``meta`` table: which tenant the file belongs to, and since when."""
    conn = sqlite3.connect(database, timeout=30, isolation_level=None)
    with contextlib.closing(conn):
        conn.executescript(
            "BEGIN IMMEDIATE;"
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "COMMIT;"
        )
        conn.executemany(
            "INSERT OR IGNORE INTO meta VALUES (?, ?)",
            [
                ("tenant_id", tenant_id),
                ("schema_version", SCHEMA_VERSION),
                ("provisioned_at", datetime.now(UTC).isoformat()),
            ],
        )
