"""DynamoDB and S3 specifics beyond the contract suites: the item layout an operator sees in
the table, expiry that DynamoDB has not applied yet, paging past expired items, the blob
prefix, batched prefix deletes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

import adapters.aws.blob_store as blob_store_module
from adapters.aws.blob_store import S3BlobStore
from adapters.aws.state_store import MAX_DATA_BYTES, DynamoStateStore
from core.clock import FakeClock
from core.errors import InvalidRequest, NotFound
from tests.contract.backends_aws import create_state_table
from tests.integration.aws.moto_server import client, unique


@pytest.fixture
async def state(moto_endpoint: str) -> AsyncIterator[tuple[DynamoStateStore, FakeClock, str]]:
    table = unique("state")
    create_state_table(table)
    clock = FakeClock()
    store = DynamoStateStore(dynamodb=client("dynamodb"), table=table, clock=clock)
    yield store, clock, table
    await store.close()


async def test_items_are_laid_out_for_operators_and_ttl(
    state: tuple[DynamoStateStore, FakeClock, str],
) -> None:
    store, clock, table = state
    expires = clock.now() + timedelta(seconds=90, microseconds=500)
    await store.create(
        table="crawls", partition="tn_1", key="c1", data={"n": 1.5}, expires_at=expires
    )
    raw = client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": "crawls#tn_1"}, "sk": {"S": "c1"}}
    )["Item"]
    assert raw["data"] == {"S": '{"n":1.5}'}
    assert (raw["tbl"], raw["part"], raw["ver"]) == ({"S": "crawls"}, {"S": "tn_1"}, {"N": "1"})
    assert int(raw["ttl"]["N"]) == int(expires.timestamp()) + 1  # whole seconds, rounded up


async def test_expired_items_are_hidden_before_dynamodb_deletes_them(
    state: tuple[DynamoStateStore, FakeClock, str],
) -> None:
    store, clock, table = state
    for i in range(30):
        await store.create(
            table="rate",
            partition="p",
            key=f"k{i:02d}",
            data={},
            expires_at=clock.now() + timedelta(seconds=10),
        )
    await store.create(table="rate", partition="p", key="z-live", data={})
    clock.advance(11)
    count = client("dynamodb").scan(TableName=table)["Count"]
    assert count == 31  # still stored: DynamoDB's TTL deletes lazily
    assert [i.key for i in await store.query(table="rate", partition="p", limit=1)] == ["z-live"]
    assert [i.key for i in await store.scan(table="rate")] == ["z-live"]


async def test_query_pages_through_more_than_one_response(
    state: tuple[DynamoStateStore, FakeClock, str],
) -> None:
    store, _, _ = state
    blob = "x" * 300_000  # DynamoDB pages a query at 1 MB
    for i in range(5):
        await store.create(table="big", partition="p", key=f"k{i}", data={"blob": blob})
    assert [i.key for i in await store.query(table="big", partition="p")] == [
        f"k{i}" for i in range(5)
    ]
    assert [i.key for i in await store.query(table="big", partition="p", after="k1", limit=2)] == [
        "k2",
        "k3",
    ]


async def test_dynamodb_limits_are_invalid_requests(
    state: tuple[DynamoStateStore, FakeClock, str],
) -> None:
    store, _, _ = state
    with pytest.raises(InvalidRequest):
        await store.create(table="t", partition="p", key="k", data={"x": "y" * MAX_DATA_BYTES})
    with pytest.raises(InvalidRequest):
        await store.create(table="a#b", partition="p", key="k", data={})
    with pytest.raises(InvalidRequest):
        await store.create(table="t", partition="p", key="", data={})


@pytest.fixture
async def bucket(moto_endpoint: str) -> str:
    name = unique("data")
    client("s3").create_bucket(Bucket=name)
    return name


async def test_blob_prefix_and_content_type(bucket: str) -> None:
    store = S3BlobStore(s3=client("s3"), bucket=bucket, prefix="prod/")
    await store.put(key="tenants/t1/a.json", data=b"{}", content_type="application/json")
    head = client("s3").head_object(Bucket=bucket, Key="prod/tenants/t1/a.json")
    assert head["ContentType"] == "application/json"
    assert await store.list(prefix="tenants/") == ["tenants/t1/a.json"]
    other = S3BlobStore(s3=client("s3"), bucket=bucket, prefix="dev/")
    assert await other.list(prefix="") == []
    with pytest.raises(NotFound):
        await other.get(key="tenants/t1/a.json")
    await store.close()
    await other.close()


async def test_delete_prefix_deletes_in_batches(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blob_store_module, "_BATCH", 3)  # S3 allows 1,000 a batch
    store = S3BlobStore(s3=client("s3"), bucket=bucket)
    for i in range(8):
        await store.put(key=f"tenants/t1/{i}", data=b"x")
    await store.put(key="tenants/t2/0", data=b"x")
    assert await store.delete_prefix(prefix="tenants/t1/") == 8
    assert await store.list(prefix="tenants/") == ["tenants/t2/0"]
    await store.close()
