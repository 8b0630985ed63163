"""Main content as markdown/text: quality and speed of the candidate libraries, side by side.

    .venv/bin/python bench/content_bench.py [--pages 300] [--seed 7] [--json OUT]

Pages are generated (seeded), in three templates that real sites use: semantic HTML5
(``header/nav/main/article/aside/footer``), "div soup" (``div#menu``, ``div.content``,
``div.sidebar``, no semantic tags) and a blog page with a cookie banner, share buttons and a
comments section. Every sentence of the page is unique and known to be either *main content*
(the article: headings, paragraphs, a list, a table cell, link text) or *boilerplate* (menus,
sidebars, footers, banners, comments). Per library:

* ``recall``   share of main-content sentences found in the output (higher is better);
* ``leak``     share of boilerplate sentences found in the output (lower is better);
* ``headings`` share of article headings that come out as markdown headings (``#``);
* ``links``    share of in-article links that come out as ``[text](url)``;
* ``ms/page``  median wall time of one call on one core (the parse included).

The libraries must be installed in the running interpreter (``pip install trafilatura
resiliparse html-to-markdown inscriptis markdownify``); a missing one is reported and skipped.
The result of a run is printed as a markdown table; bench/README.md keeps the one the engine's
choice is based on.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = [
    "river",
    "stone",
    "market",
    "engine",
    "harbor",
    "lantern",
    "orbit",
    "meadow",
    "signal",
    "copper",
    "velvet",
    "timber",
    "cinder",
    "glacier",
    "falcon",
    "ember",
    "quarry",
    "summit",
    "tundra",
    "willow",
    "beacon",
    "canyon",
    "delta",
    "fjord",
    "garnet",
    "hollow",
    "island",
    "jasper",
    "kettle",
    "lagoon",
    "mosaic",
    "nectar",
    "oasis",
    "prairie",
    "quartz",
    "raven",
    "saffron",
    "thistle",
    "umber",
    "vessel",
    "walnut",
    "yonder",
    "zephyr",
    "anchor",
    "bramble",
    "cobalt",
    "dune",
]


@dataclass
class Page:
    html: str
    main: list[str] = field(default_factory=list)
    boiler: list[str] = field(default_factory=list)
    headings: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)


class Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n = 0

    def sentence(self, words: int = 9) -> str:
        self.n += 1
        body = " ".join(self.rng.choices(WORDS, k=words))
        return f"{body.capitalize()} number{self.n}."

    def phrase(self) -> str:
        self.n += 1
        return f"{' '.join(self.rng.choices(WORDS, k=3)).title()} Item{self.n}"


def _article(g: Gen, page: Page, tag: str = "article") -> str:
    title = g.phrase()
    page.main.append(title)
    parts = [f"<{tag}><h1>{title}</h1>"]
    for _ in range(g.rng.randint(3, 5)):
        heading = g.phrase()
        page.main.append(heading)
        page.headings.append(heading)
        parts.append(f"<h2>{heading}</h2>")
        for _ in range(g.rng.randint(2, 4)):
            a, b = g.sentence(14), g.sentence(12)
            anchor = g.phrase()
            href = f"https://site.test/doc/{g.n}"
            page.main += [a, b, anchor]
            page.links.append((anchor, href))
            parts.append(f'<p>{a} <a href="{href}">{anchor}</a> {b}</p>')
    items = [g.sentence(6) for _ in range(4)]
    page.main += items
    parts.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
    cells = [g.phrase() for _ in range(4)]
    page.main += cells
    parts.append(
        "<table><tr><th>Name</th><th>Value</th></tr>"
        f"<tr><td>{cells[0]}</td><td>{cells[1]}</td></tr>"
        f"<tr><td>{cells[2]}</td><td>{cells[3]}</td></tr></table>"
    )
    parts.append(f"</{tag}>")
    return "".join(parts)


def _menu(g: Gen, page: Page, n: int = 12) -> str:
    items = [g.phrase() for _ in range(n)]
    page.boiler += items
    return (
        "<ul>"
        + "".join(f'<li><a href="/m/{i}">{t}</a></li>' for i, t in enumerate(items))
        + "</ul>"
    )


def _blurb(g: Gen, page: Page, n: int = 2) -> str:
    lines = [g.sentence(10) for _ in range(n)]
    page.boiler += lines
    return "".join(f"<p>{line}</p>" for line in lines)


HEAD = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t}</title>'
    "<style>body{{margin:0}}</style><script>var x = 1;</script></head><body>"
)


def semantic(g: Gen) -> Page:
    page = Page("")
    page.html = (
        HEAD.format(t=g.phrase())
        + f"<header><nav>{_menu(g, page)}</nav></header><main>"
        + _article(g, page)
        + f"<aside><h3>Related</h3>{_menu(g, page, 8)}{_blurb(g, page)}</aside></main>"
        + f"<footer>{_blurb(g, page, 3)}{_menu(g, page, 6)}</footer></body></html>"
    )
    return page


def div_soup(g: Gen) -> Page:
    page = Page("")
    page.html = (
        HEAD.format(t=g.phrase())
        + f'<div id="top"><div class="menu">{_menu(g, page)}</div></div>'
        + f'<div class="wrap"><div class="sidebar">{_menu(g, page, 10)}{_blurb(g, page)}</div>'
        + f'<div class="content" id="content">{_article(g, page, "div")}</div></div>'
        + f'<div class="footer">{_blurb(g, page, 3)}{_menu(g, page, 6)}</div></body></html>'
    )
    return page


def blog(g: Gen) -> Page:
    page = Page("")
    comments = "".join(
        f'<div class="comment"><b>{g.phrase()}</b>{_blurb(g, page, 1)}</div>' for _ in range(4)
    )
    page.html = (
        HEAD.format(t=g.phrase())
        + f'<div class="cookie-banner">{_blurb(g, page, 1)}<button>OK</button></div>'
        + f"<header>{_menu(g, page, 8)}</header>"
        + '<div class="post">'
        + _article(g, page)
        + f'<div class="share">{_menu(g, page, 4)}</div>'
        + f'<section id="comments"><h3>Comments</h3>{comments}</section></div>'
        + f"<footer>{_blurb(g, page, 2)}</footer></body></html>"
    )
    return page


TEMPLATES = (semantic, div_soup, blog)


# ------------------------------------------------------------------------------ candidates


def candidates() -> dict[str, Callable[[str], str]]:
    found: dict[str, Callable[[str], str]] = {}
    try:
        import trafilatura

        found["trafilatura (markdown)"] = lambda html: (
            trafilatura.extract(html, output_format="markdown", include_links=True) or ""
        )
    except ImportError as exc:
        print(f"skipped trafilatura: {exc}", file=sys.stderr)
    try:
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree

        found["resiliparse (text, main_content)"] = lambda html: extract_plain_text(
            HTMLTree.parse(html), main_content=True
        )
    except ImportError as exc:
        print(f"skipped resiliparse: {exc}", file=sys.stderr)
    try:
        import html_to_markdown

        found["html-to-markdown (whole page)"] = lambda html: _h2m_text(
            html_to_markdown.convert(html)
        )
    except ImportError as exc:
        print(f"skipped html-to-markdown: {exc}", file=sys.stderr)
    try:
        from inscriptis import get_text

        found["inscriptis (text)"] = get_text
    except ImportError as exc:
        print(f"skipped inscriptis: {exc}", file=sys.stderr)
    try:
        from markdownify import markdownify

        found["markdownify (whole page)"] = lambda html: markdownify(html)
    except ImportError as exc:
        print(f"skipped markdownify: {exc}", file=sys.stderr)
    try:
        from engine_container.content import main_markdown

        found["skycrawl: main node + html-to-markdown"] = main_markdown
    except ImportError as exc:
        print(f"skipped skycrawl's pipeline: {exc}", file=sys.stderr)
    return found


def _h2m_text(result: object) -> str:
    """html-to-markdown 3 returns a result object (``.content``) or, in older versions, a str."""
    if isinstance(result, str):
        return result
    return str(getattr(result, "content", "") or "")


# ------------------------------------------------------------------------------ scoring


def score(page: Page, out: str) -> dict[str, float]:
    flat = " ".join(out.split())
    found = sum(1 for s in page.main if s in flat)
    leaked = sum(1 for s in page.boiler if s in flat)
    lines = [line.strip() for line in out.splitlines()]
    heads = sum(1 for h in page.headings if any(x.startswith("#") and h in x for x in lines))
    links = sum(1 for text, href in page.links if f"[{text}]({href}" in flat)
    return {
        "recall": found / len(page.main),
        "leak": leaked / len(page.boiler),
        "headings": heads / len(page.headings),
        "links": links / len(page.links),
    }


def run(pages: int, seed: int) -> list[dict[str, object]]:
    g = Gen(seed)
    corpus = [TEMPLATES[i % len(TEMPLATES)](g) for i in range(pages)]
    rows: list[dict[str, object]] = []
    for name, fn in candidates().items():
        fn(corpus[0].html)  # warm up (imports, lazy tables)
        times: list[float] = []
        scores: dict[str, list[float]] = {}
        per_template: dict[str, list[float]] = {}
        for i, page in enumerate(corpus):
            started = time.perf_counter()
            out = fn(page.html)
            times.append(time.perf_counter() - started)
            for key, value in score(page, out).items():
                scores.setdefault(key, []).append(value)
            template = TEMPLATES[i % len(TEMPLATES)].__name__
            per_template.setdefault(template, []).append(score(page, out)["recall"])
        row: dict[str, object] = {"library": name, "ms/page": statistics.median(times) * 1000}
        row.update({k: statistics.mean(v) for k, v in scores.items()})
        row["recall by template"] = {
            k: round(statistics.mean(v), 2) for k, v in per_template.items()
        }
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = run(args.pages, args.seed)
    print(f"{args.pages} generated pages (3 templates), Python {sys.version.split()[0]}\n")
    print("| library | ms/page | recall | leak | headings | links | recall by template |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['library']} | {r['ms/page']:.2f} | {r['recall']:.2f} | {r['leak']:.2f} "
            f"| {r['headings']:.2f} | {r['links']:.2f} | {r['recall by template']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
