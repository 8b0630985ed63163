"""Reading crawls back: status, list, pages, exports, cancel, and tenant isolation."""

from __future__ import annotations

import base64
import io
import json
from datetime import timedelta

import pytest
from api_harness import Harness, assert_problem
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from core.layout import manifest_key, warc_key
from core.messages import CancelRequested
from core.models import CrawlCounts, CrawlState

Tenant = tuple[str, str]
CHUNK_SIZES = [7, 0, 5, 1, 3]


def page_line(n: int) -> bytes:
    record = {
        "url": f"https://example.com/{n}",
        "status": 200,
        "fetched_at": "2030-01-01T00:00:00Z",
        "bytes": n,
        "depth": 1,
        "engine_only_field": "ignored",
    }
    return json.dumps(record).encode() + b"\n"


async def write_manifest(harness: Harness, tenant_id: str, crawl_id: str) -> list[str]:
    """Chunks of CHUNK_SIZES records (one empty); returns every URL in order."""
    urls: list[str] = []
    n = 0
    for seq, size in enumerate(CHUNK_SIZES):
        data = b""
        for _ in range(size):
            data += page_line(n)
            urls.append(f"https://example.com/{n}")
            n += 1
        if seq == 2:
            data = data.rstrip(b"\n")  # a chunk without its final newline
        await harness.blobs.put(key=manifest_key(tenant_id, crawl_id, seq), data=data)
    return urls


def warc_chunk(urls: list[str]) -> bytes:
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    for url in urls:
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        payload = io.BytesIO(f"<title>{url}</title>".encode())
        writer.write_record(
            writer.create_warc_record(url, "response", payload=payload, http_headers=headers)
        )
    return buffer.getvalue()


@pytest.fixture
async def crawl(harness: Harness, tenant: Tenant) -> str:
    _, key = tenant
    response = await harness.submit(key)
    assert response.status == 202
    await harness.inbox()
    return str(response.parsed()["id"])


# ------------------------------------------------------------------ isolation


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("GET", "/pages"),
        ("GET", "/export"),
        ("GET", "/export?format=warc"),
        ("DELETE", ""),
    ],
)
async def test_another_tenants_crawl_is_404(
    harness: Harness, tenant: Tenant, crawl: str, method: str, suffix: str
) -> None:
    tenant_id, _ = tenant
    await write_manifest(harness, tenant_id, crawl)
    _, intruder = await harness.create_tenant("intruder")
    path, _, query = f"/v1/crawls/{crawl}{suffix}".partition("?")
    params = dict([query.split("=")]) if query else {}
    response = await harness.call(method, path, key=intruder, query=params)
    problem = assert_problem(response, 404)
    assert problem["instance"] == path
    stored = await harness.records.crawls.get(tenant_id, crawl)
    assert stored is not None
    assert stored.value.state is CrawlState.pending
    assert await harness.records.active.get(tenant_id, crawl) is not None
    assert await harness.inbox() == []
    listed = await harness.call("GET", "/v1/crawls", key=intruder)
    assert listed.parsed()["items"] == []


@pytest.mark.parametrize("crawl_id", ["cr_nope", "cr_" + "0" * 32, "..%2F..", "CR_" + "a" * 32])
async def test_unknown_crawl_is_404(harness: Harness, tenant: Tenant, crawl_id: str) -> None:
    _, key = tenant
    for suffix in ("", "/pages", "/export"):
        assert_problem(await harness.call("GET", f"/v1/crawls/{crawl_id}{suffix}", key=key), 404)
    assert_problem(await harness.call("DELETE", f"/v1/crawls/{crawl_id}", key=key), 404)


# ------------------------------------------------------------------ status and list


async def test_status_reports_progress_and_timings(
    harness: Harness, tenant: Tenant, crawl: str
) -> None:
    tenant_id, key = tenant
    start = harness.clock.now()

    def dispatched(c):  # type: ignore[no-untyped-def]
        return c.model_copy(
            update={
                "state": CrawlState.completed,
                "container_id": "c-1",
                "attempts": 1,
                "counts": CrawlCounts(queued=1, fetched=5, failed=2, bytes=1234),
                "dispatched_at": start + timedelta(seconds=2),
                "finished_at": start + timedelta(seconds=12),
            }
        )

    await harness.records.crawls.mutate(tenant_id, crawl, dispatched)
    harness.clock.advance(100)
    status = (await harness.call("GET", f"/v1/crawls/{crawl}", key=key)).parsed()
    assert status["status"] == "completed"
    assert status["counts"] == {"queued": 1, "fetched": 5, "failed": 2, "bytes": 1234}
    assert status["container_id"] == "c-1"
    assert status["attempts"] == 1
    assert status["timings"]["duration_s"] == 12.0


async def test_list_is_newest_first_with_cursor(harness: Harness, tenant: Tenant) -> None:
    _, key = tenant
    ids = []
    for _ in range(5):
        ids.append((await harness.submit(key)).parsed()["id"])
        harness.clock.advance(1)
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = (await harness.call("GET", "/v1/crawls", key=key, query=query)).parsed()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    bad = await harness.call("GET", "/v1/crawls", key=key, query={"cursor": "!!!"})
    assert_problem(bad, 400)


# ------------------------------------------------------------------ pages


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 7, 8, 15, 16, 1000])
async def test_pages_returns_every_record_exactly_once(
    harness: Harness, tenant: Tenant, crawl: str, limit: int
) -> None:
    tenant_id, key = tenant
    urls = await write_manifest(harness, tenant_id, crawl)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(100):
        query = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
        response = await harness.call("GET", f"/v1/crawls/{crawl}/pages", key=key, query=query)
        assert response.status == 200
        page = response.parsed()
        assert len(page["items"]) <= limit
        seen += [item["url"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert page["items"], "a page with a next cursor has items"
    assert seen == urls


async def test_pages_default_limit_and_record_shape(
    harness: Harness, tenant: Tenant, crawl: str
) -> None:
    tenant_id, key = tenant
    await write_manifest(harness, tenant_id, crawl)
    page = (await harness.call("GET", f"/v1/crawls/{crawl}/pages", key=key)).parsed()
    assert page["next_cursor"] is None
    assert len(page["items"]) == sum(CHUNK_SIZES)
    first = page["items"][0]
    assert first["url"] == "https://example.com/0"
    assert first["status"] == 200
    assert "engine_only_field" not in first


async def test_pages_of_a_crawl_without_results_is_empty(
    harness: Harness, tenant: Tenant, crawl: str
) -> None:
    _, key = tenant
    page = (await harness.call("GET", f"/v1/crawls/{crawl}/pages", key=key)).parsed()
    assert page == {"items": [], "next_cursor": None}


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "query",
    [
        {"cursor": "not base64 ###"},
        {"cursor": _b64("p1:x:1")},
        {"cursor": _b64("p1:-1:0")},
        {"cursor": _b64("garbage")},
        {"cursor": "%%%"},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "-5"},
        {"limit": "ten"},
        {"limit": "1e3"},
    ],
)
async def test_bad_cursor_or_limit_is_400(
    harness: Harness, tenant: Tenant, crawl: str, query: dict[str, str]
) -> None:
    tenant_id, key = tenant
    await write_manifest(harness, tenant_id, crawl)
    response = await harness.call("GET", f"/v1/crawls/{crawl}/pages", key=key, query=query)
    assert_problem(response, 400)


# ------------------------------------------------------------------ exports


async def test_export_jsonl_concatenates_the_manifest(
    harness: Harness, tenant: Tenant, crawl: str
) -> None:
    tenant_id, key = tenant
    urls = await write_manifest(harness, tenant_id, crawl)
    response = await harness.call(
        "GET", f"/v1/crawls/{crawl}/export", key=key, query={"format": "jsonl"}
    )
    assert response.status == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert f'filename="{crawl}.jsonl"' in response.headers["content-disposition"]
    assert response.headers["content-disposition"].startswith("attachment")
    lines = response.body.decode().splitlines()
    assert [json.loads(line)["url"] for line in lines] == urls
    default = await harness.call("GET", f"/v1/crawls/{crawl}/export", key=key)
    assert default.body == response.body


async def test_export_warc_is_readable_by_warcio(
    harness: Harness, tenant: Tenant, crawl: str
) -> None:
    tenant_id, key = tenant
    chunks = [["https://example.com/a", "https://example.com/b"], ["https://example.com/c"]]
    for seq, urls in enumerate(chunks):
        await harness.blobs.put(key=warc_key(tenant_id, crawl, seq), data=warc_chunk(urls))
    response = await harness.call(
        "GET", f"/v1/crawls/{crawl}/export", key=key, query={"format": "warc"}
    )
    assert response.status == 200
    assert response.headers["content-type"] == "application/warc"
    assert f'filename="{crawl}.warc.gz"' in response.headers["content-disposition"]
    records = list(ArchiveIterator(io.BytesIO(response.body)))
    assert [r.rec_headers.get_header("WARC-Target-URI") for r in records] == [
        "https://example.com/a",
        "https://example.com/b",
        "https://example.com/c",
    ]


async def test_unknown_export_format_is_400(harness: Harness, tenant: Tenant, crawl: str) -> None:
    _, key = tenant
    response = await harness.call(
        "GET", f"/v1/crawls/{crawl}/export", key=key, query={"format": "csv"}
    )
    assert_problem(response, 400)


# ------------------------------------------------------------------ cancel


async def test_cancel_is_202_then_409(harness: Harness, tenant: Tenant, crawl: str) -> None:
    tenant_id, key = tenant
    harness.clock.advance(5)
    response = await harness.call("DELETE", f"/v1/crawls/{crawl}", key=key)
    assert response.status == 202
    status = response.parsed()
    assert status["status"] == "cancelled"
    assert status["timings"]["finished_at"] is not None
    assert status["timings"]["duration_s"] == 5.0
    assert await harness.records.active.get(tenant_id, crawl) is None
    assert await harness.inbox() == [CancelRequested(tenant_id=tenant_id, crawl_id=crawl)]
    again = await harness.call("DELETE", f"/v1/crawls/{crawl}", key=key)
    problem = assert_problem(again, 409)
    assert problem["type"] == "urn:skycrawl:problem:crawl-finished"
    assert await harness.inbox() == []
    assert (await harness.call("GET", f"/v1/crawls/{crawl}", key=key)).parsed()[
        "status"
    ] == "cancelled"


async def test_cancel_names_the_container_of_a_dispatched_crawl(
    harness: Harness, tenant: Tenant, crawl: str
) -> None:
    tenant_id, key = tenant
    await harness.records.crawls.mutate(
        tenant_id,
        crawl,
        lambda c: c.model_copy(update={"state": CrawlState.dispatched, "container_id": "c-9"}),
    )
    assert (await harness.call("DELETE", f"/v1/crawls/{crawl}", key=key)).status == 202
    assert await harness.inbox() == [
        CancelRequested(tenant_id=tenant_id, crawl_id=crawl, container_id="c-9")
    ]


async def test_cancel_that_cannot_be_sent_is_undone(
    harness: Harness, tenant: Tenant, crawl: str
) -> None:
    tenant_id, key = tenant
    broken = harness.with_settings(inbox_queue="no-such-queue")
    assert_problem(await harness.call("DELETE", f"/v1/crawls/{crawl}", key=key, api=broken), 500)
    stored = await harness.records.crawls.get(tenant_id, crawl)
    assert stored is not None
    assert stored.value.state is CrawlState.pending
    assert stored.value.finished_at is None
    assert await harness.records.active.get(tenant_id, crawl) is not None
    assert (await harness.call("DELETE", f"/v1/crawls/{crawl}", key=key)).status == 202


async def test_cancelled_crawl_frees_a_pending_slot(harness: Harness) -> None:
    from core.models import Quotas

    _, key = await harness.create_tenant("one", Quotas(max_pending=1))
    crawl_id = (await harness.submit(key)).parsed()["id"]
    assert_problem(await harness.submit(key), 429)
    assert (await harness.call("DELETE", f"/v1/crawls/{crawl_id}", key=key)).status == 202
    assert (await harness.submit(key)).status == 202
