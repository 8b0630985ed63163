"""Code extraction: ``PageHandler``s, found by entry point, chosen per crawl by name.

A handler is what a Scrapy callback or a Crawlee request handler is: it gets each page (the
response and its parsed tree) and yields items (mappings, into the crawl's ``items.jsonl``)
and follow-up requests (``Follow(url, label)``; the label comes back as ``page.label`` when
that page is handled). A handler package declares it in its ``pyproject.toml``::

    [project.entry-points."skycrawl.handlers"]
    quotes = "skycrawl_quotes:QuotesHandler"

The entry point names a class (instantiated once per engine process, without arguments), an
object with a ``handle`` method, or a plain function ``(page) -> iterable``. The operator
installs the package into the engine image and allows it by name (``SKYCRAWL_HANDLERS``, a
comma-separated list; ``*`` allows every installed handler); the API refuses a crawl that
names any other with a 422.

Handlers run synchronously in the engine's analysis workers (processes on a multi-core
container, see ``engine_container.analysis``), one page at a time per worker: they must not
do network I/O (yield ``Follow`` instead) and should not keep per-crawl state (a crawl's
pages are spread over the workers). Follow-ups obey the crawl's scope, filters and limits;
their labels are not in checkpoints (a resumed crawl handles those pages without a label).
An exception in a handler is reported in the page's ``item_errors``; the crawl goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from selectolax.lexbor import LexborHTMLParser

from core.errors import InvalidRequest
from core.output_basics import allowed_handlers, handler_allowed

if TYPE_CHECKING:
    from parsel import Selector

GROUP = "skycrawl.handlers"


@dataclass(frozen=True, slots=True)
class Follow:
    """A follow-up request a handler yields."""

    url: str
    label: str | None = None


@dataclass
class HandledPage:
    """What a handler gets: the response, its decoded text and parsed trees."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    text: str
    label: str | None
    tree: LexborHTMLParser | None  # Lexbor's tree (selectolax); None for non-HTML bodies

    @cached_property
    def selector(self) -> Selector:
        """A parsel ``Selector`` over the page, as a Scrapy response has (built on first use)."""
        from parsel import Selector

        return Selector(text=self.text)


@runtime_checkable
class PageHandler(Protocol):
    def handle(self, page: HandledPage) -> Iterable[Mapping[str, Any] | Follow]: ...


class _FunctionHandler:
    def __init__(self, fn: Callable[[HandledPage], Iterable[Mapping[str, Any] | Follow]]) -> None:
        self._fn = fn

    def handle(self, page: HandledPage) -> Iterable[Mapping[str, Any] | Follow]:
        return self._fn(page)


def installed() -> list[str]:
    """Names of every handler installed in this environment."""
    from importlib.metadata import entry_points  # ~1 MB a worker of a plain crawl never pays

    return sorted({ep.name for ep in entry_points(group=GROUP)})


def parse_allowed(setting: str) -> frozenset[str]:
    """``SKYCRAWL_HANDLERS`` as a set of names (``*``: all installed)."""
    return allowed_handlers(setting)


def check_allowed(name: str, allowed: frozenset[str]) -> None:
    """``InvalidRequest`` unless the operator allows ``name`` (or every handler, ``*``)."""
    if not handler_allowed(name, allowed):
        listed = ", ".join(sorted(allowed)) or "none"
        raise InvalidRequest(f"handler {name!r} is not allowed here (allowed: {listed})")


@cache
def load(name: str) -> PageHandler:
    """The handler installed under ``name`` (once per process); ``InvalidRequest`` if none."""
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        names = ", ".join(installed()) or "none"
        raise InvalidRequest(f"no handler {name!r} is installed (installed: {names})")
    target = found[0].load()
    handler = target() if isinstance(target, type) else target
    if isinstance(handler, PageHandler):
        return handler
    if callable(handler):
        return _FunctionHandler(handler)
    raise InvalidRequest(f"handler {name!r} has no handle(page) method")
