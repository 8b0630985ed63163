"""TableStateStore: the StateStore on Azure Table storage, with ETag compare-and-set.

Layout
    Every item of every logical table lives in one Azure table
    (``SKYCRAWL_AZURE_STATE_TABLE``, default ``skycrawlstate``): ``PartitionKey`` is
    ``<table>|<partition>`` and ``RowKey`` the key, each part percent-encoded where Table storage
    forbids the character (``/ \\ # ?``, control characters, and ``%`` and ``|`` themselves --
    ``#`` in particular may not appear in keys, hence ``|`` as the separator). Properties:
    ``v`` (the item version), ``expires`` (ISO 8601 UTC with microseconds, empty when the item
    never expires) and the JSON of the data in ``d0``, ``d1``, ... (32,000 characters each).

Compare-and-set
    ``create`` is Insert Entity (409 → ``core.errors.Conflict``). ``replace`` and ``delete``
    are conditional on the entity's ETag (``If-Match``, ``MatchConditions.IfNotModified``):
    the store remembers the ETag of every version it has read or written (bounded), and
    otherwise reads the entity first and checks the version, so a write never succeeds on a
    version other than ``item.version`` -- a 412 is ``Conflict``. Several conductor instances
    can therefore run at once, as the core requires.

Expiry
    Table storage has no TTL: an item whose ``expires`` has passed is filtered out of every
    read (``get``, ``query``, ``scan``), refused by ``replace`` / ``delete`` and replaced by
    ``create``; expired items that are read are deleted on the way, best effort. Items never
    read again stay (a few hundred bytes each).

Limits
    Item JSON at most 450,000 characters (an entity is 1 MiB of UTF-16), encoded by
    ``core.ports.state_store.encode_data`` (ASCII, sorted keys, no NaN / Infinity, as on every
    backend); ``data`` must be JSON serialisable and ``expires_at`` timezone-aware, else ``core.errors.InvalidRequest``.
    ``query`` pages client-side past expired items; ``scan`` reads a whole logical table (a
    partition-key range), for housekeeping only. Keys containing escaped characters sort by
    their escaped form.

Settings and cost
    ``SKYCRAWL_AZURE_STORAGE_CONNECTION_STRING`` or ``..._STORAGE_ACCOUNT``, and
    ``SKYCRAWL_AZURE_STATE_TABLE``. The table is created on first use. With
    ``SKYCRAWL_TENANT_DATA=dedicated`` each tenant's crawl and usage records are in a table of
    its own with the same layout (``adapters.azure.tenant_stores``). Costs ~$0.045 per GB and
    month plus ~$0.0004 per 10,000 transactions (Standard LRS); nothing when idle.
"""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient

from adapters.azure.errors import translated_errors
from core.clock import Clock, SystemClock
from core.errors import Conflict, InvalidRequest
from core.ports.state_store import Item, StateCapabilities, decode_data, encode_data

MAX_ITEM_CHARS = 450_000
_CHUNK = 32_000
_ETAG_CACHE = 10_000
_SEPARATOR = "|"
_FORBIDDEN = re.compile(r"[%|/\\#?\x00-\x1f\x7f-\x9f]")


def escape_key(part: str) -> str:
    """Percent-encode what Table storage forbids in keys (and ``%`` / ``|``)."""
    return _FORBIDDEN.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), part)


def unescape_key(part: str) -> str:
    return re.sub(
        r"(?:%[0-9A-F]{2})+", lambda m: bytes.fromhex(m.group().replace("%", "")).decode(), part
    )


def partition_key(table: str, partition: str) -> str:
    return f"{escape_key(table)}{_SEPARATOR}{escape_key(partition)}"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _expiry(moment: datetime | None) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is None:
        raise InvalidRequest("expires_at must be timezone-aware")
    return moment.isoformat(timespec="microseconds")


@translated_errors("Table storage")
class TableStateStore:
    """StateStore on one Azure table, conditional writes by ETag."""

    capabilities = StateCapabilities(max_item_bytes=MAX_ITEM_CHARS, native_ttl=False)

    def __init__(
        self,
        table: TableClient,
        *,
        clock: Clock | None = None,
        credential: AsyncTokenCredential | None = None,
        create_table: bool = True,
    ) -> None:
        """``create_table=False``: never create the table (a tenant's own table, made by the
        provisioner and gone after its teardown: ``adapters.azure.tenant_stores``)."""
        self.table = table
        self._credential = credential  # closed with the store
        self._clock: Clock = clock or SystemClock()
        self._etags: OrderedDict[tuple[str, str, int], str] = OrderedDict()
        self._table_ready = not create_table

    # ------------------------------------------------------------------ entities

    def _entity(self, pk: str, rk: str, encoded: str, version: int, expires: str) -> TableEntity:
        entity = TableEntity(PartitionKey=pk, RowKey=rk, v=version, expires=expires)
        for index in range(0, max(len(encoded), 1), _CHUNK):
            entity[f"d{index // _CHUNK}"] = encoded[index : index + _CHUNK]
        return entity

    def _item(self, table: str, partition: str, entity: Mapping[str, Any]) -> Item:
        chunks = sorted(
            (int(name[1:]), value) for name, value in entity.items() if re.fullmatch(r"d\d+", name)
        )
        expires = str(entity.get("expires") or "")
        item = Item(
            table=table,
            partition=partition,
            key=unescape_key(str(entity["RowKey"])),
            data=decode_data("".join(value for _, value in chunks) or "{}"),
            version=int(entity["v"]),
            expires_at=datetime.fromisoformat(expires) if expires else None,
        )
        etag = getattr(entity, "metadata", {}).get("etag")
        if etag:
            self._remember(item, etag)
        return item

    def _remember(self, item: Item, etag: str) -> None:
        slot = (partition_key(item.table, item.partition), escape_key(item.key), item.version)
        self._etags[slot] = etag
        self._etags.move_to_end(slot)
        while len(self._etags) > _ETAG_CACHE:
            self._etags.popitem(last=False)

    def _expired(self, item: Item) -> bool:
        return item.expires_at is not None and item.expires_at <= self._clock.now()

    async def _ensure_table(self) -> None:
        if not self._table_ready:
            with contextlib.suppress(ResourceExistsError):
                await self.table.create_table()
            self._table_ready = True

    async def _read(self, pk: str, rk: str) -> TableEntity | None:
        try:
            return await self.table.get_entity(pk, rk)
        except ResourceNotFoundError:
            return None

    async def _purge(self, entity: TableEntity) -> None:
        etag = entity.metadata.get("etag")
        with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError, HttpResponseError):
            await self.table.delete_entity(
                entity["PartitionKey"],
                entity["RowKey"],
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )

    # ------------------------------------------------------------------ the port

    async def get(self, *, table: str, partition: str, key: str) -> Item | None:
        entity = await self._read(partition_key(table, partition), escape_key(key))
        if entity is None:
            return None
        item = self._item(table, partition, entity)
        if self._expired(item):
            await self._purge(entity)
            return None
        return item

    async def create(
        self,
        *,
        table: str,
        partition: str,
        key: str,
        data: Mapping[str, Any],
        expires_at: datetime | None = None,
    ) -> Item:
        encoded, expires = encode_data(data, max_bytes=MAX_ITEM_CHARS), _expiry(expires_at)
        pk, rk = partition_key(table, partition), escape_key(key)
        await self._ensure_table()
        for _ in range(3):
            try:
                created = await self.table.create_entity(self._entity(pk, rk, encoded, 1, expires))
            except ResourceExistsError as exc:
                existing = await self._read(pk, rk)
                if existing is None:
                    continue  # deleted meanwhile: try again
                if not self._expired(self._item(table, partition, existing)):
                    raise Conflict(f"{table}/{partition}/{key} already exists") from exc
                await self._purge(existing)
                continue
            item = Item(table, partition, key, decode_data(encoded), 1, expires_at)
            self._remember(item, str(created["etag"]))
            return item
        raise Conflict(f"{table}/{partition}/{key}: too much contention")

    async def _etag_of(self, item: Item) -> str:
        """The ETag of ``item`` at exactly ``item.version``, or ``Conflict``."""
        pk, rk = partition_key(item.table, item.partition), escape_key(item.key)
        cached = self._etags.get((pk, rk, item.version))
        if cached is not None:
            return cached
        entity = await self._read(pk, rk)
        if entity is not None:
            current = self._item(item.table, item.partition, entity)
            if current.version == item.version and not self._expired(current):
                return str(entity.metadata["etag"])
        raise Conflict(f"{item.table}/{item.partition}/{item.key} is not at v{item.version}")

    async def replace(
        self, *, item: Item, data: Mapping[str, Any], expires_at: datetime | None = None
    ) -> Item:
        encoded, expires = encode_data(data, max_bytes=MAX_ITEM_CHARS), _expiry(expires_at)
        if self._expired(item):
            raise Conflict(f"{item.table}/{item.partition}/{item.key} has expired")
        etag = await self._etag_of(item)
        pk, rk = partition_key(item.table, item.partition), escape_key(item.key)
        entity = self._entity(pk, rk, encoded, item.version + 1, expires)
        try:
            written = await self.table.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise Conflict(f"{item.table}/{item.partition}/{item.key} changed meanwhile") from exc
        updated = Item(
            item.table, item.partition, item.key, decode_data(encoded), item.version + 1, expires_at
        )
        self._remember(updated, str(written["etag"]))
        return updated

    async def delete(self, *, item: Item) -> None:
        if self._expired(item):
            raise Conflict(f"{item.table}/{item.partition}/{item.key} has expired")
        etag = await self._etag_of(item)
        statuses: list[int] = []  # the SDK swallows a 404 on delete: watch the response

        def watch(response: Any) -> None:
            statuses.append(response.http_response.status_code)

        try:
            await self.table.delete_entity(
                partition_key(item.table, item.partition),
                escape_key(item.key),
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
                raw_response_hook=watch,
            )
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise Conflict(f"{item.table}/{item.partition}/{item.key} changed meanwhile") from exc
        if 404 in statuses:
            raise Conflict(f"{item.table}/{item.partition}/{item.key} is gone")

    async def query(
        self, *, table: str, partition: str, limit: int | None = None, after: str | None = None
    ) -> list[Item]:
        if limit is not None and limit < 0:
            raise InvalidRequest("limit must not be negative")
        if limit == 0:
            return []
        query = f"PartitionKey eq {_quote(partition_key(table, partition))}"
        if after is not None:
            query += f" and RowKey gt {_quote(escape_key(after))}"
        per_page = None if limit is None else min(max(limit, 1), 1000)
        return await self._collect(table, query, limit, per_page, partition)

    async def scan(self, *, table: str) -> list[Item]:
        prefix = escape_key(table) + _SEPARATOR
        upper = escape_key(table) + chr(ord(_SEPARATOR) + 1)
        query = f"PartitionKey ge {_quote(prefix)} and PartitionKey lt {_quote(upper)}"
        return await self._collect(table, query, None, None, None)

    async def _collect(
        self, table: str, query: str, limit: int | None, per_page: int | None, fixed: str | None
    ) -> list[Item]:
        """Items matching ``query`` (of ``fixed`` partition, or each entity's own)."""
        items: list[Item] = []
        try:
            async for entity in self.table.query_entities(query, results_per_page=per_page):
                pk = str(entity["PartitionKey"])
                partition = fixed if fixed is not None else unescape_key(pk.split(_SEPARATOR)[1])
                found = self._item(table, partition, entity)
                if self._expired(found):
                    await self._purge(entity)
                    continue
                items.append(found)
                if limit is not None and len(items) >= limit:
                    break
        except ResourceNotFoundError:  # the table does not exist yet: nothing stored
            return []
        return items

    async def close(self) -> None:
        await self.table.close()
        if self._credential is not None:
            await self._credential.close()
