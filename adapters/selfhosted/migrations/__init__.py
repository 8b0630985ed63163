"""Versioned SQL migrations of the self-hosted provider: ``NNNN_name.sql`` beside this file.

``migrate`` applies, in version order and each in its own transaction, the files not yet
recorded in ``skycrawl_migrations``; a transaction-level advisory lock makes concurrent
callers (several control-plane processes starting at once) apply each file exactly once.
A migration is never edited once released: a change is a new file with the next number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from psycopg import AsyncConnection

#: ``pg_advisory_xact_lock`` key of the migrator ("skycrawl" as eight ASCII bytes).
LOCK_KEY = int.from_bytes(b"skycrawl", "big") & 0x7FFF_FFFF_FFFF_FFFF
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration file of this package, in version order."""
    found = []
    for entry in resources.files(__package__).iterdir():
        match = _FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


async def migrate(conn: AsyncConnection[Any]) -> list[int]:
    """Apply the pending migrations on ``conn`` (autocommit); returns the versions applied."""
    applied: list[int] = []
    for migration in migrations():
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS skycrawl_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute(
                "SELECT 1 FROM skycrawl_migrations WHERE version = %s", (migration.version,)
            )
            if await cur.fetchone() is not None:
                continue
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO skycrawl_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied.append(migration.version)
    return applied
