"""The browser benchmark's own pieces (bench/browser_bench.py, bench/_jssite.py): the generated
JavaScript site, the reading of both crawlers' output, the summary and its ratios, and the
process tree whose RSS is measured. No timing is asserted: the figures come from full runs
(bench/README.md)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))

import _measure  # noqa: E402
import browser_bench  # noqa: E402
from _harness import SiteServer  # noqa: E402
from _jssite import (  # noqa: E402
    BLOCKED_TYPES,
    READY_SELECTOR,
    JsSite,
    PageFields,
    check_record,
    count_correct,
    ensure_js_site,
    js_page_path,
    page_fields,
)
from crawl_bench import Run  # noqa: E402

BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> JsSite:
    return ensure_js_site(40, seed=7, work_dir=tmp_path_factory.mktemp("jssite"))


def test_pages_are_shells_and_their_data_holds_the_expected_content(site: JsSite) -> None:
    expected = site.expected()
    assert sorted(expected) == sorted(js_page_path(i) for i in range(40))
    for i in range(40):
        path = js_page_path(i)
        shell = (site.root / path.lstrip("/")).read_text()
        assert "<a" not in shell  # without the script there is no link to follow
        assert "<title>Loading</title>" in shell
        assert f'data-src="/data/{i:06d}.json"' in shell
        data = json.loads((site.root / f"data/{i:06d}.json").read_text())
        want = expected[path]
        assert data["title"] == want["title"]
        assert data["paragraphs"][0].startswith(want["marker"])
        hrefs = [data["next"], *(link["href"] for link in data["links"])]
        resolved = {urlsplit(urljoin(BASE + path, href)).path for href in hrefs}
        assert resolved == set(want["links"])  # document- and root-relative links agree
        assert len(data["images"]) == 3
        for n in data["images"]:
            assert (site.root / f"img/{n}.png").is_file()
    assert "Loading" not in (site.root / "static/app.js").read_text()


def test_every_page_is_reachable_from_the_index(site: JsSite) -> None:
    expected = site.expected()
    seen, todo = {"/index.html"}, deque(["/index.html"])
    while todo:
        for target in expected[todo.popleft()]["links"]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    assert seen == set(expected)


def test_the_images_are_real_pngs_worth_blocking(site: JsSite) -> None:
    png = (site.root / "img/0.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    length = struct.unpack(">I", png[33:37])[0]
    assert png[37:41] == b"IDAT"
    assert len(zlib.decompress(png[41 : 41 + length])) == 96 * (96 * 3 + 1)
    assert len(png) > 20_000  # noise does not compress: loading it would cost


def test_the_site_is_reproducible_and_not_regenerated(site: JsSite, tmp_path: Path) -> None:
    again = ensure_js_site(40, seed=7, work_dir=tmp_path)
    for name in ("expected.json", "www/data/000005.json", "www/img/3.png"):
        assert (again.dir / name).read_bytes() == (site.dir / name).read_bytes()
    before = (again.dir / "expected.json").stat().st_mtime_ns
    ensure_js_site(40, seed=7, work_dir=tmp_path)
    assert (again.dir / "expected.json").stat().st_mtime_ns == before
    other = ensure_js_site(40, seed=8, work_dir=tmp_path / "other")
    assert other.expected() != site.expected()


def skycrawl_line(url: str, want: dict[str, Any], **changes: Any) -> dict[str, Any]:
    content = {
        "metadata": {"title": want["title"]},
        "text": f"{want['title']}\n\n{want['marker']} lorem",
        "links": [{"url": BASE + path, "text": "x", "rel": None} for path in want["links"]],
    }
    content.update(changes)
    return {"url": url, "status": 200, "rendered": True, "title": want["title"], "content": content}


def crawlee_line(page_url: str, want: dict[str, Any], **changes: Any) -> dict[str, Any]:
    line = {
        "url": page_url,
        "status": 200,
        "title": want["title"],
        "text": f"{want['marker']} lorem",
        "links": [{"url": BASE + path, "text": "x"} for path in want["links"]],
    }
    line.update(changes)
    return line


def test_both_output_formats_read_alike(site: JsSite) -> None:
    want = site.expected()["/p/000003.html"]
    url = BASE + "/p/000003.html"
    sky, peer = page_fields(skycrawl_line(url, want)), page_fields(crawlee_line(url, want))
    assert sky.title == peer.title == want["title"]
    assert {urlsplit(u).path for u in sky.links} == set(want["links"])
    assert sky.links == peer.links
    assert check_record(sky, site.expected())
    assert check_record(peer, site.expected())


@pytest.mark.parametrize(
    "change",
    [
        {"title": "Loading"},  # the shell's title: not rendered
        {"text": "Loading"},  # rendered before the data came
        {"links": []},  # links not found
        {"status": 404},
        {"url": BASE + "/p/999999.html"},  # not a page of the site
    ],
)
def test_a_page_that_misses_something_is_not_correct(site: JsSite, change: dict[str, Any]) -> None:
    want = site.expected()["/p/000003.html"]
    line = crawlee_line(BASE + "/p/000003.html", want, **change)
    assert not check_record(page_fields(line), site.expected())


def test_count_correct_counts_distinct_pages(site: JsSite, tmp_path: Path) -> None:
    expected = site.expected()
    lines = [
        skycrawl_line(BASE + "/index.html", expected["/index.html"]),
        skycrawl_line(BASE + "/index.html", expected["/index.html"]),  # twice: once
        skycrawl_line(BASE + "/p/000001.html", expected["/p/000001.html"], text="Loading"),
        {"url": BASE + "/robots.txt", "status": 200},
        {"url": BASE + "/p/000002.html", "status": 500, "content": None},
    ]
    path = tmp_path / "pages.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    assert count_correct(path, expected) == (2, 1)


def run(name: str, pages: int, wall: float, cpu: float, rss_kb: int) -> browser_bench.BrowserRun:
    r = Run(name, 300, 0, ok=True, pages=pages, wall_s=wall, user_s=cpu, tree_rss_kb=rss_kb)
    r.tree_pss_kb, r.load_avg, r.other_cpu_s = rss_kb // 2, 3.0, wall * 1.5
    return browser_bench.BrowserRun(r, correct=pages, blocked_hits=0, load_start=2.0)


def test_the_summary_takes_medians_and_the_ratio_is_skycrawl_over_crawlee() -> None:
    crawlers = browser_bench.CRAWLERS
    sky = [run("skycrawl", 300, w, 60.0, 1024 * 1000) for w in (10.0, 12.0, 30.0)]
    peer = [run("crawlee", 300, w, 90.0, 1024 * 1250) for w in (20.0, 24.0, 25.0)]
    failed = run("crawlee", 0, 1.0, 0.0, 0)
    failed.run.ok, failed.run.error = False, "exit code 1"
    summaries = {
        "skycrawl": browser_bench.summarize(crawlers["skycrawl"], "git x", sky),
        "crawlee": browser_bench.summarize(crawlers["crawlee"], "1.0", [*peer, failed]),
    }
    assert summaries["skycrawl"].pages_per_s == 25.0  # 300 pages / the median 12 s
    assert (summaries["crawlee"].ok_runs, summaries["crawlee"].runs) == (3, 4)
    assert summaries["crawlee"].errors == ["exit code 1"]
    rat = browser_bench.ratios(summaries)
    assert rat["pages_per_s"] == pytest.approx(25.0 / 12.5, rel=1e-3)
    assert rat["rss_mb"] == pytest.approx(0.8)
    assert rat["cpu_s_per_1k"] == pytest.approx(200 / 300, rel=1e-2)
    table = browser_bench.table_lines(summaries, rat)
    rows = {line.split("|")[1].strip(): line.split("|") for line in table if line[:2] == "| "}
    assert rows["skycrawl (render: always)"][6].strip() == "25.00"
    assert rows["Crawlee PlaywrightCrawler"][2].strip() == "3/4"
    assert rows["skycrawl (render: always)"][11].strip() == "2.0→3.0"
    assert rows["skycrawl (render: always)"][12].strip() == "1.50"  # other cores
    assert table[-1].startswith("skycrawl / Crawlee: pages/s 2.00,")


def test_tree_pids_follows_descendants_that_left_the_session() -> None:
    # pid: (ppid, pgid, sid); 102 called setsid (Chromium under Playwright does)
    table = {
        100: (1, 100, 100),
        101: (100, 100, 100),
        102: (101, 102, 102),
        103: (102, 102, 102),
        200: (1, 200, 200),
        201: (200, 201, 102 + 100),
    }
    assert _measure.tree_pids(100, table) == {100, 101, 102, 103}


def measured(program: str) -> dict[str, Any]:
    """What ``bench/_measure.py`` reports for ``python -c program``."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "_measure.py"), "--", sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    figures: dict[str, Any] = json.loads(done.stdout)
    assert figures["rc"] == 0
    return figures


def test_the_measured_rss_includes_a_child_in_its_own_session() -> None:
    child = "x = bytearray(150 * 2**20); import time; time.sleep(1.5)"
    parent = (
        f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}],"
        " start_new_session=True, check=True)"
    )
    assert measured(parent)["tree_rss_kb"] > 150 * 1024  # the child's 150 MB were counted


#: Forks a child that forks a grandchild and exits at once: the grandchild, orphaned, burns
#: ~0.6 s of CPU after the command itself has exited (as multiprocessing's forkserver and
#: analysis workers outlive the engine by a moment, and nobody waits for them).
ORPHAN_BURNS = """
import os, time
if os.fork() == 0:
    if os.fork() == 0:
        end = time.process_time() + 0.6
        while time.process_time() < end:
            pass
    os._exit(0)
os.wait()
"""


def test_the_measured_cpu_includes_an_orphaned_grandchild() -> None:
    figures = measured(ORPHAN_BURNS)
    assert figures["user_s"] + figures["sys_s"] >= 0.5, figures
    assert figures["wall_s"] < 0.5, figures  # the time is the command's own, not the orphan's


def test_the_command_line_lists_a_bad_crawler_and_exits_2() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "browser_bench.py"), "--only", "scrapy"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown crawler(s) ['scrapy']" in done.stderr


@pytest.mark.browser
async def test_a_rendered_page_has_its_content_and_asks_for_what_the_bench_blocks(
    site: JsSite,
) -> None:
    from playwright.async_api import async_playwright

    from tests.e2e.browser import CHROMIUM_ARGS, ensure_chromium

    chromium = ensure_chromium()
    types: set[str] = set()
    with SiteServer(site.root, work_dir=site.dir / "server") as server:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            page = await browser.new_page()
            page.on("request", lambda request: types.add(request.resource_type))
            await page.goto(f"{server.base_url}/p/000007.html")
            await page.wait_for_selector(READY_SELECTOR, state="attached")
            fields = PageFields(
                url=page.url,
                status=200,
                title=await page.title(),
                text=await page.inner_text("main"),
                links=tuple(
                    await page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)")
                ),
            )
            await page.wait_for_load_state("networkidle")
            await browser.close()
    assert check_record(fields, site.expected())
    assert set(BLOCKED_TYPES) <= types  # unblocked, the page loads images, a font and a video
