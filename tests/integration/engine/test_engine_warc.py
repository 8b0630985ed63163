"""The crawl's WARC as archive tools read it: every record type, digests, redirects, revisits,
checked by ``warcio check`` and indexed by ``cdxj-indexer`` (pywb's indexer)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from engine_sites import Site, links_page, text
from warcio.archiveiterator import ArchiveIterator

BIN = Path(sys.executable).parent


def records(path: Path) -> list[Any]:
    out = []
    with path.open("rb") as f:
        for record in ArchiveIterator(f, check_digests=True):
            record.content_stream().read()
            out.append(record)
    return out


async def archived_site(serve) -> Site:
    async def old(request: web.Request) -> web.Response:
        raise web.HTTPFound("/new")

    same = "<html><title>same</title><body>identical payload</body></html>"
    return await serve(
        {
            "/": links_page("/old", "/dup1", "/dup2", "/gone"),
            "/old": old,
            "/new": links_page(title="new"),
            "/dup1": text(same, content_type="text/html"),
            "/dup2": text(same, content_type="text/html"),
        }
    )


def duplicates(warc: list[Any], site: Site) -> tuple[str, str]:
    """(URL stored as a response, URL stored as its revisit) of /dup1 and /dup2."""
    kinds = Counter((r.rec_type, r.rec_headers.get_header("WARC-Target-URI")) for r in warc)
    dup1, dup2 = site.url("/dup1"), site.url("/dup2")
    pairs = [(dup1, dup2), (dup2, dup1)]
    found = [(a, b) for a, b in pairs if kinds["response", a] == 1 and kinds["revisit", b] == 1]
    assert len(found) == 1, kinds
    assert kinds["response", found[0][1]] == 0
    return found[0]


async def test_warc_has_request_response_redirect_and_revisit_records(serve, crawl) -> None:
    site = await archived_site(serve)
    outcome = await crawl([site.url("/")], respect_robots=False)
    warc = records(outcome.out / "crawl.warc.gz")
    assert warc[0].rec_type == "warcinfo"
    by_id = {r.rec_headers.get_header("WARC-Record-ID"): r for r in warc}
    kinds = Counter((r.rec_type, r.rec_headers.get_header("WARC-Target-URI")) for r in warc)
    for path in ("/", "/old", "/new", "/dup1", "/dup2", "/gone"):
        assert kinds["request", site.url(path)] == 1, path
    for path in ("/", "/old", "/new", "/gone"):
        assert kinds["response", site.url(path)] == 1, path
    # the two identical pages are fetched concurrently: whichever is stored first is the
    # response, the other its revisit
    original, copy = duplicates(warc, site)

    redirect = next(
        r for r in warc if r.rec_type == "response" and r.http_headers.get_statuscode() == "302"
    )
    assert redirect.rec_headers.get_header("WARC-Target-URI") == site.url("/old")
    assert redirect.http_headers.get_header("Location") == "/new"

    for request in (r for r in warc if r.rec_type == "request"):
        response = by_id[request.rec_headers.get_header("WARC-Concurrent-To")]
        assert response.rec_type in ("response", "revisit")
        assert response.rec_headers.get_header("WARC-Target-URI") == request.rec_headers.get_header(
            "WARC-Target-URI"
        )
        assert request.http_headers.protocol == "GET"
        assert request.rec_headers.get_header("WARC-Block-Digest")

    revisit = next(r for r in warc if r.rec_type == "revisit")
    first = next(
        r
        for r in warc
        if r.rec_headers.get_header("WARC-Target-URI") == original and r.rec_type == "response"
    )
    assert revisit.rec_headers.get_header("WARC-Target-URI") == copy
    assert revisit.rec_headers.get_header("WARC-Profile").endswith("identical-payload-digest")
    assert revisit.rec_headers.get_header("WARC-Refers-To-Target-URI") == original
    assert revisit.rec_headers.get_header("WARC-Refers-To") == first.rec_headers.get_header(
        "WARC-Record-ID"
    )
    assert revisit.rec_headers.get_header("WARC-Payload-Digest") == first.rec_headers.get_header(
        "WARC-Payload-Digest"
    )
    for record in warc:
        if record.rec_type in ("response", "revisit"):
            assert record.rec_headers.get_header("WARC-Block-Digest")
        if record.rec_type == "response":
            assert record.rec_headers.get_header("WARC-Payload-Digest")


async def test_warc_date_is_the_page_fetched_at(serve, crawl) -> None:
    site = await archived_site(serve)
    outcome = await crawl([site.url("/")], respect_robots=False)
    dates = {
        r.rec_headers.get_header("WARC-Target-URI"): r.rec_headers.get_header("WARC-Date")
        for r in records(outcome.out / "crawl.warc.gz")
        if r.rec_type in ("response", "revisit") and r.http_headers.get_statuscode() != "302"
    }
    for page in outcome.pages:
        recorded = datetime.fromisoformat(page["fetched_at"])
        archived = datetime.fromisoformat(dates[page["final_url"]].replace("Z", "+00:00"))
        assert recorded == archived, page["url"]


async def test_warcio_check_and_cdxj_indexer_accept_the_warc(serve, crawl) -> None:
    site = await archived_site(serve)
    outcome = await crawl([site.url("/")], respect_robots=False)
    path = outcome.out / "crawl.warc.gz"
    check = subprocess.run(
        [BIN / "warcio", "check", "-v", str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "digest pass" in check.stdout
    assert "digest fail" not in check.stdout
    index = subprocess.run(
        [BIN / "cdxj-indexer", "--post-append", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    entries = [json.loads(line.split(" ", 2)[2]) for line in index.stdout.splitlines()]
    by_url = {e["url"]: e for e in entries if e.get("mime") != "warc/revisit"}
    assert by_url[site.url("/new")]["status"] == "200"
    assert by_url[site.url("/old")]["status"] == "302"
    assert by_url[site.url("/gone")]["status"] == "404"
    revisits = [e for e in entries if e.get("mime") == "warc/revisit"]
    assert [e["url"] for e in revisits] == [duplicates(records(path), site)[1]]
    data = path.read_bytes()
    for entry in entries:  # every entry points at the one gzip member a replay tool reads
        start, length = int(entry["offset"]), int(entry["length"])
        member = gzip.decompress(data[start : start + length])
        assert member.startswith(b"WARC/1.1\r\n")
        assert f"WARC-Target-URI: {entry['url']}".encode() in member
