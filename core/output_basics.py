"""The parts of ``core.output`` that need no pydantic: the format names and the handler
allow-list rule. The engine's analysis workers import only these, so a worker process that
renders formats never loads pydantic and the output models (~14 MB of its memory); they are
re-exported by ``core.output``, where the rest of the output half of ``CrawlSpec`` is.
"""

from __future__ import annotations

from enum import StrEnum


class Format(StrEnum):
    """A per-page output format of ``CrawlSpec.formats``."""

    markdown = "markdown"
    text = "text"
    html = "html"
    raw_html = "raw_html"
    links = "links"
    metadata = "metadata"
    headers = "headers"


DEFAULT_FORMATS = (Format.metadata, Format.links, Format.markdown)


def allowed_handlers(setting: str) -> frozenset[str]:
    """``SKYCRAWL_HANDLERS`` (comma-separated names; ``*``: every installed one) as a set."""
    return frozenset(part.strip() for part in setting.split(",") if part.strip())


def handler_allowed(name: str, allowed: frozenset[str]) -> bool:
    """The operator's allow-list rule, shared by the API (422) and the engine."""
    return name in allowed or "*" in allowed
