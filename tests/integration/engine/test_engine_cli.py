"""``python -m engine_container --standalone``: a real crawl end to end, and bad input."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import types
from pathlib import Path

import pytest
from aiohttp import web
from engine_sites import Site, text
from warcio.archiveiterator import ArchiveIterator

from engine_container.cli import main

REPO = Path(__file__).resolve().parents[3]
PAGES = 200


def site_page(i: int) -> str:
    """Page i links to the next one and to two others, sometimes relatively."""
    targets = [(i + 1) % PAGES, (i * 7 + 3) % PAGES, (i * 13 + 5) % PAGES]
    hrefs = [f"/p/{t}.html" if t % 2 else f"{t}.html" for t in targets]
    anchors = "".join(f'<li><a href="{h}">page {h}</a></li>' for h in hrefs)
    return f"<html><head><title>Page {i}</title></head><body><ul>{anchors}</ul></body></html>"


async def generated_page(request: web.Request) -> web.Response:
    name = request.match_info.get("tail", "").rsplit("/", 1)[-1]
    try:
        i = int(name.removesuffix(".html"))
    except ValueError:
        return web.Response(status=404)
    if not 0 <= i < PAGES:
        return web.Response(status=404)
    return web.Response(text=site_page(i), content_type="text/html")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYCRAWL_")}
    env["PYTHONPATH"] = str(REPO)
    return env


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine_container",
        *args,
        cwd=REPO,
        env=env or clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_standalone_crawl_of_a_generated_site(serve, tmp_path: Path) -> None:
    site: Site = await serve(
        {"/robots.txt": text("User-agent: *\nAllow: /\n"), "*": generated_page}
    )
    out = tmp_path / "out"
    code, stdout, stderr = await run_cli(
        "--standalone",
        site.url("/p/0.html"),
        "--out",
        str(out),
        "--allow-cidr",
        "127.0.0.0/8",
        "--max-pages",
        "1000",
        "--max-depth",
        "150",
        "--concurrency",
        "8",
    )
    assert code == 0, stderr
    assert stdout.startswith(f"{PAGES} pages, 0 failed, "), stdout
    assert stdout.strip().endswith("pages/s")
    assert stdout.count("\n") == 1

    lines = (out / "pages.jsonl").read_text().splitlines()
    pages = [json.loads(line) for line in lines]
    urls = [p["url"] for p in pages]
    assert len(urls) == len(set(urls)) == PAGES  # every page, exactly once
    assert set(urls) == {site.url(f"/p/{i}.html") for i in range(PAGES)}
    assert all(
        p["status"] == 200 and p["title"] == f"Page {p['url'].split('/')[-1][:-5]}" for p in pages
    )

    with (out / "crawl.warc.gz").open("rb") as warc:
        records = list(ArchiveIterator(warc, check_digests=True))
    responses = [r for r in records if r.rec_type == "response"]
    assert records[0].rec_type == "warcinfo"
    assert len(responses) == PAGES
    assert {r.rec_headers.get_header("WARC-Target-URI") for r in responses} == set(urls)
    assert site.hits["/robots.txt"] == 1


async def test_bad_input_in_a_real_process_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, stdout, stderr = await run_cli(
        "--standalone", "ftp://example.com/", "--out", str(tmp_path / "o")
    )
    assert code == 2
    assert stderr.count("\n") == 1
    assert stderr.startswith("error: ")
    assert "Traceback" not in stderr
    assert stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--standalone", "ftp://x/", "--out", "{out}"], "only http and https"),
        (["--standalone", "http://127.0.0.1/", "--out", "{out}"], "loopback"),
        (["--standalone", "http://[::1/", "--out", "{out}"], "seeds"),
        (
            [
                "--standalone",
                "http://127.0.0.1:9/",
                "--out",
                "{out}",
                "--allow-cidr",
                "10.0.0.0/33",
            ],
            "invalid CIDR '10.0.0.0/33'",
        ),
        (["--standalone", "http://127.0.0.1:9/"], "--out"),
        (["--standalone", "http://127.0.0.1:9/", "--out", "{out}", "--scope", "world"], "scope"),
        (["--standalone", "http://127.0.0.1:9/", "--out", "{out}", "--max-pages", "x"], "integer"),
        (
            [
                "--standalone",
                "http://127.0.0.1:9/",
                "--allow-cidr",
                "127.0.0.1/32",
                "--out",
                "{file}",
            ],
            "not a directory",
        ),
        (
            [
                "--standalone",
                "http://127.0.0.1:9/",
                "--allow-cidr",
                "127.0.0.1/32",
                "--out",
                "{file}/sub",
            ],
            "cannot write",
        ),
        (
            ["--standalone", "http://127.0.0.1:9/", "--out", "{out}", "--page-timeout", "0.5"],
            "between 1 and 300",
        ),
        (
            ["--standalone", "http://127.0.0.1:9/", "--out", "{out}", "--page-timeout", "soon"],
            "not a number",
        ),
        (
            ["--standalone", "http://127.0.0.1:9/", "--out", "{out}", "--scroll", "51"],
            "scroll.max_scrolls: Input should be less than or equal to 50",
        ),
        (
            ["--standalone", "http://127.0.0.1:9/", "--out", "{out}", "--scroll-delay", "500"],
            "--scroll-delay needs --scroll",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys, args, message) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    argv = [a.format(out=tmp_path / "out", file=a_file) for a in args]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("error: ")
    assert message in captured.err


def test_bad_settings_from_the_environment(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SKYCRAWL_CONCURRENCY", "lots")
    assert main(["--standalone", "http://127.0.0.1:9/", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: concurrency: ")
    assert err.count("\n") == 1


async def test_sigterm_stops_the_crawl_with_what_was_fetched_on_disk(serve, tmp_path: Path) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return await generated_page(request)

    site: Site = await serve({"*": slow})
    out = tmp_path / "out"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine_container",
        "--standalone",
        site.url("/p/0.html"),
        "--out",
        str(out),
        "--allow-cidr",
        "127.0.0.0/8",
        "--no-robots",
        "--max-pages",
        "1000",
        "--max-depth",
        "150",
        "--concurrency",
        "2",
        cwd=REPO,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    while sum(n for path, n in site.hits.items() if path.startswith("/p/")) < 10:
        await asyncio.sleep(0.02)
    proc.terminate()
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 130, err
    assert err.decode().startswith("interrupted")
    urls = [json.loads(line)["url"] for line in (out / "pages.jsonl").read_text().splitlines()]
    assert len(urls) >= 8
    assert len(urls) == len(set(urls))


def test_without_standalone_the_bus_worker_runs(monkeypatch) -> None:
    calls: list[str] = []

    def worker_main() -> int:
        calls.append("worker")
        return 7

    monkeypatch.setitem(
        sys.modules, "engine_container.worker", types.SimpleNamespace(main=worker_main)
    )
    assert main([]) == 7
    assert calls == ["worker"]


async def test_no_sitemaps_and_page_timeout_reach_the_crawl(serve, tmp_path: Path) -> None:
    site: Site = await serve({"*": generated_page})
    code, _, stderr = await run_cli(
        "--standalone",
        site.url("/p/0.html"),
        "--out",
        str(tmp_path / "o"),
        "--allow-cidr",
        "127.0.0.0/8",
        "--max-pages",
        "3",
        "--no-sitemaps",
        "--page-timeout",
        "5",
    )
    assert code == 0, stderr
    assert site.hits["/sitemap.xml"] == 0
    code, _, stderr = await run_cli(
        "--standalone",
        site.url("/p/0.html"),
        "--out",
        str(tmp_path / "o2"),
        "--allow-cidr",
        "127.0.0.0/8",
        "--max-pages",
        "3",
    )
    assert code == 0, stderr
    assert site.hits["/sitemap.xml"] == 1  # sitemaps are on by default
