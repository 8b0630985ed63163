"""Self-hosted TenantStores: a PostgreSQL schema per tenant, for ``SKYCRAWL_TENANT_DATA=dedicated``.

Features
    The store of tenant ``T`` is the schema ``skycrawl_t_<t>_<8 hex>`` (``store_name``: the
    tenant id lowercased, ``_`` for other characters, shortened; 8 hex of its SHA-256) holding
    its own ``state_items`` table, made by the very statements of the shared table's migration
    (``migrations/0002_state.sql``, run with the tenant's schema first on the ``search_path``),
    so both tables are the same. ``create_store`` creates the schema and table if missing
    (idempotent; concurrent calls serialise on an advisory lock), ``drop_store`` is ``DROP
    SCHEMA ... CASCADE`` (everything of the tenant at once), ``open_store`` a
    ``PostgresStateStore`` on the schema's table, on the deployment's one connection pool.
    A dropped tenant's store is never made again by a late write: the table is missing, the
    statement fails.

Limits
    Every tenant adds a schema, a table and two indexes to the one database: PostgreSQL has no
    hard limit, but catalog size, ``pg_dump`` time and autovacuum work grow with the number of
    tables (thousands are fine, hundreds of thousands are not). A later migration of
    ``state_items`` must also be applied to the tenant schemas.

Settings
    ``SKYCRAWL_SELFHOSTED_DATABASE_URL`` (the role needs ``CREATE`` on the database);
    ``SKYCRAWL_TENANT_DATA=dedicated``.
"""

from __future__ import annotations

import hashlib

from adapters.selfhosted.database import PostgresDatabase
from adapters.selfhosted.migrations import migrations
from adapters.selfhosted.state_store import PostgresStateStore, check_schema
from core.clock import Clock
from core.layout import tenant_store_name

SCHEMA_PREFIX = "skycrawl_t_"
_STATE_MIGRATION = "state"


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big") & (2**63 - 1)


class PostgresTenantStores:
    """One schema with a ``state_items`` table per tenant, in the deployment's database."""

    def __init__(
        self,
        database: PostgresDatabase,
        *,
        clock: Clock | None = None,
        prefix: str = SCHEMA_PREFIX,
    ) -> None:
        self.prefix = check_schema(prefix)
        self._database = database.attach()
        self._clock = clock
        self._closed = False
        (ddl,) = [m.sql for m in migrations() if m.name == _STATE_MIGRATION]
        self._ddl = ddl

    def store_name(self, tenant_id: str) -> str:
        return check_schema(tenant_store_name(self.prefix, tenant_id, max_chars=63, separator="_"))

    async def create_store(self, *, tenant_id: str) -> str:
        schema = self.store_name(tenant_id)
        async with self._database.transaction("create tenant schema") as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            cur = await conn.execute("SELECT to_regclass(%s)", (f'"{schema}".state_items',))
            row = await cur.fetchone()
            if row is None or row[0] is None:
                await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                await conn.execute(self._ddl.encode())
        return schema

    async def drop_store(self, *, tenant_id: str) -> None:
        schema = self.store_name(tenant_id)
        async with self._database.connection("drop tenant schema") as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def open_store(self, tenant_id: str) -> PostgresStateStore:
        return PostgresStateStore(
            self._database, clock=self._clock, schema=self.store_name(tenant_id)
        )

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._database.release()
