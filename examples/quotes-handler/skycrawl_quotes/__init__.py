"""An example ``PageHandler`` for skycrawl (entry point ``quotes``, see pyproject.toml).

On a list page (no label): one item per ``.quote`` (text, author, tags), a follow-up to the
next list page (``li.next a``) and one to each author's page, labelled ``author``. On an
author page: one item with the author's name and birth date. Install it into the engine's
environment (``pip install examples/quotes-handler``), allow it
(``SKYCRAWL_HANDLERS=quotes``) and crawl with ``"handler": "quotes"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from engine_container.handlers import Follow, HandledPage


class QuotesHandler:
    def handle(self, page: HandledPage) -> Iterator[dict[str, Any] | Follow]:
        sel = page.selector
        if page.label == "author":
            yield {
                "kind": "author",
                "name": (sel.css("h3.author-title::text").get() or "").strip(),
                "born": sel.css(".author-born-date::text").get(),
            }
            return
        for quote in sel.css(".quote"):
            yield {
                "kind": "quote",
                "text": quote.css(".text::text").get(),
                "author": quote.css(".author::text").get(),
                "tags": quote.css(".tag::text").getall(),
            }
            href = quote.css("a.author-link::attr(href)").get()
            if href:
                yield Follow(href, label="author")
        following = sel.css("li.next a::attr(href)").get()
        if following:
            yield Follow(following)
