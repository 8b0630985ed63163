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

Grouped writes
    ``write_chains`` (``core.ports.state_store.GroupCommit``) uses entity group transactions
    (``submit_transaction``), which Table storage allows only within one ``PartitionKey``
    -- one logical table and partition here -- with at most 100 operations, each entity
    once, and 4 MiB of request. A group goes step by step: every chain's first write, then
    the second write of each chain whose first applied, and so on; each step's writes of one
    partition are one transaction (split further beyond 100 writes or 4 MiB). A routing
    batch of one tenant (each crawl's outbox clear, then its backlog delete) is two
    transactions instead of two writes per crawl. Each write keeps its ETag condition (read
    first where the store does not remember it, as ``replace`` does); Table storage cancels
    a transaction at its first failed condition and names it (412, or 404: gone): that
    write is its chain's ``Conflict`` and the rest goes again. Results are one by one's.
    Atomicity is per transaction: a group of one partition and one step is all or nothing,
    a wider one is several transactions -- an error before the first has committed fails
    the group as a whole (nothing stored); after that, it is the result of each write the
    failed transaction carried, ending their chains, as one by one reports errors. A group
    on one item twice goes one by one.

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

import asyncio
import contextlib
import dataclasses
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
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
from azure.data.tables import TableEntity, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient

from adapters.azure.errors import SDK_ERRORS, translate, translated_errors
from core.clock import Clock, SystemClock
from core.errors import Conflict, InvalidRequest
from core.ports.state_store import (
    Item,
    Replace,
    StateCapabilities,
    Write,
    Written,
    decode_data,
    encode_data,
    stale,
    write_one_by_one,
)

MAX_ITEM_CHARS = 450_000
#: an entity group transaction: at most 100 operations on one PartitionKey, each entity
#: once, 4 MiB of request (counted here as the data plus 1 KiB per operation, with room)
MAX_TRANSACTION_OPERATIONS = 100
MAX_TRANSACTION_CHARS = 4_000_000 - 100 * 1024
_LOST = frozenset({"UpdateConditionNotSatisfied", "ConditionNotMet", "ResourceNotFound"})
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


@dataclasses.dataclass(frozen=True, slots=True)
class _Op:
    """One write of ``write_chains`` as a transaction operation: its chain, the entity (a
    replace's new one, or a delete's keys), the item it leaves (None: a delete) and the
    ETag it is conditional on, once known."""

    chain: int
    write: Write
    entity: TableEntity
    result: Item | None
    etag: str = ""

    @property
    def size(self) -> int:
        return sum(len(str(value)) for value in self.entity.values()) + 1024

    def operation(self) -> tuple[str, TableEntity, dict[str, Any]]:
        condition = {"etag": self.etag, "match_condition": MatchConditions.IfNotModified}
        if self.result is None:
            return ("delete", self.entity, condition)
        return ("update", self.entity, {"mode": UpdateMode.REPLACE, **condition})


def _chunks(ops: Sequence[_Op]) -> list[list[_Op]]:
    """``ops`` of one partition as transactions Table storage takes (100 operations and
    4 MiB at most each)."""
    chunks: list[list[_Op]] = []
    size = 0
    for op in ops:
        full = len(chunks[-1]) == MAX_TRANSACTION_OPERATIONS if chunks else True
        if full or size + op.size > MAX_TRANSACTION_CHARS:
            chunks.append([])
            size = 0
        chunks[-1].append(op)
        size += op.size
    return chunks


def _repeats(chains: Sequence[Sequence[Write]]) -> bool:
    keys = [(w.item.table, w.item.partition, w.item.key) for chain in chains for w in chain]
    return len(set(keys)) != len(keys)


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
        raise stale(item)

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

    async def write_chains(self, *, chains: Sequence[Sequence[Write]]) -> list[list[Written]]:
        """``core.ports.state_store.GroupCommit`` as far as entity group transactions go
        (one partition each): step by step -- every chain's first write, then the second
        of each chain whose first applied, ... -- each step's writes in one transaction per
        partition (see the module docstring). A group on one item twice goes one by one."""
        if _repeats(chains):
            return await write_one_by_one(self, chains)
        # InvalidRequest (data, expiry) before anything is sent
        ops = [[self._op(c, write) for write in chain] for c, chain in enumerate(chains)]
        results: list[list[Written]] = [[] for _ in chains]
        committed = False  # until then an error fails the group as a whole
        for step in range(max((len(chain) for chain in ops), default=0)):
            # the next write of each chain whose writes so far all applied
            due = [
                chain[step]
                for c, chain in enumerate(ops)
                if step < len(chain) and all(not isinstance(r, Exception) for r in results[c])
            ]
            partitions: dict[str, list[_Op]] = {}
            for op in await self._with_etags(due, results, raising=not committed):
                partitions.setdefault(str(op.entity["PartitionKey"]), []).append(op)
            for chunk in [chunk for same in partitions.values() for chunk in _chunks(same)]:
                try:
                    done = await self._transaction(chunk)
                except SDK_ERRORS as exc:
                    if not committed:
                        raise
                    done = [translate(exc, "Table storage (write_chains)")] * len(chunk)
                committed = committed or any(not isinstance(r, Exception) for r in done)
                for op, result in zip(chunk, done, strict=True):
                    results[op.chain].append(result)
        return results

    def _op(self, chain: int, write: Write) -> _Op:
        item = write.item
        pk, rk = partition_key(item.table, item.partition), escape_key(item.key)
        if not isinstance(write, Replace):
            return _Op(chain, write, TableEntity(PartitionKey=pk, RowKey=rk), None)
        encoded, version = encode_data(write.data, max_bytes=MAX_ITEM_CHARS), item.version + 1
        entity = self._entity(pk, rk, encoded, version, _expiry(write.expires_at))
        replaced = Item(
            item.table, item.partition, item.key, decode_data(encoded), version, write.expires_at
        )
        return _Op(chain, write, entity, replaced)

    async def _with_etags(
        self, due: list[_Op], results: list[list[Written]], *, raising: bool
    ) -> list[_Op]:
        """The ops of ``due`` whose item is live at its version, with its ETag (read first
        where not remembered, as ``replace`` / ``delete`` do); the others' ``Conflict`` --
        or, unless ``raising``, the error of the read -- ends their chain."""

        async def etag_of(item: Item) -> str:
            if self._expired(item):
                raise Conflict(f"{item.table}/{item.partition}/{item.key} has expired")
            return await self._etag_of(item)

        found = await asyncio.gather(
            *(etag_of(op.write.item) for op in due), return_exceptions=True
        )
        ready: list[_Op] = []
        for op, etag in zip(due, found, strict=True):
            if isinstance(etag, str):
                ready.append(dataclasses.replace(op, etag=etag))
                continue
            if not isinstance(etag, Exception):
                raise etag  # cancelled
            if not isinstance(etag, Conflict):
                if raising:
                    raise etag
                if isinstance(etag, SDK_ERRORS):
                    etag = translate(etag, "Table storage (write_chains)")
            results[op.chain].append(etag)
        return ready

    async def _transaction(self, chunk: list[_Op]) -> list[Written]:
        """``chunk`` (one partition) in one entity group transaction. Table storage cancels
        it as a whole at the first lost condition (412, or 404: the entity is gone) and
        names it: that op is a ``Conflict`` and the rest goes again."""
        done: dict[int, Written] = {}
        left = list(range(len(chunk)))
        while left:
            try:
                answers = await self.table.submit_transaction([chunk[i].operation() for i in left])
            except TableTransactionError as exc:
                if getattr(exc, "error_code", None) not in _LOST or not 0 <= exc.index < len(left):
                    raise
                lost = left.pop(exc.index)
                done[lost] = stale(chunk[lost].write.item)
                continue
            for i, answer in zip(left, answers, strict=True):
                result = chunk[i].result
                if result is not None:
                    self._remember(result, str(answer["etag"]))
                done[i] = result
            left = []
        return [done[i] for i in range(len(chunk))]

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
