"""The per-page formats of ``CrawlSpec.formats`` (``core.output``), built from one parse.

Libraries, chosen by measurement (``bench/content_bench.py``, figures in bench/README.md):

* **markdown / text** — html-to-markdown (Rust) with its ``aggressive`` preprocessing
  (navigation, forms and hidden content dropped) and ``BOILERPLATE`` selectors excluded
  (asides, footers, sidebars, cookie banners, share and comment blocks), links resolved
  against the page's base URL. ~1 ms for a 15 KB page, against ~36 ms for trafilatura,
  which scored the same on main-content recall of the generated pages; ``text`` is the
  same conversion with plain-text output. Pages are converted from ``<main>`` (or
  ``[role=main]``, or a lone ``<article>``) when there is one, else from ``<body>``.
* **links / metadata / title** — Lexbor (selectolax), walked through ``tags()`` (no CSS
  engine set-up); links are resolved with the ``LinkResolver`` (``engine_container.links``) (the same
  absolute, normalised form the crawler queues) and de-duplicated, first anchor text wins.
* **JSON-LD and microdata** — extruct, run only when the page has a ``ld+json`` script or an
  ``itemscope`` attribute (extruct parses the page again with lxml: ~2 ms).
* **html** — the whole document through lxml_html_clean's ``Cleaner`` (scripts, styles,
  comments, event-handler attributes and ``javascript:`` URLs removed).

Everything here is pure and thread-safe; ``engine_container.analysis`` calls it in a worker
process or thread.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import html_to_markdown
from selectolax.lexbor import LexborHTMLParser, LexborNode

from core.output_basics import Format
from engine_container.links import LinkResolver

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 2_000_000  # markdown / text of one page beyond this are cut
MAX_LINKS = 5000
MAX_META_CHARS = 2000

#: Containers that are boilerplate on practically every site (class/id fragments seen on
#: common CMS themes); html-to-markdown drops them with everything inside.
BOILERPLATE = (
    "aside",
    "footer",
    "[role=complementary]",
    "[role=contentinfo]",
    "[aria-hidden=true]",
    "[class*=sidebar]",
    "[id*=sidebar]",
    "[class*=cookie]",
    "[id*=cookie]",
    "[class*=consent]",
    "[class*=share]",
    "[class*=social]",
    "[class*=comment]",
    "[id*=comments]",
    "[class*=footer]",
    "[id*=footer]",
    "[class*=menu]",
    "[id*=menu]",
    "[class*=breadcrumb]",
    "[class*=related]",
    "[class*=newsletter]",
    "[class*=advert]",
    "[class*=banner]",
)


def _options(base_url: str | None, plain: bool) -> html_to_markdown.ConversionOptions:
    return html_to_markdown.ConversionOptions(
        extract_metadata=False,
        preprocessing=html_to_markdown.PreprocessingOptions(preset="aggressive"),
        exclude_selectors=list(BOILERPLATE),
        base_url=base_url,
        output_format="plain" if plain else "markdown",
        skip_images=plain,
    )


@lru_cache(maxsize=256)  # per base URL: bounded, and most pages of a site share a few
def _native_options(base_url: str | None, plain: bool) -> Any:
    """The options already converted to the Rust binding's object, or None (public API).

    ``html_to_markdown.convert`` rebuilds the Rust options from the Python dataclass on
    every call (enum names coerced by string matching, ~50 fields): 0.5 ms of 2.7 ms a
    page under cProfile (which inflates Python calls); without the profiler, ``analyse``
    with the default formats on 400 bench-site pages went from 1.08 / 1.62 to 1.02 / 1.36
    CPU-ms a page in two A/B pairs (load average 0.1; noisy, a small gain). Built once
    per base here and handed to the binding's own ``convert``;
    if a release moves those private names, ``convert`` falls back to the public call.
    """
    try:
        return _to_native(_options(base_url, plain))
    except Exception:  # a release without the private helper: use the public API
        return None


def _to_native(options: html_to_markdown.ConversionOptions) -> Any:
    from html_to_markdown import api

    return api._to_rust_conversion_options(options)


def _convert(html: str, base_url: str | None, plain: bool) -> Any:
    native = _native_options(base_url, plain)
    if native is not None:
        from html_to_markdown import _html_to_markdown

        return _html_to_markdown.convert(html=html, options=native, visitor=None)
    return html_to_markdown.convert(html, _options(base_url, plain))


def convert(html: str, base_url: str | None = None, *, plain: bool = False) -> str:
    """Markdown (or plain text) of an HTML fragment or document, boilerplate excluded."""
    try:
        text = _convert(html, base_url, plain).content
    except html_to_markdown.ConversionError as exc:  # malformed beyond repair: no content
        log.debug("html-to-markdown failed: %s", exc)
        return ""
    return str(text).strip()[:MAX_TEXT_CHARS]


def main_node(tree: LexborHTMLParser) -> LexborNode | None:
    """``<main>``, ``[role=main]`` or a lone ``<article>``; else ``<body>`` (None: no body)."""
    mains = tree.tags("main")
    if len(mains) == 1:
        return mains[0]
    for node in tree.tags("div") + tree.tags("section"):
        if node.attrs.get("role") == "main":
            return node
    articles = tree.tags("article")
    if len(articles) == 1:
        return articles[0]
    return tree.body


def main_html(tree: LexborHTMLParser) -> str:
    node = main_node(tree)
    return (node.html or "") if node is not None else (tree.html or "")


def main_markdown(html: str) -> str:
    """The main content of a whole HTML page as markdown (what ``markdown`` returns)."""
    return convert(main_html(LexborHTMLParser(html)))


# ----------------------------------------------------------------------------- links


def links(tree: LexborHTMLParser, base: str) -> list[dict[str, Any]]:
    """``{url, text, rel}`` of every ``<a href>`` / ``<area href>`` with an http(s) target."""
    resolver = LinkResolver(base)
    seen: set[str] = set()
    found: list[dict[str, Any]] = []
    for node in _anchors(tree):
        attrs = node.attrs
        href = attrs.get("href")
        if not href:
            continue
        url = resolver.resolve(href)
        if url is None or url in seen:
            continue
        seen.add(url)
        link: dict[str, Any] = {"url": url, "text": " ".join(node.text().split())[:500]}
        rel = attrs.get("rel")
        if rel:
            link["rel"] = " ".join(rel.lower().split())
        found.append(link)
        if len(found) >= MAX_LINKS:
            break
    return found


def _anchors(tree: LexborHTMLParser) -> Iterable[LexborNode]:
    yield from tree.tags("a")
    yield from tree.tags("area")


# ----------------------------------------------------------------------------- metadata


def metadata(
    tree: LexborHTMLParser, html: str, base: str, headers: Mapping[str, str]
) -> dict[str, Any]:
    """Title, description, language, canonical, OpenGraph, Twitter card, JSON-LD, microdata."""
    meta: dict[str, Any] = {}
    titles = tree.tags("title")
    if titles:
        meta["title"] = titles[0].text(strip=True)[:MAX_META_CHARS] or None
    opengraph: dict[str, str] = {}
    twitter: dict[str, str] = {}
    for node in tree.tags("meta"):
        attrs = node.attrs
        content = attrs.get("content")
        if content is None:
            continue
        content = content.strip()[:MAX_META_CHARS]
        key = (attrs.get("property") or attrs.get("name") or "").strip().lower()
        if key == "description":
            meta.setdefault("description", content)
        elif key.startswith("og:"):
            opengraph.setdefault(key[3:], content)
        elif key.startswith("twitter:"):
            twitter.setdefault(key[8:], content)
    htmls = tree.tags("html")
    language = htmls[0].attrs.get("lang") if htmls else None
    meta["language"] = (language or headers.get("content-language") or "").strip() or None
    for node in tree.tags("link"):
        attrs = node.attrs
        if "canonical" in (attrs.get("rel") or "").lower().split() and attrs.get("href"):
            meta["canonical"] = LinkResolver(base).resolve(attrs.get("href") or "")
            break
    meta["opengraph"] = opengraph
    meta["twitter"] = twitter
    meta.update(structured_data(html, base))
    return meta


def structured_data(html: str, base: str) -> dict[str, list[Any]]:
    """JSON-LD and microdata by extruct, when the page has any (else empty, at no cost)."""
    syntaxes = []
    lowered = html[:2_000_000]
    if "ld+json" in lowered:
        syntaxes.append("json-ld")
    if "itemscope" in lowered:
        syntaxes.append("microdata")
    if not syntaxes:
        return {"json_ld": [], "microdata": []}
    import extruct

    try:
        data = extruct.extract(html, base_url=base, syntaxes=syntaxes, errors="ignore")
    except Exception as exc:  # a broken block must not cost the page its other formats
        log.debug("extruct failed on %s: %s", base, exc)
        data = {}
    return {"json_ld": data.get("json-ld", []), "microdata": data.get("microdata", [])}


# ----------------------------------------------------------------------------- html


def cleaned_html(html: str) -> str:
    """The document without scripts, styles, comments, event handlers or javascript: URLs."""
    from lxml_html_clean import Cleaner

    cleaner = Cleaner(
        scripts=True,
        javascript=True,
        comments=True,
        style=True,
        inline_style=True,
        links=False,
        meta=False,
        page_structure=False,
        processing_instructions=True,
        embedded=True,
        frames=True,
        forms=False,
        annoying_tags=False,
        remove_unknown_tags=False,
        safe_attrs_only=False,
    )
    with contextlib.suppress(ValueError):  # lxml refuses e.g. an empty document
        return str(cleaner.clean_html(html))
    return ""


# ----------------------------------------------------------------------------- all of it


def render(
    tree: LexborHTMLParser,
    html: str,
    base: str,
    formats: tuple[str, ...],
    headers: Mapping[str, str],
) -> dict[str, Any]:
    """The formats asked for, as a JSON-ready dict (keys as in ``core.output.PageContent``)."""
    out: dict[str, Any] = {}
    if Format.markdown in formats or Format.text in formats:
        main = main_html(tree)
        if Format.markdown in formats:
            out["markdown"] = convert(main, base)
        if Format.text in formats:
            out["text"] = convert(main, base, plain=True)
    if Format.html in formats:
        out["html"] = cleaned_html(html)
    if Format.raw_html in formats:
        out["raw_html"] = html
    if Format.links in formats:
        out["links"] = links(tree, base)
    if Format.metadata in formats:
        out["metadata"] = metadata(tree, html, base, headers)
    return out
