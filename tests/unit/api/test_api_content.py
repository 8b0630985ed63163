"""A crawl's formats and items through the API: the engine's ``BlobSink`` writes them (from
real ``analyse`` output), the pages, items and export routes read them back."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest
from api_harness import Harness, assert_problem, make_settings

from core.api import Api
from core.models import PageRecord
from engine_container.analysis import Job, OutputPlan, analyse
from engine_container.sinks import BlobSink

Tenant = tuple[str, str]
EXTRACT = {
    "items": ".card",
    "fields": {"name": {"css": "h2::text"}, "price": {"css": ".price::text", "regex": r"([\d.]+)"}},
}


def body(n: int) -> bytes:
    cards = "".join(
        f'<div class="card"><h2>Item {n}-{i}</h2><span class="price">${i}.50</span></div>'
        for i in range(2)
    )
    return f"<title>Page {n}</title><main><h1>Page {n}</h1>{cards}</main>".encode()


@pytest.fixture
async def crawl(harness: Harness, tenant: Tenant) -> str:
    """A crawl of 7 pages in chunks of 3 (every third page failed: no content, no items)."""
    tenant_id, key = tenant
    crawl_id = str((await harness.submit(key)).parsed()["id"])
    sink = BlobSink(harness.blobs, tenant_id, crawl_id, chunk_pages=3)
    plan = OutputPlan(formats=("markdown", "links"), extract=json.dumps(EXTRACT))
    for n in range(7):
        url = f"https://example.com/{n}"
        failed = n % 3 == 2
        analysis = analyse(
            Job(url=url, status=200, body=body(n), content_type=None, media_type=None, plan=plan)
        )
        page = PageRecord(
            url=url,
            status=500 if failed else 200,
            fetched_at=datetime(2030, 1, 1, tzinfo=UTC),
            item_count=0 if failed else analysis.item_count,
        )
        await sink.add(page, None, output=None if failed else analysis)
    await sink.close()
    return crawl_id


async def test_pages_carry_their_content(harness: Harness, tenant: Tenant, crawl: str) -> None:
    _, key = tenant
    seen = []
    cursor = None
    while True:
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = (
            await harness.call("GET", f"/v1/crawls/{crawl}/pages", key=key, query=query)
        ).parsed()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [p["url"] for p in seen] == [f"https://example.com/{n}" for n in range(7)]
    for n, record in enumerate(seen):
        if n % 3 == 2:
            assert record["content"] is None
            continue
        assert record["content"]["markdown"].startswith(f"# Page {n}\n")
        assert record["content"]["links"] == []
        assert record["item_count"] == 2


async def test_export_jsonl_joins_content_and_items_export_is_the_dataset(
    harness: Harness, tenant: Tenant, crawl: str
) -> None:
    _, key = tenant
    export = await harness.call("GET", f"/v1/crawls/{crawl}/export", key=key)
    lines = [json.loads(line) for line in export.body.splitlines()]
    assert [("content" in line) for line in lines] == [n % 3 != 2 for n in range(7)]
    assert lines[0]["content"]["markdown"].startswith("# Page 0")
    items = await harness.call(
        "GET", f"/v1/crawls/{crawl}/export", key=key, query={"format": "items"}
    )
    assert items.status == 200
    assert items.headers["content-type"] == "application/x-ndjson"
    assert f'filename="{crawl}.items.jsonl"' in items.headers["content-disposition"]
    rows = [json.loads(line) for line in items.body.splitlines()]
    expected = [
        {"_url": f"https://example.com/{n}", "name": f"Item {n}-{i}", "price": f"{i}.50"}
        for n in range(7)
        if n % 3 != 2
        for i in range(2)
    ]
    assert rows == expected


async def test_items_are_paginated(harness: Harness, tenant: Tenant, crawl: str) -> None:
    _, key = tenant
    names: list[str] = []
    cursor = None
    for _ in range(20):
        query = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        page = (
            await harness.call("GET", f"/v1/crawls/{crawl}/items", key=key, query=query)
        ).parsed()
        assert len(page["items"]) <= 3
        names += [item["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == [f"Item {n}-{i}" for n in range(7) if n % 3 != 2 for i in range(2)]
    bad = await harness.call("GET", f"/v1/crawls/{crawl}/items", key=key, query={"cursor": "%%"})
    assert_problem(bad, 400)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("formats", ["markdown", "pdf"], "formats"),
        ("extract", {"fields": {"a": {"css": "div[["}}}, "CSS selector"),
        ("extract", {"fields": {"a": {"xpath": "//div[@"}}}, "XPath"),
        ("extract", {"fields": {"a": {"css": "p", "regex": "(a)\\1"}}}, "RE2"),
        ("extract", {"fields": {"a": {}}}, "exactly one of css or xpath"),
        ("extract", {"fields": {}}, "fields"),
        (
            "extract",
            {"fields": {"a": {"css": "p"}}, "json_schema": {"type": "nope"}},
            "JSON Schema",
        ),
        ("allow_types", ["text/html", "not a type"], "media type"),
        ("handler", "quotes", "not allowed"),
    ],
)
async def test_bad_output_options_are_422_naming_the_field(
    harness: Harness, tenant: Tenant, field: str, value: object, says: str
) -> None:
    _, key = tenant
    body = {"seeds": ["https://example.com/"], field: value}
    response = await harness.call("POST", "/v1/crawls", key=key, json_body=body)
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["loc"][0] == field
    assert says in json.dumps(problem)


async def test_an_allowed_handler_is_accepted(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    settings = make_settings(handlers="quotes,other")
    api = Api(
        records=harness.records,
        tenants=harness.tenants,
        bus=harness.bus,
        blobs=harness.blobs,
        clock=harness.clock,
        settings=settings,
    )
    allowing = dataclasses.replace(harness, settings=settings, api=api)
    body = {"seeds": ["https://example.com/"], "handler": "quotes", "formats": ["text"]}
    response = await allowing.call("POST", "/v1/crawls", key=key, json_body=body)
    assert response.status == 202
    other = await allowing.call("POST", "/v1/crawls", key=key, json_body={**body, "handler": "x"})
    assert "allowed: other, quotes" in json.dumps(assert_problem(other, 422))
