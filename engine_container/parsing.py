"""HTML parsing for the crawler: title, ``<base href>`` and followable links, with Lexbor.

``examine`` is what the crawler calls, in a worker thread for bodies of a few KiB and more:
Lexbor parses and hashlib hashes without the GIL (measured: two threads parse 1.9x as fast as
one), so the second core does this work while the event loop goes on.

Lexbor (selectolax) is used through ``tags()``, not CSS selectors: the first CSS query on a
document costs ~85 µs of selector-engine set-up, more than walking the tags (15 KB page:
~110 µs parse + links + title). Links marked ``rel="nofollow"`` are not followed. The body
is decoded with the ``charset`` of the Content-Type when it is not UTF-8; otherwise Lexbor
reads the bytes as UTF-8.
"""

from __future__ import annotations

import codecs
import hashlib
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser

MAX_TITLE_CHARS = 1000
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


@dataclass(frozen=True, slots=True)
class ParsedPage:
    title: str | None = None
    base: str | None = None
    links: list[str] = field(default_factory=list)


def _text(body: bytes, content_type: str | None) -> bytes | str:
    if not content_type or "charset=" not in content_type.lower():
        return body
    charset = content_type.lower().split("charset=", 1)[1].split(";")[0].strip(" \"'")
    if charset in _UTF8:
        return body
    try:
        return body.decode(codecs.lookup(charset).name, errors="replace")
    except LookupError:
        return body


def parse_html(body: bytes, content_type: str | None = None) -> ParsedPage:
    """Title, base href and the hrefs of ``<a>`` elements not marked nofollow."""
    tree = LexborHTMLParser(_text(body, content_type))
    titles = tree.tags("title")
    title = titles[0].text(strip=True)[:MAX_TITLE_CHARS] if titles else None
    base = None
    for node in tree.tags("base"):
        base = node.attrs.get("href")
        if base:
            break
    links = []
    for node in tree.tags("a"):
        attrs = node.attrs
        href = attrs.get("href")
        if href is None:
            continue
        rel = attrs.get("rel")
        if rel and "nofollow" in rel.lower():
            continue
        links.append(href)
    return ParsedPage(title=title or None, base=base or None, links=links)


@dataclass(frozen=True, slots=True)
class BodyFacts:
    """What the crawler records about a body: its SHA-256 and, for HTML, its parse."""

    sha256: str | None = None
    page: ParsedPage | None = None


NO_FACTS = BodyFacts()


def examine(body: bytes, content_type: str | None, parse: bool) -> BodyFacts:
    """SHA-256 of ``body`` and, when ``parse``, its title and links. Thread-safe."""
    if not body:
        return NO_FACTS
    page = parse_html(body, content_type) if parse else None
    return BodyFacts(sha256=hashlib.sha256(body).hexdigest(), page=page)
