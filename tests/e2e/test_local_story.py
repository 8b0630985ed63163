"""The whole story on one machine: submit → container → ready → crawl → results → scale to
zero, with real engine subprocesses crawling a site this test serves on 127.0.0.1."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator

from tests.e2e.support import Harness, serve_site

pytestmark = pytest.mark.e2e


async def _wait_terminal(h: Harness, key: str, crawl_id: str, timeout: float) -> dict:
    status: dict = {}

    async def done() -> bool:
        nonlocal status
        status = await h.json("GET", f"/v1/crawls/{crawl_id}", key)
        return status["status"] in ("completed", "failed", "dead-lettered", "cancelled")

    await h.wait_for(done, timeout, f"crawl {crawl_id} to finish")
    return status


async def _all_pages(h: Harness, key: str, crawl_id: str) -> list[dict]:
    pages: list[dict] = []
    cursor = None
    while True:
        query = {"limit": "25"} | ({"cursor": cursor} if cursor else {})
        response = await h.call("GET", f"/v1/crawls/{crawl_id}/pages", key, query=query)
        assert response.status == 200, response.body
        body = json.loads(response.body)
        pages.extend(body["items"])
        cursor = body.get("next_cursor")
        if not cursor:
            return pages


async def test_crawl_end_to_end_exports_every_page_and_scales_to_zero(harness: Harness) -> None:
    h = harness
    tenant_id, key = await h.tenant("acme", max_containers=2, parallel=2)
    async with serve_site(pages=60) as site:
        created = await h.json(
            "POST", "/v1/crawls", key, {"seeds": [site.url], "max_pages": 500, "max_depth": 50}
        )
        status = await _wait_terminal(h, key, created["id"], 60)
    assert status["status"] == "completed", status
    assert status["counts"]["fetched"] == 61  # "/" and /p/0 … /p/59

    pages = await _all_pages(h, key, created["id"])
    urls = [p["url"] for p in pages]
    assert len(urls) == len(set(urls)) == 61
    assert all(p["status"] == 200 for p in pages)

    jsonl = await h.call(
        "GET", f"/v1/crawls/{created['id']}/export", key, query={"format": "jsonl"}
    )
    assert len(jsonl.body.splitlines()) == 61
    warc = await h.call("GET", f"/v1/crawls/{created['id']}/export", key, query={"format": "warc"})
    records = list(ArchiveIterator(io.BytesIO(warc.body)))
    assert records[0].rec_type == "warcinfo"
    # one capture per page: a response, or a revisit where the payload repeats an earlier one
    captures = [r for r in records if r.rec_type in ("response", "revisit")]
    targets = {r.rec_headers.get_header("WARC-Target-URI") for r in captures}
    assert len(captures) == len(targets) == 61
    assert sum(r.rec_type == "request" for r in records) == 61
    assert gzip.decompress(warc.body)  # concatenated members form one valid gzip stream

    async def scaled_to_zero() -> bool:
        return not await h.live_containers(tenant_id)

    await h.wait_for(scaled_to_zero, 15, "idle containers to stop")
    assert await h.stack.ports.list_running(h.stack.settings.egresses) == []


async def test_parallel_crawls_scale_out_then_back_to_zero(harness: Harness) -> None:
    h = harness
    tenant_id, key = await h.tenant("burst", max_containers=3, parallel=1)
    peak: set[str] = set()
    async with serve_site(pages=40, delay_s=0.03) as site:
        ids = [
            (
                await h.json(
                    "POST",
                    "/v1/crawls",
                    key,
                    {"seeds": [site.url], "max_depth": 50, "max_pages": 500},
                )
            )["id"]
            for _ in range(3)
        ]

        async def all_done() -> bool:
            live = await h.live_containers(tenant_id)
            assert len(live) <= 3  # never above the tenant's limit
            if len(live) == 3:
                peak.update(c.id for c in live)
            states = [(await h.json("GET", f"/v1/crawls/{i}", key))["status"] for i in ids]
            return all(s == "completed" for s in states)

        await h.wait_for(all_done, 90, "three parallel crawls")
    assert len(peak) == 3, "three crawls with a parallel limit of 1 ran on three containers"

    async def scaled_to_zero() -> bool:
        return not await h.live_containers(tenant_id)

    await h.wait_for(scaled_to_zero, 15, "idle containers to stop")
    stopped = [c.value for c in await h.stack.records.containers.query(tenant_id)]
    assert {c.state.value for c in stopped} == {"stopped"}
    assert {c.reason for c in stopped} == {"idle"}


def _pid_of(data_dir: Path, container_id: str) -> int:
    record = json.loads((data_dir / "logs" / f"{container_id}.pid").read_text())
    return int(record["pid"])


async def test_crawl_survives_kill_9_of_its_container(harness: Harness, tmp_path: Path) -> None:
    h = harness
    tenant_id, key = await h.tenant("sturdy", max_containers=2, parallel=1)
    async with serve_site(pages=300, delay_s=0.05) as site:
        created = await h.json(
            "POST", "/v1/crawls", key, {"seeds": [site.url], "max_pages": 1000, "max_depth": 100}
        )
        crawl_id = created["id"]

        async def under_way() -> bool:
            status = await h.json("GET", f"/v1/crawls/{crawl_id}", key)
            return status["counts"]["fetched"] >= 60

        await h.wait_for(under_way, 60, "the crawl to get under way")
        status = await h.json("GET", f"/v1/crawls/{crawl_id}", key)
        victim = status["container_id"]
        os.kill(_pid_of(tmp_path / "data", victim), signal.SIGKILL)

        final = await _wait_terminal(h, key, crawl_id, 120)
        hits = dict(site.hits)
    assert final["status"] == "completed", final
    assert final["attempts"] == 2
    assert final["container_id"] != victim

    pages = await _all_pages(h, key, crawl_id)
    urls = [p["url"] for p in pages]
    assert len(urls) == len(set(urls)) == 301, "every page exactly once in the results"

    refetched = sum(n - 1 for path, n in hits.items() if path != "/robots.txt" and n > 1)
    # Only pages fetched after the last checkpoint (0.5 s at most ~8 in flight per host,
    # 20/s each) may be fetched again — never a crawl from scratch.
    assert refetched <= 120, f"{refetched} pages fetched twice"
    victim_record = await h.stack.records.containers.get(tenant_id, victim)
    assert victim_record is not None
    assert victim_record.value.state.value == "failed"
