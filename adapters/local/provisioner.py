"""Local Provisioner: one directory and one SQLite database per tenant.

Features
    ``provision(tenant_id=...)`` creates ``<root>/tenants/<tenant_id>/`` holding ``blobs/`` and
    ``tenant.sqlite3`` (WAL mode, with a ``meta`` table recording the tenant id, the schema
    version and when it was provisioned) and returns
    ``{"database": <path of tenant.sqlite3>, "blob_root": <path of blobs/>}`` as absolute paths,
    and, given the bus, creates the tenant's dispatch topic ``<dispatch_topic>-<tenant>``
    (``core.layout.tenant_topic``, with its dead-letter queue) and adds ``"dispatch_topic"``.
    It is idempotent: provisioning again keeps what exists and returns the same references.
    ``teardown`` removes the tenant's directory and everything in it, and its topic with every
    subscription and message; a missing one is fine.
    It only ever deletes ``<root>/tenants/<tenant_id>``, whatever ``resources`` says.

Limits
    Tenant ids are 1-64 letters, digits, ``_`` or ``-``, starting with a letter or digit, else
    ``core.errors.InvalidRequest``. Work runs in a worker thread (``asyncio.to_thread``).

Settings
    ``SKYCRAWL_LOCAL_DATA_DIR`` (the root). Costs disk space only.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from core.errors import InvalidRequest
from core.layout import tenant_topic
from core.ports.message_bus import MessageBus

_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SCHEMA_VERSION = "1"


class DirectoryProvisioner:
    """Provisioner creating a directory, a blob folder and a SQLite file per tenant, and the
    tenant's dispatch topic on ``bus`` (when given)."""

    def __init__(
        self,
        root: Path,
        *,
        bus: MessageBus | None = None,
        dispatch_topic: str = "skycrawl-dispatch",
    ) -> None:
        self.root = root
        self._bus = bus
        self._dispatch_topic = dispatch_topic

    def tenant_dir(self, tenant_id: str) -> Path:
        if not _TENANT_ID.fullmatch(tenant_id):
            raise InvalidRequest(
                f"invalid tenant id {tenant_id!r}: 1-64 letters, digits, '_' or '-'"
            )
        return (self.root / "tenants" / tenant_id).resolve()

    async def provision(self, *, tenant_id: str) -> Mapping[str, str]:
        directory = self.tenant_dir(tenant_id)
        resources = await asyncio.to_thread(_create, directory, tenant_id)
        if self._bus is not None:
            topic = tenant_topic(self._dispatch_topic, tenant_id)
            await self._bus.ensure_topic(topic=topic)
            resources["dispatch_topic"] = topic
        return resources

    async def teardown(self, *, tenant_id: str, resources: Mapping[str, str]) -> None:
        directory = self.tenant_dir(tenant_id)
        if self._bus is not None:
            await self._bus.delete_topic(topic=tenant_topic(self._dispatch_topic, tenant_id))
        await asyncio.to_thread(shutil.rmtree, directory, ignore_errors=True)

    async def close(self) -> None:
        """Nothing to release: plain files and directories."""


def _create(directory: Path, tenant_id: str) -> dict[str, str]:
    blobs = directory / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    database = directory / "tenant.sqlite3"
    conn = sqlite3.connect(database, timeout=30, isolation_level=None)
    with contextlib.closing(conn):
        conn.execute("PRAGMA journal_mode=WAL")
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
    return {"database": str(database), "blob_root": str(blobs)}
