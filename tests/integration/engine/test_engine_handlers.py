"""Code extraction: the example handler package (examples/quotes-handler) is pip-installed
into a temporary directory, found by its ``skycrawl.handlers`` entry point and run by a
standalone engine on a quotes site served here; the operator allow-list holds in bus mode."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_sites import Site, html

from core.errors import InvalidRequest
from engine_container.handlers import check_allowed, parse_allowed

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "quotes-handler"

QUOTES = {
    1: [("Be curious.", "Ada Lovelace", ["science"]), ("Keep going.", "Alan Turing", [])],
    2: [("Simplicity first.", "Ada Lovelace", ["design", "code"])],
}


def quotes_page(n: int) -> str:
    blocks = "".join(
        f'<div class="quote"><span class="text">{text}</span>'
        f'<small class="author">{author}</small>'
        f'<a class="author-link" href="/author/{author.split()[1].lower()}">about</a>'
        + "".join(f'<a class="tag" href="/tag/{t}">{t}</a>' for t in tags)
        + "</div>"
        for text, author, tags in QUOTES[n]
    )
    following = f'<ul><li class="next"><a href="/page/{n + 1}/">Next</a></li></ul>' if n < 2 else ""
    return blocks + following


async def quotes_site(serve) -> Site:
    routes = {f"/page/{n}/": html(quotes_page(n), title=f"Quotes {n}") for n in QUOTES}
    routes["/"] = routes["/page/1/"]
    routes["/author/lovelace"] = html(
        '<h3 class="author-title">Ada Lovelace\n</h3><span class="author-born-date">1815</span>'
    )
    routes["/author/turing"] = html(
        '<h3 class="author-title">Alan Turing</h3><span class="author-born-date">1912</span>'
    )
    routes["*"] = html("<p>tag page</p>")
    return await serve(routes)


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package pip-installed (a real wheel build) into its own directory."""
    target = tmp_path_factory.mktemp("handlers")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        cwd=build,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert list(target.glob("skycrawl_quotes-*.dist-info/entry_points.txt"))
    return target


@pytest.mark.e2e
async def test_the_installed_example_handler_yields_items_and_labelled_follow_ups(
    serve, tmp_path: Path, installed_example: Path
) -> None:
    site = await quotes_site(serve)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYCRAWL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(installed_example), str(REPO)])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine_container",
        "--standalone",
        site.url("/"),
        "--out",
        str(tmp_path / "out"),
        "--allow-cidr",
        "127.0.0.0/8",
        "--no-sitemaps",
        "--handler",
        "quotes",
        "--format",
        "none",
        "--max-depth",
        "5",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()
    items = [
        json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()
    ]
    quotes = sorted(
        (i["text"], i["author"], tuple(i["tags"])) for i in items if i["kind"] == "quote"
    )
    assert quotes == sorted((t, a, tuple(g)) for page in QUOTES.values() for t, a, g in page)
    authors = sorted((i["name"], i["born"], i["_url"]) for i in items if i["kind"] == "author")
    assert authors == [
        ("Ada Lovelace", "1815", site.url("/author/lovelace")),
        ("Alan Turing", "1912", site.url("/author/turing")),
    ]
    pages = [
        json.loads(line) for line in (tmp_path / "out" / "pages.jsonl").read_text().splitlines()
    ]
    counts = {p["url"]: p["item_count"] for p in pages}
    assert counts[site.url("/")] == 2
    assert counts[site.url("/page/2/")] == 1
    assert all(p["item_errors"] == [] for p in pages)


async def test_a_handler_that_is_not_installed_is_bad_input(serve, tmp_path: Path) -> None:
    site = await quotes_site(serve)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine_container",
        "--standalone",
        site.url("/"),
        "--out",
        str(tmp_path / "out"),
        "--allow-cidr",
        "127.0.0.0/8",
        "--handler",
        "nosuch",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2
    assert err.decode() == "error: no handler 'nosuch' is installed (installed: none)\n"
    assert sum(site.hits.values()) == 0


def test_the_operator_allow_list() -> None:
    check_allowed("quotes", parse_allowed("quotes, other"))
    check_allowed("anything", parse_allowed("*"))
    with pytest.raises(InvalidRequest, match=r"'quotes' is not allowed here \(allowed: none\)"):
        check_allowed("quotes", parse_allowed(""))
