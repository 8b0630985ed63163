"""Exports (issue 12): items as JSONL, CSV and Parquet, pages as JSONL and WARC, streamed from
the blob store chunk by chunk (the local server sends them chunked, without a length)."""

from __future__ import annotations

import csv
import io
import json

import httpx
import pyarrow.parquet as pq
from api_harness import SEED, Harness, assert_problem

from core.exports import PARQUET_BATCH_ROWS, export_stream
from core.layout import crawl_prefix
from functions.local.asgi import create_asgi_app

Tenant = tuple[str, str]
ITEMS = [
    {"name": "Kettle", "price": 19.5, "stock": 3, "tags": ["kitchen", "steel"], "sale": True},
    {"name": "Mug", "price": 4, "stock": 120, "sale": False, "size": {"ml": 300}},
    {"name": "Näpfchen, klein", "price": 2.25, "stock": None},
]


async def _crawl_with_items(harness: Harness, key: str, tenant_id: str, items: list) -> str:
    crawl_id = (await harness.submit(key, SEED)).parsed()["id"]
    prefix = crawl_prefix(tenant_id, crawl_id)
    half = len(items) // 2
    chunks = [items[:half], items[half:]]
    for seq, chunk in enumerate(chunks):
        data = b"".join(json.dumps(i).encode() + b"\n" for i in chunk)
        await harness.blobs.put(key=f"{prefix}items/{seq}.jsonl", data=data)
    return crawl_id


async def _export(harness: Harness, key: str, crawl_id: str, fmt: str) -> bytes:
    response = await harness.call(
        "GET", f"/v1/crawls/{crawl_id}/export", key=key, query={"format": fmt}
    )
    assert response.status == 200, response.body
    return response.body


async def test_items_as_jsonl_csv_and_parquet(harness: Harness, tenant: Tenant) -> None:
    tenant_id, key = tenant
    crawl_id = await _crawl_with_items(harness, key, tenant_id, ITEMS)

    jsonl = await _export(harness, key, crawl_id, "items.jsonl")
    assert [json.loads(line) for line in jsonl.splitlines()] == ITEMS

    rows = list(
        csv.DictReader(io.StringIO((await _export(harness, key, crawl_id, "items.csv")).decode()))
    )
    assert list(rows[0]) == ["name", "price", "stock", "tags", "sale", "size"]
    assert rows[0]["tags"] == '["kitchen", "steel"]'
    assert rows[1]["size"] == '{"ml": 300}'
    assert rows[2]["name"] == "Näpfchen, klein"
    assert rows[2]["stock"] == ""

    table = pq.read_table(io.BytesIO(await _export(harness, key, crawl_id, "items.parquet")))
    types = {f.name: str(f.type) for f in table.schema}
    assert types == {
        "name": "string",
        "price": "double",
        "stock": "int64",
        "tags": "string",
        "sale": "bool",
        "size": "string",
    }
    assert table.column("price").to_pylist() == [19.5, 4.0, 2.25]
    assert table.column("stock").to_pylist() == [3, 120, None]
    assert json.loads(table.column("tags").to_pylist()[0]) == ["kitchen", "steel"]


async def test_an_unknown_format_is_400_naming_the_known_ones(
    harness: Harness, tenant: Tenant
) -> None:
    crawl_id = (await harness.submit(tenant[1], SEED)).parsed()["id"]
    response = await harness.call(
        "GET", f"/v1/crawls/{crawl_id}/export", key=tenant[1], query={"format": "xlsx"}
    )
    problem = assert_problem(response, 400)
    assert "items.parquet" in problem["detail"]


async def test_exports_stream_in_bounded_chunks(harness: Harness, tenant: Tenant) -> None:
    tenant_id, key = tenant
    many = [{"n": i, "text": "x" * 200} for i in range(3 * PARQUET_BATCH_ROWS + 7)]
    crawl_id = await _crawl_with_items(harness, key, tenant_id, many)
    sizes = [
        len(c)
        async for c in await export_stream(harness.blobs, tenant_id, crawl_id, "items.parquet")
    ]
    assert len(sizes) >= 4, "one row group at a time"
    assert max(sizes) < 2_000_000
    table = pq.read_table(
        io.BytesIO(
            b"".join(
                [
                    c
                    async for c in await export_stream(
                        harness.blobs, tenant_id, crawl_id, "items.parquet"
                    )
                ]
            )
        )
    )
    assert table.num_rows == len(many)
    csv_chunks = [
        c async for c in await export_stream(harness.blobs, tenant_id, crawl_id, "items.csv")
    ]
    assert len(csv_chunks) > 5
    assert max(len(c) for c in csv_chunks) < 200_000


async def test_the_local_server_sends_an_export_chunked(harness: Harness, tenant: Tenant) -> None:
    tenant_id, key = tenant
    crawl_id = (await harness.submit(key, SEED)).parsed()["id"]
    prefix = crawl_prefix(tenant_id, crawl_id)
    for seq in range(3):
        lines = b"".join(
            json.dumps(
                {"url": f"https://e.com/{seq}/{i}", "fetched_at": "2030-01-01T00:00:00Z"}
            ).encode()
            + b"\n"
            for i in range(2000)
        )
        await harness.blobs.put(key=f"{prefix}manifest/{seq}.jsonl", data=lines)
    transport = httpx.ASGITransport(app=create_asgi_app(harness.api))
    auth = {"authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
        client.stream("GET", f"/v1/crawls/{crawl_id}/export", headers=auth) as response,
    ):
        assert response.status_code == 200
        assert "content-length" not in response.headers
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    assert len(body.splitlines()) == 6000
