"""What a crawl returns per page: its formats in ``pages.jsonl``, documents by content type,
and the same pages from worker processes as from threads."""

from __future__ import annotations

import gzip

from engine_sites import Site, engine_settings, html, make_pdf, payload, read_pages
from warcio.archiveiterator import ArchiveIterator

from core.models import CrawlSpec
from engine_container.analysis_pool import AnalysisPool
from engine_container.crawler import Crawler
from engine_container.fetcher import Fetcher
from engine_container.sinks import StandaloneSink

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def shop(serve) -> Site:
    return await serve(
        {
            "/": html(
                '<nav><a href="/about">About</a></nav><main><h1>Shop</h1>'
                '<p>Read the <a href="/manual.pdf">manual</a>.</p>'
                '<img src="/logo.png"><a href="/logo.png">logo</a></main>'
                "<footer>Footer text</footer>",
                title="Shop",
            ),
            "/about": html("<main><p>About the shop.</p></main>", title="About"),
            "/manual.pdf": payload(make_pdf("Manual text line", title="Manual"), "application/pdf"),
            "/logo.png": payload(PNG, "image/png"),
        }
    )


def responses(out) -> dict[str, bytes]:
    with gzip.open(out / "crawl.warc.gz", "rb") as f:
        return {
            r.rec_headers.get_header("WARC-Target-URI"): r.content_stream().read()
            for r in ArchiveIterator(f)
            if r.rec_type == "response"
        }


async def test_default_formats_are_metadata_links_and_markdown(serve, crawl) -> None:
    site = await shop(serve)
    outcome = await crawl([site.url("/")])
    home = outcome.by_url()[site.url("/")]
    content = home["content"]
    assert set(content) == {"metadata", "links", "markdown"}
    assert content["markdown"] == (
        f"# Shop\n\nRead the [manual]({site.url('/manual.pdf')}).\n\n"
        f"![]({site.url('/logo.png')})[logo]({site.url('/logo.png')})"
    )
    assert "Footer text" not in content["markdown"]
    assert "About" not in content["markdown"]
    assert [link["url"] for link in content["links"]] == [
        site.url("/about"),
        site.url("/manual.pdf"),
        site.url("/logo.png"),
    ]
    assert content["metadata"]["title"] == "Shop"


async def test_formats_none_records_pages_without_content(serve, crawl) -> None:
    site = await shop(serve)
    outcome = await crawl([site.url("/")], formats=[])
    assert outcome.pages
    assert all("content" not in page for page in outcome.pages)


async def test_pdf_text_and_images_by_allowed_types(serve, crawl) -> None:
    site = await shop(serve)
    outcome = await crawl(
        [site.url("/")],
        formats=["text", "metadata"],
        allow_types=["text/html", "application/pdf", "image/*"],
    )
    pages = outcome.by_url()
    pdf = pages[site.url("/manual.pdf")]
    assert pdf["content"]["text"] == "Manual text line"
    assert (pdf["title"], pdf["links"]) == (None, 0)  # not parsed as HTML
    assert pdf["content"]["metadata"]["title"] == "Manual"
    assert pdf["content"]["document"] == {
        "media_type": "application/pdf",
        "pages": 1,
        "truncated": False,
    }
    image = pages[site.url("/logo.png")]
    assert image["bytes"] == len(PNG)
    assert image["sha256"]
    assert image["content"]["document"] == {"bytes": len(PNG), "media_type": "image/png"}
    stored = responses(outcome.out)
    assert stored[site.url("/logo.png")].endswith(PNG)
    assert b"%PDF-1.4" in stored[site.url("/manual.pdf")]


async def test_refused_types_keep_status_and_headers_only(serve, crawl) -> None:
    site = await shop(serve)
    outcome = await crawl([site.url("/")], refuse_types=["application/*"])  # PDF refused
    pdf = outcome.by_url()[site.url("/manual.pdf")]
    assert pdf["status"] == 200
    assert pdf["content_type"] == "application/pdf"
    assert pdf["bytes"] == 0
    assert "content" not in pdf
    image = outcome.by_url()[site.url("/logo.png")]  # not in the default allow_types
    assert image["bytes"] == 0
    assert "content" not in image


async def test_worker_processes_give_the_pages_threads_give(serve, tmp_path) -> None:
    site = await shop(serve)
    settings = engine_settings()
    spec = CrawlSpec(
        seeds=[site.url("/")], use_sitemaps=False, formats=["markdown", "links", "text"]
    )
    runs = {}
    for processes in (0, 1, 2):  # threads, one worker, two workers
        out = tmp_path / f"p{processes}"
        sink = StandaloneSink(out)
        pool = AnalysisPool(processes)
        await pool.start()
        try:
            async with Fetcher(settings) as fetcher:
                await Crawler(spec, fetcher, sink, settings, analysis=pool).run()
        finally:
            await sink.close()
            await pool.close()
        assert pool.remote_jobs == (0 if processes == 0 else 3)  # every body, in processes
        pages = read_pages(out / "pages.jsonl")
        runs[processes] = sorted(
            ((p["url"], p["sha256"], p["title"], p.get("content")) for p in pages), key=str
        )
    assert runs[0] == runs[1] == runs[2]
    assert len(runs[0]) == 4  # /, /about, the PDF (allowed by default) and the image (no body)
