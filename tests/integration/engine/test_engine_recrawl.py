"""Conditional re-crawl against an earlier crawl of the tenant: validators sent, 304s recorded
as unchanged (and archived as revisits), changed and new pages fetched in full."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from engine_sites import Site, engine_settings
from warcio.archiveiterator import ArchiveIterator

from adapters.local.blob_store import FileBlobStore
from core import layout
from core.messages import RunCrawl
from core.models import Crawl, CrawlCounts, CrawlSpec, CrawlState
from core.run_changes import Comparison, RunChanges, classify, run_changes
from engine_container.bus_crawl import crawl_runner
from engine_container.fetcher import Fetcher

TENANT = "tenant-r"
LAST_MODIFIED = "Wed, 01 May 2024 10:00:00 GMT"


class VersionedSite:
    """Pages with ETags (and one with only Last-Modified) that honour conditional GETs."""

    def __init__(self) -> None:
        self.versions = {"/": 1, "/stable": 1, "/deep": 1, "/changing": 1, "/dated": 1}
        self.links = {
            "/": ["/stable", "/changing", "/dated"],
            "/stable": ["/deep"],
            "/changing": [],
            "/deep": [],
            "/dated": [],
        }
        self.conditional: dict[str, dict[str, str]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        if path not in self.versions:
            return web.Response(status=404)
        sent = {k: v for k, v in request.headers.items() if k.lower().startswith("if-")}
        if sent:
            self.conditional[path] = sent
        etag = f'"{path}-v{self.versions[path]}"'
        if path == "/dated":
            if request.headers.get("If-Modified-Since") == LAST_MODIFIED:
                return web.Response(status=304)
            headers = {"Last-Modified": LAST_MODIFIED}
        else:
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers={"ETag": etag})
            headers = {"ETag": etag}
        links = "".join(f'<a href="{h}">{h}</a>' for h in self.links[path])
        body = f"<html><title>{path} v{self.versions[path]}</title>{links}</html>"
        return web.Response(text=body, content_type="text/html", headers=headers)


def pages_of(root: Path, crawl_id: str) -> dict[str, dict[str, Any]]:
    folder = root / layout.crawl_prefix(TENANT, crawl_id) / "manifest"
    lines = [line for f in sorted(folder.iterdir()) for line in f.read_text().splitlines()]
    return {json.loads(line)["url"].split("/", 3)[3]: json.loads(line) for line in lines if line}


def warc_of(root: Path, crawl_id: str, tmp: Path) -> Path:
    folder = root / layout.crawl_prefix(TENANT, crawl_id) / "warc"
    path = tmp / f"{crawl_id}.warc.gz"
    path.write_bytes(b"".join(f.read_bytes() for f in sorted(folder.iterdir())))
    return path


async def run_crawls(site: Site, tmp_path: Path, *runs: tuple[str, str | None]) -> None:
    settings = engine_settings()
    blobs = FileBlobStore(tmp_path / "blobs")

    async def report(counts: CrawlCounts) -> None:
        pass

    async with Fetcher(settings) as fetcher:
        run = crawl_runner(blobs, fetcher, settings)
        for crawl_id, recrawl_of in runs:
            spec = CrawlSpec(seeds=[site.url("/")], recrawl_of=recrawl_of, use_sitemaps=False)
            message = RunCrawl(
                container_id="c", tenant_id=TENANT, crawl_id=crawl_id, attempt=1, spec=spec
            )
            await run(message, report)


async def test_recrawl_sends_validators_and_records_unchanged_pages(serve, tmp_path: Path) -> None:
    versioned = VersionedSite()
    site: Site = await serve({"*": versioned.handle})
    await run_crawls(site, tmp_path, ("first", None))
    assert versioned.conditional == {}  # a first crawl is never conditional
    before = pages_of(tmp_path / "blobs", "first")

    versioned.versions["/changing"] = 2
    versioned.versions["/"] = 2
    versioned.links["/changing"] = ["/new"]
    versioned.versions["/new"] = 1
    versioned.links["/new"] = []
    await run_crawls(site, tmp_path, ("second", "first"))
    after = pages_of(tmp_path / "blobs", "second")

    assert versioned.conditional["/stable"] == {"If-None-Match": '"/stable-v1"'}
    assert versioned.conditional["/dated"] == {"If-Modified-Since": LAST_MODIFIED}
    for path in ("stable", "dated", "deep"):
        page = after[path]
        assert (page["status"], page["unchanged"]) == (304, True), path
        assert page["title"] == before[path]["title"]
        assert page["sha256"] == before[path]["sha256"]
    # /deep is linked only from the unchanged /stable: it is still re-crawled
    assert after["deep"]["depth"] == before["deep"]["depth"]
    assert (after["changing"]["status"], after["changing"]["unchanged"]) == (200, False)
    assert after["changing"]["title"] == "/changing v2"
    assert after["new"]["status"] == 200  # found through the changed page
    assert "new" not in before

    warc = warc_of(tmp_path / "blobs", "second", tmp_path)
    with warc.open("rb") as f:
        revisits = {
            r.rec_headers.get_header("WARC-Target-URI"): r
            for r in ArchiveIterator(f, check_digests=True)
            if r.rec_type == "revisit"
        }
    assert set(revisits) == {site.url("/stable"), site.url("/dated"), site.url("/deep")}
    stable = revisits[site.url("/stable")]
    assert stable.rec_headers.get_header("WARC-Profile").endswith("/server-not-modified")
    assert stable.rec_headers.get_header("WARC-Refers-To-Target-URI") == site.url("/stable")
    refers_to = stable.rec_headers.get_header("WARC-Refers-To-Date")
    assert datetime.fromisoformat(refers_to) == datetime.fromisoformat(
        before["stable"]["fetched_at"]
    )
    warcio = Path(sys.executable).parent / "warcio"
    check = subprocess.run([warcio, "check", str(warc)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


async def test_recrawl_of_latest_uses_the_last_completed_crawl_of_the_seeds(
    serve, tmp_path: Path
) -> None:
    versioned = VersionedSite()
    site: Site = await serve({"*": versioned.handle})
    await run_crawls(site, tmp_path, ("latest-none", "latest"))  # nothing earlier: full crawl
    assert versioned.conditional == {}
    await run_crawls(site, tmp_path, ("latest-two", "latest"))
    after = pages_of(tmp_path / "blobs", "latest-two")
    assert all(page["unchanged"] for page in after.values())
    assert versioned.conditional["/"] == {"If-None-Match": '"/-v1"'}


async def test_recrawl_of_a_crawl_without_pages_is_a_full_crawl(serve, tmp_path: Path) -> None:
    versioned = VersionedSite()
    site: Site = await serve({"*": versioned.handle})
    await run_crawls(site, tmp_path, ("orphan", "never-ran"))
    assert versioned.conditional == {}
    assert len(pages_of(tmp_path / "blobs", "orphan")) == 5


async def test_a_second_run_reports_new_changed_unchanged_and_gone_pages(
    serve, tmp_path: Path
) -> None:
    """What a schedule's run reports (``core.run_changes``), on what the engine really wrote
    for a site that changed between two runs: one page changed, one appeared, one is 404."""
    versioned = VersionedSite()
    site: Site = await serve({"*": versioned.handle})
    await run_crawls(site, tmp_path, ("first", None))
    versioned.versions["/changing"] = 2
    versioned.links["/changing"] = ["/new"]
    versioned.versions["/new"] = 1
    versioned.links["/new"] = []
    del versioned.versions["/deep"]  # now 404
    await run_crawls(site, tmp_path, ("second", "first"))

    blobs = FileBlobStore(tmp_path / "blobs")
    now = datetime.now(UTC)
    spec = CrawlSpec(seeds=[site.url("/")], recrawl_of="first", use_sitemaps=False)
    run = Crawl(id="second", tenant_id=TENANT, spec=spec, created_at=now, updated_at=now)
    comparison = await Comparison.load(blobs, run)
    assert comparison is not None
    counts = await comparison.count()
    assert counts == RunChanges(
        previous_crawl_id="first", new=1, changed=1, unchanged=3, gone=1
    )  # new: /new; changed: /changing; unchanged: /, /stable, /dated (304s); gone: /deep
    after = pages_of(tmp_path / "blobs", "second")
    kinds = {path: classify(page, comparison.previous) for path, page in after.items()}
    assert kinds == {
        "": "unchanged",
        "stable": "unchanged",
        "dated": "unchanged",
        "changing": "changed",
        "new": "new",
        "deep": None,  # failed now: counted as gone, not as a page of this run
    }
    assert await comparison.fetched_ok() == {site.url(f"/{p}") for p, k in kinds.items() if k}


async def test_a_recrawl_of_latest_reports_its_changes_against_the_crawl_it_resolved(
    serve, tmp_path: Path
) -> None:
    """``recrawl_of: "latest"``: the engine records which crawl "latest" was, and the change
    counts compare with that one; a first crawl of the seeds (nothing to resolve) has none."""
    versioned = VersionedSite()
    site: Site = await serve({"*": versioned.handle})
    await run_crawls(site, tmp_path, ("base", "latest"))  # nothing earlier: full crawl
    versioned.versions["/changing"] = 2
    await run_crawls(site, tmp_path, ("next", "latest"))

    blobs = FileBlobStore(tmp_path / "blobs")
    now = datetime.now(UTC)
    spec = CrawlSpec(seeds=[site.url("/")], recrawl_of="latest", use_sitemaps=False)

    def ended(crawl_id: str) -> Crawl:
        run = Crawl(id=crawl_id, tenant_id=TENANT, spec=spec, created_at=now, updated_at=now)
        return run.model_copy(update={"state": CrawlState.completed})

    assert await run_changes(blobs, ended("base")) is None
    counts = await run_changes(blobs, ended("next"))
    assert counts == RunChanges(previous_crawl_id="base", new=0, changed=1, unchanged=4, gone=0)
