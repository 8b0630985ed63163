"""Firestore StateStore: versioned JSON items with compare-and-set, on the async client.

Layout (Native mode)::

    <prefix><table>/<partition>/<prefix><table>-items/<key>
    e.g. skycrawl-crawls/tn_1a2b/skycrawl-crawls-items/cr_9f8e

Each item is one document ``{partition, key, json, version, expires_at}``; the partition
document itself is never written. Document ids are the partition and key percent-encoded
(``/`` and ``%`` included; ``.``, ``..`` and ``__x__`` made safe), while the ``key`` field keeps
the real key, so ``query`` orders by it (Firestore compares strings by UTF-8 bytes, i.e. by code
point, like Python) using only the automatic single-field index: no composite index to deploy.
``scan`` is a collection-group query on ``<prefix><table>-items``. ``data`` is stored as a
JSON string: any JSON value round-trips exactly (Firestore maps cannot hold nested arrays) and
a document costs one index entry, not one per nested field.

Compare-and-set
    ``create`` is Firestore's ``create`` (fails if the document exists); an *expired* item in
    the way is deleted first, with a ``last_update_time`` precondition. ``replace`` and
    ``delete`` write with the precondition ``last_update_time == T``, where ``T`` is the update
    time at which this instance saw ``item.version`` (remembered from its own reads and writes;
    read afresh, with the version compared, when it has not seen it): nothing can slip in
    between, without transactions (which the emulator serialises pessimistically), in one
    round trip for the usual read-modify-write. A lost race is ``core.errors.Conflict``.

Grouped writes
    ``write_chains`` (``core.ports.state_store.GroupCommit``) makes a group one batched write
    (one ``Commit``, atomic: all of it or nothing), each write with its own
    ``last_update_time`` precondition, so a routing batch's clears and deletes cost one
    round trip (plus a read for each item this instance has not seen at that version).
    Firestore fails the whole batch on a lost precondition without saying which write lost:
    the store then reads the documents again (one ``BatchGetDocuments``), the writes whose
    documents moved on are their chains' ``Conflict`` (the chains' later writes dropped, the
    earlier ones kept) and the rest is committed again -- one by one's results, stored by
    one commit. Any other error stores nothing and is raised. A group that one batch
    cannot hold -- more than 500 writes (``MAX_BATCH_WRITES``), about 10 MiB of request,
    or a document twice -- goes one by one. Billing is per document written either way.

Expiry
    ``expires_at`` is a Firestore timestamp; expired items are invisible at once (filtered on
    read against the injected clock). Deploy a TTL policy on ``expires_at`` for the tables that
    expire (``deploy/gcp`` does, for idempotency and rate): Firestore then deletes them within
    about a day.

Limits and cost
    An item's JSON up to 1,000,000 bytes (documents max out at 1 MiB), encoded by
    ``core.ports.state_store.encode_data`` (sorted keys, no NaN / Infinity, as everywhere); partitions and keys up
    to 400 characters; ``expires_at`` timezone-aware. Firestore bills per operation (a replace
    is one read and one write; ~$0.03 per 100k reads, ~$0.09 per 100k writes) plus storage;
    nothing while idle. The free tier covers 50k reads and 20k writes a day.

Settings
    ``SKYCRAWL_GCP_PROJECT``, ``SKYCRAWL_GCP_FIRESTORE_DATABASE``,
    ``SKYCRAWL_GCP_FIRESTORE_PREFIX``; the emulator is chosen the library's way, with
    ``FIRESTORE_EMULATOR_HOST``. With ``SKYCRAWL_TENANT_DATA=dedicated`` each tenant's crawl
    and usage records are in collections of its own, laid out the same way under a prefix of
    the tenant (``adapters.gcp.tenant_stores``).
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.async_document import AsyncDocumentReference
from google.cloud.firestore_v1.base_document import DocumentSnapshot

from adapters.gcp.errors import translate
from core.clock import Clock, SystemClock
from core.errors import Conflict, InvalidRequest, NotFound, Retryable
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

MAX_ITEM_BYTES = 1_000_000
#: a batched write: at most 500 writes and 10 MiB of request (counted here as the JSON plus
#: 1 KiB per write, with room to spare)
MAX_BATCH_WRITES = 500
MAX_BATCH_BYTES = 9_000_000
MAX_NAME_CHARS = 400
_RESERVED = re.compile(r"__.*__")
_PAGE = 200
Snapshot = DocumentSnapshot[Any]
_REMEMBERED = 10_000

Seen = tuple[int, datetime, datetime | None]  # version, update time, expiry


def document_id(value: str) -> str:
    """A Firestore-safe document id for ``value``, distinct for distinct values."""
    if not value or len(value) > MAX_NAME_CHARS:
        raise InvalidRequest(f"partitions and keys have 1 to {MAX_NAME_CHARS} characters")
    escaped = quote(value, safe="")
    if escaped in (".", "..") or _RESERVED.fullmatch(escaped):
        escaped = f"%{ord(escaped[0]):02X}{escaped[1:]}"
    return escaped


def _timestamp(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidRequest("expires_at must be timezone-aware")
    return value


def _plain(value: datetime | None) -> datetime | None:
    """A library timestamp as a plain ``datetime`` in UTC (microsecond precision)."""
    if value is None:
        return None
    utc = value.astimezone(UTC)
    return datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, UTC
    )


@dataclass(frozen=True, slots=True)
class _Op:
    """One write of ``write_chains``: its fields (None: a delete), the item it leaves."""

    write: Write
    fields: dict[str, Any] | None
    result: Item | None


@dataclass(frozen=True, slots=True)
class _Ready:
    """An ``_Op`` with its document and the update time it is conditional on."""

    op: _Op
    ref: AsyncDocumentReference
    update_time: datetime


def _fits_one_batch(chains: Sequence[Sequence[_Op]]) -> bool:
    ops = [op for chain in chains for op in chain]
    where = {(op.write.item.table, op.write.item.partition, op.write.item.key) for op in ops}
    size = sum(len(str((op.fields or {}).get("json", ""))) + 1024 for op in ops)
    return len(ops) <= MAX_BATCH_WRITES and len(where) == len(ops) and size <= MAX_BATCH_BYTES


class FirestoreStateStore:
    """StateStore on Firestore collections, one per table."""

    capabilities = StateCapabilities(max_item_bytes=MAX_ITEM_BYTES, native_ttl=True)

    def __init__(
        self,
        *,
        client: firestore.AsyncClient,
        prefix: str = "skycrawl-",
        clock: Clock | None = None,
        marker: AsyncDocumentReference | None = None,
        owns_client: bool = True,
    ) -> None:
        """A tenant's own store (``adapters.gcp.tenant_stores``): ``marker`` is the document
        that says it is provisioned (a ``create`` without it is ``NotFound``: Firestore would
        make the collections again), and ``owns_client=False`` leaves the shared client open
        on ``close``."""
        self._client = client
        self._prefix = prefix
        self._clock: Clock = clock or SystemClock()
        self._seen: OrderedDict[tuple[str, str, str], Seen] = OrderedDict()
        self._marker = marker
        self._owns_client = owns_client

    def _remember(self, item: Item, update_time: datetime) -> Item:
        where = (item.table, item.partition, item.key)
        self._seen.pop(where, None)
        self._seen[where] = (item.version, update_time, item.expires_at)
        while len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)
        return item

    def _items(self, table: str) -> str:
        return f"{self._prefix}{table}-items"

    def _document(self, table: str, partition: str, key: str) -> AsyncDocumentReference:
        partition_ref = self._client.collection(f"{self._prefix}{table}").document(
            document_id(partition)
        )
        return cast(
            AsyncDocumentReference,
            partition_ref.collection(self._items(table)).document(document_id(key)),
        )

    def _expired(self, snapshot: Snapshot) -> bool:
        expires = snapshot.get("expires_at")
        return expires is not None and expires <= self._clock.now()

    def _item(self, table: str, snapshot: Snapshot) -> Item:
        item = Item(
            table=table,
            partition=snapshot.get("partition"),
            key=snapshot.get("key"),
            data=decode_data(snapshot.get("json")),
            version=int(snapshot.get("version")),
            expires_at=_plain(snapshot.get("expires_at")),
        )
        return self._remember(item, snapshot.update_time)

    async def _read(self, ref: AsyncDocumentReference) -> Snapshot:
        try:
            return await ref.get()
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"reading {ref.path}") from exc

    async def get(self, *, table: str, partition: str, key: str) -> Item | None:
        snapshot = await self._read(self._document(table, partition, key))
        if not snapshot.exists or self._expired(snapshot):
            return None
        return self._item(table, snapshot)

    async def create(
        self,
        *,
        table: str,
        partition: str,
        key: str,
        data: Mapping[str, Any],
        expires_at: datetime | None = None,
    ) -> Item:
        text, expires = encode_data(data, max_bytes=MAX_ITEM_BYTES), _timestamp(expires_at)
        ref = self._document(table, partition, key)
        await self._check_marker()
        fields = {
            "partition": partition,
            "key": key,
            "json": text,
            "version": 1,
            "expires_at": expires,
        }
        for _ in range(3):
            try:
                result = await ref.create(fields)
            except gexc.AlreadyExists:
                snapshot = await self._read(ref)
                if snapshot.exists and not self._expired(snapshot):
                    raise Conflict(f"{table}/{partition}/{key} exists") from None
                if snapshot.exists:  # expired but not purged yet: take its place
                    await self._write(ref, snapshot.update_time, None)
                continue
            except gexc.GoogleAPICallError as exc:
                raise translate(exc, f"creating {ref.path}") from exc
            item = Item(table, partition, key, decode_data(text), 1, expires)
            return self._remember(item, result.update_time)
        raise Conflict(f"{table}/{partition}/{key}: too much contention")

    async def _check_marker(self) -> None:
        """Once per instance, before its first ``create``: is the store still provisioned?"""
        if self._marker is None:
            return
        if not (await self._read(self._marker)).exists:
            raise NotFound(f"{self._prefix}*: the tenant's store is not provisioned")
        self._marker = None

    async def _current(self, item: Item) -> tuple[AsyncDocumentReference, datetime]:
        """The item's document and the update time at which it was at ``item.version``;
        ``Conflict`` if it is known not to be there any more."""
        ref = self._document(item.table, item.partition, item.key)
        seen = self._seen.get((item.table, item.partition, item.key))
        if seen is not None and seen[0] == item.version:
            _, update_time, expires = seen
            if expires is not None and expires <= self._clock.now():
                raise Conflict(f"{item.table}/{item.partition}/{item.key} has expired")
            return ref, update_time
        snapshot = await self._read(ref)
        if (
            not snapshot.exists
            or self._expired(snapshot)
            or int(snapshot.get("version")) != item.version
        ):
            raise stale(item)
        return ref, snapshot.update_time

    async def _write(
        self, ref: AsyncDocumentReference, update_time: datetime, fields: dict[str, Any] | None
    ) -> datetime | None:
        """Update (or, with None, delete) only if not written since ``update_time``; returns
        the new update time of an update."""
        option = self._client.write_option(last_update_time=update_time)
        try:
            if fields is None:
                await ref.delete(option=option)
                return None
            result = await ref.update(fields, option=option)
        except (gexc.FailedPrecondition, gexc.NotFound) as exc:
            raise Conflict(f"{ref.path} changed meanwhile") from exc
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"writing {ref.path}") from exc
        return result.update_time  # type: ignore[no-any-return]

    async def replace(
        self, *, item: Item, data: Mapping[str, Any], expires_at: datetime | None = None
    ) -> Item:
        text, expires = encode_data(data, max_bytes=MAX_ITEM_BYTES), _timestamp(expires_at)
        ref, update_time = await self._current(item)
        version = item.version + 1
        fields = {"json": text, "version": version, "expires_at": expires}
        written = await self._write(ref, update_time, fields)
        new = Item(item.table, item.partition, item.key, decode_data(text), version, expires)
        return self._remember(new, written or update_time)

    async def delete(self, *, item: Item) -> None:
        ref, update_time = await self._current(item)
        self._seen.pop((item.table, item.partition, item.key), None)
        await self._write(ref, update_time, None)

    async def write_chains(self, *, chains: Sequence[Sequence[Write]]) -> list[list[Written]]:
        """``core.ports.state_store.GroupCommit``: the group as one batched write (atomic),
        each write keeping its ``last_update_time`` precondition. Firestore fails the whole
        batch on a lost precondition without saying which: the documents are read again
        (one ``get_all``), the writes they show lost are their chains' ``Conflict`` (the
        chains' later writes dropped), and the rest is committed again. A group beyond one
        batch (500 writes, 10 MiB, a document twice) goes one by one."""
        ops = [[self._op(write) for write in chain] for chain in chains]  # InvalidRequest first
        if not _fits_one_batch(ops):
            return await write_one_by_one(self, chains)
        found = await asyncio.gather(
            *(self._current(op.write.item) for chain in ops for op in chain),
            return_exceptions=True,
        )
        answers = iter(found)
        kept: list[list[_Ready]] = [[] for _ in ops]
        lost: list[Exception | None] = [None] * len(ops)
        for c, chain in enumerate(ops):
            for op in chain:
                current = next(answers)
                if lost[c] is not None:
                    continue
                if isinstance(current, Conflict):
                    lost[c] = current  # as ``replace`` / ``delete`` would find it
                elif isinstance(current, BaseException):
                    raise current  # nothing stored: the group fails as a whole
                else:
                    kept[c].append(_Ready(op, *current))
        await self._commit(kept, lost)
        results: list[list[Written]] = []
        for applied, failed in zip(kept, lost, strict=True):
            done: list[Written] = [each.op.result for each in applied]
            if failed is not None:
                done.append(failed)
            results.append(done)
        return results

    def _op(self, write: Write) -> _Op:
        if not isinstance(write, Replace):
            return _Op(write, None, None)
        item, version = write.item, write.item.version + 1
        text = encode_data(write.data, max_bytes=MAX_ITEM_BYTES)
        expires = _timestamp(write.expires_at)
        fields = {"json": text, "version": version, "expires_at": expires}
        new = Item(item.table, item.partition, item.key, decode_data(text), version, expires)
        return _Op(write, fields, new)

    async def _commit(self, kept: list[list[_Ready]], lost: list[Exception | None]) -> None:
        """Commit every write of ``kept`` in one batch; after a lost precondition, cut the
        chains whose documents moved on (``_drop_moved``) and commit the rest -- twice in a
        row a read that shows nothing moved is ``Retryable``, with nothing stored."""
        unexplained = 0
        while ready := [each for chain in kept for each in chain]:
            batch = self._client.batch()
            for each in ready:
                option = self._client.write_option(last_update_time=each.update_time)
                if each.op.fields is None:
                    batch.delete(each.ref, option=option)
                else:
                    batch.update(each.ref, each.op.fields, option=option)
            try:
                answers = await batch.commit()
            except (gexc.FailedPrecondition, gexc.NotFound) as exc:
                if await self._drop_moved(kept, lost):
                    unexplained = 0
                    continue
                unexplained += 1
                if unexplained == 2:
                    raise Retryable(f"a batched write lost a precondition: {exc}") from exc
                continue
            except gexc.GoogleAPICallError as exc:
                raise translate(exc, f"committing {len(ready)} writes") from exc
            for each, answer in zip(ready, answers, strict=True):
                item = each.op.write.item
                if each.op.result is None:
                    self._seen.pop((item.table, item.partition, item.key), None)
                else:
                    self._remember(each.op.result, answer.update_time or each.update_time)
            return

    async def _drop_moved(self, kept: list[list[_Ready]], lost: list[Exception | None]) -> bool:
        """Read every document of ``kept`` at once; a chain whose write finds its document
        gone, expired or written since is cut there, with that write's ``Conflict``. Whether
        any was."""
        refs = [each.ref for chain in kept for each in chain]
        try:
            now = {
                snapshot.reference.path: snapshot async for snapshot in self._client.get_all(refs)
            }
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"reading {len(refs)} documents") from exc
        cut = False
        for c, chain in enumerate(kept):
            for i, each in enumerate(chain):
                snapshot = now.get(each.ref.path)
                if (
                    snapshot is None
                    or not snapshot.exists
                    or self._expired(snapshot)
                    or snapshot.update_time != each.update_time
                ):
                    item = each.op.write.item
                    lost[c] = Conflict(
                        f"{item.table}/{item.partition}/{item.key} changed meanwhile"
                    )
                    del chain[i:]
                    cut = True
                    break
        return cut

    async def query(
        self, *, table: str, partition: str, limit: int | None = None, after: str | None = None
    ) -> list[Item]:
        collection = (
            self._client.collection(f"{self._prefix}{table}")
            .document(document_id(partition))
            .collection(self._items(table))
        )
        found: list[Item] = []
        cursor = after
        while limit is None or len(found) < limit:
            query = collection.order_by("key")
            if cursor is not None:
                query = query.start_after({"key": cursor})
            try:
                page = [snapshot async for snapshot in query.limit(_PAGE).stream()]
            except gexc.GoogleAPICallError as exc:
                raise translate(exc, f"querying {table}/{partition}") from exc
            found += [self._item(table, s) for s in page if not self._expired(s)]
            if len(page) < _PAGE:
                break
            cursor = page[-1].get("key")
        return found if limit is None else found[:limit]

    async def scan(self, *, table: str) -> list[Item]:
        group = self._client.collection_group(self._items(table))
        try:
            return [self._item(table, s) async for s in group.stream() if not self._expired(s)]
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"scanning {table}") from exc

    async def close(self) -> None:
        """Close the Firestore client (unless shared: ``owns_client``)."""
        if self._owns_client:
            await close_client(self._client)


async def close_client(client: firestore.AsyncClient) -> None:
    """Close a Firestore client: its gRPC channel (if one was opened) and transport."""
    api = getattr(client, "_firestore_api_internal", None)  # made on first call
    if api is not None:
        await api.transport.close()
    client.close()  # type: ignore[no-untyped-call]
