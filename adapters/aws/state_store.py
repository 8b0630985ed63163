"""AWS StateStore: every table of the core in one DynamoDB table, compare-and-set by condition.

Layout
    One item per record: ``pk`` (S, hash key) = ``<table>#<partition>``, ``sk`` (S, range key)
    = key, plus ``tbl``, ``part``, ``data`` (the record as a JSON string, so numbers and nulls
    round-trip exactly), ``ver`` (N, the version) and, for expiring records, ``exp`` (N,
    microseconds since the epoch) and ``ttl`` (N, seconds, the table's TTL attribute).

Features
    * Every write is conditional (``ConditionalCheckFailedException`` → ``core.errors.Conflict``):
      ``create`` requires that no live item has the key (``attribute_not_exists(pk) OR exp <=
      now``, so an expired item is simply overwritten), ``replace`` and ``delete`` require
      ``ver = item.version`` on a live item. That is what lets several conductor Lambdas run
      at once.
    * Reads are strongly consistent. DynamoDB deletes expired items lazily (typically within
      a few days of ``ttl``), so every read also filters on ``exp``: an expired record is
      invisible at once.
    * ``query`` is one DynamoDB ``Query`` on ``pk`` in ``sk`` order (``sk > after``), paged
      with ``ExclusiveStartKey`` until ``limit`` live items are found (``Limit`` counts items
      before the expiry filter). ``scan`` (housekeeping and the operator's container list
      only) reads the whole table with a filter on ``tbl``: its cost grows with the table.
    * ``write_chains`` (``core.ports.state_store.GroupCommit``) sends a group of replaces and
      deletes as one ``TransactWriteItems``, each write keeping its own condition: all of
      them or none. DynamoDB cancels the whole transaction when one condition fails, and
      names it (``CancellationReasons``: ``ConditionalCheckFailed`` at that action's
      index): that write is its chain's ``Conflict``, the chain's later writes are dropped
      (its earlier ones stay in), and the rest goes again, with a fresh
      ``ClientRequestToken`` each time (botocore's own retries of one request apply it
      once) -- so the results are one by one's, and one transaction stores them. Any other
      cancellation stores nothing and is raised: ``TransactionConflict`` (another
      transaction on one of the items) and throttling as ``Retryable``.
    * boto3 is synchronous: calls run in worker threads (``adapters.aws.errors.call``);
      throttling and 5xx answers become ``core.errors.Retryable``.

Limits
    An item is at most 400 KB: ``data`` may be 350,000 bytes of JSON
    (``capabilities.max_item_bytes``), encoded by ``core.ports.state_store.encode_data``
    (sorted keys, no NaN / Infinity, as on every backend). Table names may not contain ``#``; keys and partitions
    must be non-empty (DynamoDB refuses empty key strings). ``expires_at`` must be
    timezone-aware. Bad input is ``core.errors.InvalidRequest``.
    A group is one transaction only if DynamoDB can take it as one: at most 100 writes
    (``MAX_TRANSACTION_ACTIONS``), each on an item of its own, and 4 MB of items (estimated
    from the request, deleted items counted at their size as last read, with a margin).
    Anything else goes one by one (``core.ports.state_store.write_one_by_one``: the same
    results, a call each, no promise across writes) rather than in several transactions,
    which would give a crash in between half a group -- a routing batch is well inside the
    limits.

Settings
    ``SKYCRAWL_AWS_TABLE`` (``deploy/aws/template.yaml`` creates it: on-demand capacity, TTL on
    ``ttl``, point-in-time recovery), ``SKYCRAWL_AWS_REGION``, ``SKYCRAWL_AWS_ENDPOINT_URL``.
    With ``SKYCRAWL_TENANT_DATA=dedicated`` each tenant's crawl and usage records are in a
    table of its own with the same layout (``adapters.aws.tenant_stores``).

Cost
    On-demand: nothing at idle but storage ($0.25 per GB-month); ~$1.25 per million writes
    and $0.25 per million reads (strongly consistent reads count double). A write inside a
    transaction costs twice a plain one (two write request units), and a cancelled
    transaction is paid too: a group trades write cost for one round trip instead of n.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.aws.errors import ClientError, call, error_code
from adapters.aws.settings import AwsSettings
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
    write_one_by_one,
)

MAX_DATA_BYTES = 350_000
#: ``TransactWriteItems``: at most 100 actions, no item twice, 4 MB of items in all (counted
#: here as the request's attribute names and values, with room to spare)
MAX_TRANSACTION_ACTIONS = 100
MAX_TRANSACTION_BYTES = 4_000_000 - 100 * 1024
#: cancellation reasons that another try may clear (the rest are bugs: ``ValidationError``)
_TRANSIENT_REASONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LIVE = "(attribute_not_exists(#exp) OR #exp > :now)"


def _to_us(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise InvalidRequest("expires_at must be timezone-aware")
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _from_us(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _check_names(table: str, partition: str, key: str | None = None) -> None:
    if not table or "#" in table:
        raise InvalidRequest(f"invalid table name {table!r}: non-empty, without '#'")
    if not partition or key == "":
        raise InvalidRequest("partition and key must not be empty on DynamoDB")


def _item(raw: Mapping[str, Any]) -> Item:
    exp = raw.get("exp")
    return Item(
        table=raw["tbl"]["S"],
        partition=raw["part"]["S"],
        key=raw["sk"]["S"],
        data=decode_data(raw["data"]["S"]),
        version=int(raw["ver"]["N"]),
        expires_at=_from_us(int(exp["N"])) if exp else None,
    )


def _stale(item: Item) -> Conflict:
    return Conflict(f"{item.table}/{item.partition}/{item.key} is not at v{item.version}")


def _size(value: Any) -> int:
    """Bytes of an attribute map as DynamoDB counts them, roughly: names and string values
    in UTF-8, numbers as their digits (an overestimate: DynamoDB packs two per byte)."""
    if isinstance(value, Mapping):
        return sum(len(str(name).encode()) + _size(inner) for name, inner in value.items())
    return len(str(value).encode())


@dataclass(frozen=True, slots=True)
class _Action:
    """One write of ``write_chains`` as a ``TransactItems`` entry, with the item it leaves
    when it applies (None: a delete) and the bytes it counts for."""

    write: Write
    request: dict[str, Any]
    result: Item | None
    size: int


class DynamoStateStore:
    """StateStore on one DynamoDB table (see the module docstring for the layout)."""

    capabilities = StateCapabilities(max_item_bytes=MAX_DATA_BYTES, native_ttl=True)

    def __init__(
        self,
        *,
        dynamodb: Any,
        table: str,
        clock: Clock | None = None,
        owns_client: bool = True,
    ) -> None:
        """``owns_client=False``: ``close`` leaves ``dynamodb`` open (a tenant's own table on
        the client every tenant store shares, ``adapters.aws.tenant_stores``)."""
        self._db = dynamodb  # a boto3 DynamoDB client (Any: boto3 ships no type stubs)
        self._table = table
        self._clock: Clock = clock or SystemClock()
        self._owns_client = owns_client

    @classmethod
    def from_settings(cls, aws: AwsSettings, *, clock: Clock | None = None) -> DynamoStateStore:
        return cls(dynamodb=aws.client("dynamodb"), table=aws.table, clock=clock)

    async def _call(self, fn: Any, **kwargs: Any) -> Any:
        """``call``, with a table that does not exist as ``NotFound`` (a tenant's own table
        after its teardown: ``adapters.aws.tenant_stores``)."""
        try:
            return await call(fn, **kwargs)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise NotFound(f"DynamoDB table {self._table} does not exist") from exc
            raise

    def _now_us(self) -> dict[str, str]:
        return {"N": str(_to_us(self._clock.now()))}

    @staticmethod
    def _key(table: str, partition: str, key: str) -> dict[str, dict[str, str]]:
        return {"pk": {"S": f"{table}#{partition}"}, "sk": {"S": key}}

    async def _conditional(self, fn: Any, what: str, **kwargs: Any) -> None:
        try:
            await self._call(fn, TableName=self._table, **kwargs)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise Conflict(what) from exc
            raise

    async def get(self, *, table: str, partition: str, key: str) -> Item | None:
        _check_names(table, partition, key)
        response = await self._call(
            self._db.get_item,
            TableName=self._table,
            Key=self._key(table, partition, key),
            ConsistentRead=True,
        )
        raw = response.get("Item")
        if raw is None:
            return None
        item = _item(raw)
        if item.expires_at is not None and item.expires_at <= self._clock.now():
            return None
        return item

    def _record(
        self, table: str, partition: str, key: str, encoded: str, version: int, exp: int | None
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            **self._key(table, partition, key),
            "tbl": {"S": table},
            "part": {"S": partition},
            "data": {"S": encoded},
            "ver": {"N": str(version)},
        }
        if exp is not None:
            record["exp"] = {"N": str(exp)}
            record["ttl"] = {"N": str(math.ceil(exp / 1_000_000))}
        return record

    async def create(
        self,
        *,
        table: str,
        partition: str,
        key: str,
        data: Mapping[str, Any],
        expires_at: datetime | None = None,
    ) -> Item:
        _check_names(table, partition, key)
        encoded, exp = encode_data(data, max_bytes=MAX_DATA_BYTES), _to_us(expires_at)
        await self._conditional(
            self._db.put_item,
            f"{table}/{partition}/{key} already exists",
            Item=self._record(table, partition, key, encoded, 1, exp),
            ConditionExpression="attribute_not_exists(pk) OR #exp <= :now",
            ExpressionAttributeNames={"#exp": "exp"},
            ExpressionAttributeValues={":now": self._now_us()},
        )
        return Item(table, partition, key, decode_data(encoded), 1, _from_us(exp))

    def _at_version(self, item: Item) -> dict[str, Any]:
        """The condition of a replace or delete: ``item`` still at its version, and live."""
        return {
            "ConditionExpression": f"#ver = :ver AND {_LIVE}",
            "ExpressionAttributeNames": {"#ver": "ver", "#exp": "exp"},
            "ExpressionAttributeValues": {
                ":ver": {"N": str(item.version)},
                ":now": self._now_us(),
            },
        }

    def _replacing(
        self, item: Item, data: Mapping[str, Any], expires_at: datetime | None
    ) -> tuple[dict[str, Any], Item]:
        """The ``PutItem`` parameters of a replace, and the item it leaves."""
        encoded, exp = encode_data(data, max_bytes=MAX_DATA_BYTES), _to_us(expires_at)
        version = item.version + 1
        request = {
            "Item": self._record(item.table, item.partition, item.key, encoded, version, exp),
            **self._at_version(item),
        }
        return request, Item(
            item.table, item.partition, item.key, decode_data(encoded), version, _from_us(exp)
        )

    async def replace(
        self, *, item: Item, data: Mapping[str, Any], expires_at: datetime | None = None
    ) -> Item:
        request, replaced = self._replacing(item, data, expires_at)
        await self._conditional(self._db.put_item, str(_stale(item)), **request)
        return replaced

    async def delete(self, *, item: Item) -> None:
        await self._conditional(
            self._db.delete_item,
            str(_stale(item)),
            Key=self._key(item.table, item.partition, item.key),
            **self._at_version(item),
        )

    async def write_chains(self, *, chains: Sequence[Sequence[Write]]) -> list[list[Written]]:
        """``core.ports.state_store.GroupCommit``: the group as one ``TransactWriteItems``
        when it fits one (see the module docstring), else one by one. DynamoDB cancels a
        transaction as a whole when a condition fails: the writes it names
        (``ConditionalCheckFailed``) are those chains' ``Conflict`` errors, their later writes
        are dropped, and the rest is sent again -- until a transaction commits (or nothing
        is left), so only one of them stores anything."""
        actions = [[self._action(write) for write in chain] for chain in chains]
        if not _fits_one_transaction(actions):
            return await write_one_by_one(self, chains)
        kept = [len(chain) for chain in actions]  # each chain's writes still in
        lost: list[Conflict | None] = [None] * len(actions)
        while True:
            sent = [(c, i) for c, chain in enumerate(actions) for i in range(kept[c])]
            if not sent:
                break
            try:
                await self._call(
                    self._db.transact_write_items,
                    TransactItems=[actions[c][i].request for c, i in sent],
                    ClientRequestToken=str(uuid.uuid4()),  # botocore's own retries: once
                )
                break
            except ClientError as exc:
                failed = _conditions_failed(exc, len(sent))
            for position in failed:
                c, i = sent[position]
                if i < kept[c]:
                    kept[c], lost[c] = i, _stale(actions[c][i].write.item)
        results: list[list[Written]] = []
        for c, chain in enumerate(actions):
            done: list[Written] = [action.result for action in chain[: kept[c]]]
            if lost[c] is not None:
                done.append(lost[c])
            results.append(done)
        return results

    def _action(self, write: Write) -> _Action:
        item = write.item
        if isinstance(write, Replace):
            request, replaced = self._replacing(item, write.data, write.expires_at)
            put = {"TableName": self._table, **request}
            return _Action(write, {"Put": put}, replaced, _size(request["Item"]))
        key = self._key(item.table, item.partition, item.key)
        delete = {"TableName": self._table, "Key": key, **self._at_version(item)}
        # the item it deletes counts too: its data as last read, and the other attributes
        size = _size(key) + len(encode_data(item.data, max_bytes=MAX_DATA_BYTES)) + 64
        return _Action(write, {"Delete": delete}, None, size)

    async def query(
        self, *, table: str, partition: str, limit: int | None = None, after: str | None = None
    ) -> list[Item]:
        _check_names(table, partition)
        if limit is not None and limit < 0:
            raise InvalidRequest("limit must not be negative")
        if limit == 0:
            return []
        condition = "pk = :pk"
        values: dict[str, Any] = {":pk": {"S": f"{table}#{partition}"}, ":now": self._now_us()}
        if after is not None:
            condition += " AND sk > :after"
            values[":after"] = {"S": after}
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "FilterExpression": _LIVE,
            "ExpressionAttributeNames": {"#exp": "exp"},
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
        }
        found: list[Item] = []
        while True:
            if limit is not None:
                request["Limit"] = limit - len(found)
            response = await self._call(self._db.query, **request)
            found.extend(_item(raw) for raw in response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if start is None or (limit is not None and len(found) >= limit):
                return found[:limit] if limit is not None else found
            request["ExclusiveStartKey"] = start

    async def scan(self, *, table: str) -> list[Item]:
        _check_names(table, "-")
        request: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": f"tbl = :tbl AND {_LIVE}",
            "ExpressionAttributeNames": {"#exp": "exp"},
            "ExpressionAttributeValues": {":tbl": {"S": table}, ":now": self._now_us()},
            "ConsistentRead": True,
        }
        found: list[Item] = []
        while True:
            response = await self._call(self._db.scan, **request)
            found.extend(_item(raw) for raw in response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if start is None:
                return sorted(found, key=lambda item: (item.partition, item.key))
            request["ExclusiveStartKey"] = start

    async def close(self) -> None:
        if self._owns_client:
            self._db.close()


def _fits_one_transaction(actions: Sequence[Sequence[_Action]]) -> bool:
    """Whether the writes may go in one ``TransactWriteItems``: at most 100 of them, each
    on an item of its own, within the 4 MB of items."""
    flat = [action for chain in actions for action in chain]
    keys = {
        (action.write.item.table, action.write.item.partition, action.write.item.key)
        for action in flat
    }
    return (
        len(flat) <= MAX_TRANSACTION_ACTIONS
        and len(keys) == len(flat)
        and sum(action.size for action in flat) <= MAX_TRANSACTION_BYTES
    )


def _conditions_failed(exc: ClientError, sent: int) -> list[int]:
    """The positions of the actions whose condition failed, if that is all that cancelled
    the transaction; ``exc`` again (or ``Retryable``, for what another try may clear)
    otherwise."""
    if error_code(exc) != "TransactionCanceledException":
        raise exc
    codes = [reason.get("Code", "None") for reason in exc.response.get("CancellationReasons", [])]
    others = set(codes) - {"None", "ConditionalCheckFailed"}
    if others and others <= _TRANSIENT_REASONS:
        raise Retryable(f"TransactWriteItems cancelled: {', '.join(sorted(others))}") from exc
    failed = [position for position, code in enumerate(codes) if code == "ConditionalCheckFailed"]
    if others or len(codes) != sent or not failed:
        raise exc
    return failed
