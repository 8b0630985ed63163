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
    * boto3 is synchronous: calls run in worker threads (``adapters.aws.errors.call``);
      throttling and 5xx answers become ``core.errors.Retryable``.
    * No ``write_chains`` of its own (``core.ports.state_store.GroupCommit``): a routing
      batch's writes are plain conditional writes made at the same time
      (``write_one_by_one``), one round trip per step of the chains. A
      ``TransactWriteItems`` would make each step's writes one request, but bills each write
      twice (two write request units), and the conductor needs no promise across them: for
      a batch of 10 that is ~$12.5 more per million batches, against ~$0.1 of Lambda time
      (a ~10 ms round trip at 512 MB) saved.

Limits
    An item is at most 400 KB: ``data`` may be 350,000 bytes of JSON
    (``capabilities.max_item_bytes``), encoded by ``core.ports.state_store.encode_data``
    (sorted keys, no NaN / Infinity, as on every backend). Table names may not contain ``#``; keys and partitions
    must be non-empty (DynamoDB refuses empty key strings). ``expires_at`` must be
    timezone-aware. Bad input is ``core.errors.InvalidRequest``.

Settings
    ``SKYCRAWL_AWS_TABLE`` (``deploy/aws/template.yaml`` creates it: on-demand capacity, TTL on
    ``ttl``, point-in-time recovery), ``SKYCRAWL_AWS_REGION``, ``SKYCRAWL_AWS_ENDPOINT_URL``.
    With ``SKYCRAWL_TENANT_DATA=dedicated`` each tenant's crawl and usage records are in a
    table of its own with the same layout (``adapters.aws.tenant_stores``).

Cost
    On-demand: nothing at idle but storage ($0.25 per GB-month); ~$1.25 per million writes
    and $0.25 per million reads (strongly consistent reads count double).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.aws.errors import ClientError, call, error_code
from adapters.aws.settings import AwsSettings
from core.clock import Clock, SystemClock
from core.errors import Conflict, InvalidRequest, NotFound
from core.ports.state_store import Item, StateCapabilities, decode_data, encode_data

MAX_DATA_BYTES = 350_000
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

    async def replace(
        self, *, item: Item, data: Mapping[str, Any], expires_at: datetime | None = None
    ) -> Item:
        encoded, exp = encode_data(data, max_bytes=MAX_DATA_BYTES), _to_us(expires_at)
        version = item.version + 1
        await self._conditional(
            self._db.put_item,
            f"{item.table}/{item.partition}/{item.key} is not at v{item.version}",
            Item=self._record(item.table, item.partition, item.key, encoded, version, exp),
            ConditionExpression=f"#ver = :ver AND {_LIVE}",
            ExpressionAttributeNames={"#ver": "ver", "#exp": "exp"},
            ExpressionAttributeValues={":ver": {"N": str(item.version)}, ":now": self._now_us()},
        )
        return Item(
            item.table, item.partition, item.key, decode_data(encoded), version, _from_us(exp)
        )

    async def delete(self, *, item: Item) -> None:
        await self._conditional(
            self._db.delete_item,
            f"{item.table}/{item.partition}/{item.key} is not at v{item.version}",
            Key=self._key(item.table, item.partition, item.key),
            ConditionExpression=f"#ver = :ver AND {_LIVE}",
            ExpressionAttributeNames={"#ver": "ver", "#exp": "exp"},
            ExpressionAttributeValues={":ver": {"N": str(item.version)}, ":now": self._now_us()},
        )

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
