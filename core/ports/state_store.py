"""StateStore port: versioned JSON items with compare-and-set.

Items live in ``table`` / ``partition`` / ``key`` (DynamoDB pk+sk, Table storage
PartitionKey+RowKey, Firestore collection/document). Every write is conditional:
``create`` fails with ``Conflict`` if the key exists, ``replace`` and ``delete`` fail with
``Conflict`` unless the stored version equals ``item.version``. That is what lets several
conductor instances run at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Item:
    table: str
    partition: str
    key: str
    data: Mapping[str, Any]
    version: int
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StateCapabilities:
    max_item_bytes: int
    native_ttl: bool


class StateStore(Protocol):
    capabilities: StateCapabilities

    async def get(self, *, table: str, partition: str, key: str) -> Item | None: ...

    async def create(
        self,
        *,
        table: str,
        partition: str,
        key: str,
        data: Mapping[str, Any],
        expires_at: datetime | None = None,
    ) -> Item:
        """Insert a new item at version 1; ``Conflict`` if the key exists."""
        ...

    async def replace(
        self, *, item: Item, data: Mapping[str, Any], expires_at: datetime | None = None
    ) -> Item:
        """Overwrite if still at ``item.version``; returns the item at the next version."""
        ...

    async def delete(self, *, item: Item) -> None:
        """Delete if still at ``item.version``; ``Conflict`` otherwise (missing included)."""
        ...

    async def query(
        self, *, table: str, partition: str, limit: int | None = None, after: str | None = None
    ) -> list[Item]:
        """Items of one partition in key order, starting after key ``after``."""
        ...

    async def scan(self, *, table: str) -> list[Item]:
        """Every item of a table (housekeeping only)."""
        ...

    async def close(self) -> None: ...
