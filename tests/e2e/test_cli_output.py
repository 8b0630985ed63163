"""``skycrawl crawl --format --extract`` as a user runs it: the formats in ``pages.jsonl``
and the items in ``items.jsonl``, through the embedded stack (API, engine, exports)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.cli_support import run_cli, serve_site

pytestmark = pytest.mark.e2e


def test_formats_and_extracted_items_land_in_the_output_directory(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            {
                "fields": {
                    "title": {"css": "title::text"},
                    "pages": {"css": "a::attr(href)", "many": True},
                    "missing": {"css": ".price::text"},
                }
            }
        )
    )
    with serve_site(pages=3) as site:
        result = run_cli(
            [
                "crawl",
                site.url,
                "--allow-cidr",
                "127.0.0.0/8",
                "--format",
                "markdown",
                "--format",
                "links",
                "--extract",
                str(rules),
                "--no-sitemaps",
            ],
            tmp_path,
        )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last == "results in skycrawl-out/ (pages.jsonl, crawl.warc.gz, items.jsonl)"
    out = tmp_path / "skycrawl-out"
    pages = {p["url"]: p for p in map(json.loads, (out / "pages.jsonl").read_text().splitlines())}
    home = pages[site.url]
    assert set(home["content"]) == {"markdown", "links"}
    assert home["content"]["markdown"] == f"[p1]({site.url}p/1)[p2]({site.url}p/2)"
    assert [link["url"] for link in home["content"]["links"]] == [
        f"{site.url}p/1",
        f"{site.url}p/2",
    ]
    assert home["missing_fields"] == ["missing"]
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert sorted((i["_url"], i["title"], tuple(i["pages"])) for i in items) == [
        (site.url, "p0", ("/p/1", "/p/2")),
        (f"{site.url}p/1", "p1", ()),
        (f"{site.url}p/2", "p2", ()),
    ]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--format", "pdf"], "unknown format 'pdf'"),
        (["--extract", "nowhere.json"], "--extract nowhere.json: No such file or directory"),
        (["--extract", "rules.json"], "extract.fields.name.css"),
    ],
)
def test_bad_output_options_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    (tmp_path / "rules.json").write_text(json.dumps({"fields": {"name": {"css": "h2::text("}}}))
    result = run_cli(["crawl", "http://127.0.0.1:9/", *args], tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
