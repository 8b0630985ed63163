"""Everything the engine computes from one body, as one pure function: ``analyse(job)``.

From a ``Job`` (the body, its type and URL, and the crawl's ``OutputPlan``) it returns the
SHA-256, the title and links the crawler follows, the page's formats as one JSON line
(``core.output.PageContent``), the items of ``extract`` and of the crawl's handler as JSON
lines, the fields that matched nothing and the item errors, and the handler's follow-ups.
The body is decoded once (``decoding.decode_html``: HTML5 sniffing) and parsed once by
Lexbor; parsel (lxml) parses again only for ``extract`` or a handler that asks for
``page.selector``.

Inputs and outputs are small frozen dataclasses of bytes and strings, so ``analyse`` runs
the same in the event loop's thread, a worker thread or a worker process
(``engine_container.analysis_pool``). Per-crawl compiled state (extractors, handlers) is
cached per process, keyed by the plan.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from selectolax.lexbor import LexborHTMLParser
from yarl import URL

from core.output_basics import Format
from engine_container import content, documents, handlers
from engine_container.decoding import decode_html
from engine_container.extraction import Extractor
from engine_container.links import LinkResolver
from engine_container.parsing import ParsedPage, parse_tree

if TYPE_CHECKING:  # the worker processes import neither the crawl models nor pydantic
    from core.models import CrawlSpec

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
MAX_HANDLER_OUTPUTS = 10_000


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode()


@dataclass(frozen=True, slots=True)
class OutputPlan:
    """What a crawl asks of every page, in a hashable, picklable form."""

    formats: tuple[str, ...] = ()
    extract: str | None = None  # ExtractSpec as JSON
    handler: str | None = None

    @classmethod
    def of(cls, spec: CrawlSpec) -> OutputPlan:
        return cls(
            formats=tuple(str(f) for f in spec.formats),
            extract=spec.extract.model_dump_json() if spec.extract is not None else None,
            handler=spec.handler,
        )

    @property
    def cheap(self) -> bool:
        """Only hashing, title and links: no formats, extraction or handler."""
        return not self.formats and self.extract is None and self.handler is None

    @property
    def needs_headers(self) -> bool:
        return Format.headers in self.formats or self.handler is not None


@dataclass(frozen=True, slots=True)
class Job:
    url: str  # the final URL (after redirects)
    status: int
    body: bytes
    content_type: str | None  # the Content-Type header as received (charset included)
    media_type: str | None  # without parameters, lower case
    plan: OutputPlan
    parse: bool = True  # a 2xx without error: worth parsing
    headers: tuple[tuple[str, str], ...] = ()  # every response header, when the plan needs them
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Analysis:
    sha256: str | None = None
    page: ParsedPage | None = None
    content: bytes | None = None  # one JSON object (PageContent), no newline
    items: bytes = b""  # JSON lines, each ending in a newline
    item_count: int = 0
    missing: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    follow: tuple[handlers.Follow, ...] = ()
    #: ``page.links`` resolved against the page's base (``LinkResolver``): what the frontier
    #: queues, resolved here so that the engine process does not do it again
    urls: tuple[str, ...] | None = None
    base: str | None = None  # the base the links were resolved against


NOTHING = Analysis()


@lru_cache(maxsize=32)
def _extractor(spec_json: str) -> Extractor:
    from core.output import ExtractSpec  # pydantic: only in a worker of a crawl that extracts

    return Extractor(ExtractSpec.model_validate_json(spec_json))


def analyse(job: Job) -> Analysis:
    """Hash, parse and extract one body (thread- and process-safe)."""
    if not job.body:
        return NOTHING
    sha = hashlib.sha256(job.body).hexdigest()
    if not job.parse:
        return Analysis(sha256=sha)
    if documents.is_pdf(job.media_type, job.body):
        return Analysis(sha256=sha, content=_document(job, documents.pdf_content))
    if job.media_type is not None and job.media_type not in HTML_TYPES:
        return Analysis(sha256=sha, content=_document(job, _other))
    return _html(job, sha)


def _other(body: bytes, formats: tuple[str, ...]) -> dict[str, Any]:
    return {"document": {"bytes": len(body)}}


def _document(job: Job, read: Any) -> bytes | None:
    if not job.plan.formats:
        return None
    out: dict[str, Any] = read(job.body, job.plan.formats)
    out["document"].setdefault("media_type", job.media_type)
    if Format.headers in job.plan.formats:
        out["headers"] = _header_map(job.headers)
    return _json(out)


def _html(job: Job, sha: str) -> Analysis:
    decoded = decode_html(job.body, job.content_type)
    tree = LexborHTMLParser(decoded)
    page = parse_tree(tree)
    text = decoded if isinstance(decoded, str) else decoded.decode("utf-8", "replace")
    base = job.url
    if page.base:
        with contextlib.suppress(ValueError):
            base = str(URL(job.url).join(URL(page.base)))
    plan = job.plan
    out: bytes | None = None
    if plan.formats:
        rendered = content.render(tree, text, base, plan.formats, _header_map(job.headers))
        if Format.headers in plan.formats:
            rendered["headers"] = _header_map(job.headers)
        out = _json(rendered)
    items: list[dict[str, Any]] = []
    missing: list[str] = []
    errors: list[str] = []
    follow: list[handlers.Follow] = []
    selector = None
    if plan.extract is not None:
        extractor = _extractor(plan.extract)
        if extractor.applies_to(job.url):
            from parsel import Selector

            selector = Selector(text=text)
            found = extractor.extract(selector)
            items += found.items
            missing += found.missing
            errors += found.errors
    if plan.handler is not None:
        handled = _handle(job, text, tree, selector)
        items += handled[0]
        follow += handled[1]
        errors += handled[2]
    lines = b"".join(_json({"_url": job.url, **item}) + b"\n" for item in items)
    resolver = LinkResolver(base)
    urls = tuple(url for href in page.links if (url := resolver.resolve(href)) is not None)
    return Analysis(
        sha256=sha,
        page=ParsedPage(title=page.title, base=page.base),  # links travel as ``urls``
        urls=urls,
        base=base,
        content=out,
        items=lines,
        item_count=len(items),
        missing=tuple(missing),
        errors=tuple(errors),
        follow=tuple(follow),
    )


def _handle(
    job: Job, text: str, tree: LexborHTMLParser, selector: Any
) -> tuple[list[dict[str, Any]], list[handlers.Follow], list[str]]:
    name = job.plan.handler or ""
    items: list[dict[str, Any]] = []
    follow: list[handlers.Follow] = []
    page = handlers.HandledPage(
        url=job.url,
        status=job.status,
        headers=_header_map(job.headers),
        body=job.body,
        text=text,
        label=job.label,
        tree=tree,
    )
    if selector is not None:
        page.selector = selector  # already parsed for extract: share it
    try:
        for index, output in enumerate(handlers.load(name).handle(page)):
            if index >= MAX_HANDLER_OUTPUTS:
                return items, follow, [f"handler {name}: more than {MAX_HANDLER_OUTPUTS} outputs"]
            if isinstance(output, handlers.Follow):
                follow.append(output)
            elif isinstance(output, Mapping):
                items.append(dict(output))
            else:
                return items, follow, [f"handler {name} yielded a {type(output).__name__}"]
    except Exception as exc:  # the tenant's code: report it on the page, go on
        return items, follow, [f"handler {name}: {type(exc).__name__}: {exc}"[:500]]
    return items, follow, []


def _header_map(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged
