"""What a crawl returns per page, and what it extracts: the output half of ``CrawlSpec``.

``formats``
    Any of ``markdown`` (main content, boilerplate removed), ``text`` (the same content as
    plain text), ``html`` (the main content's HTML without scripts, styles, comments or
    event-handler attributes), ``raw_html`` (the decoded body as received), ``links``
    (absolute, normalised, with anchor text and ``rel``), ``metadata`` (title, description,
    language, canonical, OpenGraph and Twitter cards, JSON-LD and microdata) and ``headers``
    (every response header). Default: ``metadata`` + ``links`` + ``markdown``. The engine
    stores them beside the manifest (``core.layout.content_key``); the API and exports return
    them as ``content`` in each page record (``PageContent``).

``extract`` (``ExtractSpec``)
    Named fields, each a CSS (with parsel's ``::text`` / ``::attr(name)``) or XPath selector,
    an optional RE2 ``regex`` (its first group, or the whole match), ``many`` for lists and
    ``fields`` for nested objects; ``items`` (a CSS selector) turns each repeated block
    (product cards, search hits) into one item, otherwise a page gives one item. Items go to
    the crawl's dataset (``core.layout.items_key``, ``items.jsonl``), checked against
    ``json_schema`` when given; a field that matched nothing (and is not ``optional``) is
    named in the page record's ``missing_fields``, an item that fails the schema in
    ``item_errors`` (and is left out of the dataset).

``handler``
    The name of a ``PageHandler`` (``engine_container.handlers``) installed in the engine image
    under the entry point group ``skycrawl.handlers`` and allowed by the operator
    (``SKYCRAWL_HANDLERS``).

``allow_types`` / ``refuse_types``
    Media types (``type/subtype`` or ``type/*``) whose bodies are downloaded; a refused type
    wins. Others are recorded with status and headers only. HTML is parsed, PDF text extracted
    (``text``/``markdown``), other allowed bodies (images, feeds, JSON) are kept in the WARC
    within the body caps.

Every selector, pattern and schema is compiled when the crawl is submitted, so a bad one is a
422 naming the field, never a failed crawl.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

from core.output_basics import DEFAULT_FORMATS, Format, allowed_handlers, handler_allowed

__all__ = ["DEFAULT_FORMATS", "Format", "allowed_handlers", "handler_allowed"]  # and the models

MAX_FIELDS = 100
MAX_NESTING = 3


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


DEFAULT_ALLOW_TYPES = ("text/html", "application/xhtml+xml", "application/pdf")
_MEDIA_PATTERN = re.compile(r"^(\*/\*|[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*))$")
_MEDIA_NAME = "[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
#: ``allow_types`` / ``refuse_types`` items as the published schema states them (media types
#: are case-insensitive: the server lowercases them before ``_MEDIA_PATTERN``).
MediaPattern = Annotated[
    str,
    Field(
        max_length=255,
        json_schema_extra={"pattern": rf"^(\*/\*|{_MEDIA_NAME}/(\*|{_MEDIA_NAME}))$"},
    ),
]


def check_css(selector: str) -> str:
    """``selector`` if parsel can run it (``::text`` and ``::attr()`` included), else ValueError."""
    from cssselect import SelectorError
    from parsel.csstranslator import HTMLTranslator

    try:
        HTMLTranslator().css_to_xpath(selector)
    except SelectorError as exc:
        raise ValueError(f"CSS selector {selector!r} is invalid: {exc}") from exc
    return selector


def check_xpath(expression: str) -> str:
    from lxml import etree

    try:
        etree.XPath(expression)
    except etree.XPathSyntaxError as exc:
        raise ValueError(f"XPath {expression!r} is invalid: {exc}") from exc
    return expression


#: What the published schema says of the strings the validators below check (a client or a
#: fuzzer reads the format; the server still checks each one).
_CSS: JsonDict = {"format": "css-selector"}
_XPATH: JsonDict = {"format": "xpath"}
_RE2: JsonDict = {"format": "regex"}
_FIELD_NAMES: JsonDict = {"propertyNames": {"minLength": 1, "maxLength": 100}}


class FieldRule(_Frozen):
    """One field of ``extract``: where its value is on the page."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["css"], "properties": {"css": {"type": "string"}}},
                {"required": ["xpath"], "properties": {"xpath": {"type": "string"}}},
            ]
        }
    )

    css: Annotated[str | None, Field(max_length=1000, json_schema_extra=_CSS)] = None
    xpath: Annotated[str | None, Field(max_length=1000, json_schema_extra=_XPATH)] = None
    regex: Annotated[
        str | None,
        Field(
            max_length=500,
            description="RE2; the first group, or the match",
            json_schema_extra=_RE2,
        ),
    ] = None
    many: bool = Field(False, description="a list of every match instead of the first")
    optional: bool = Field(False, description="not reported in missing_fields when absent")
    fields: dict[str, FieldRule] | None = Field(
        None,
        description="nested object per match (with many: a list of objects)",
        json_schema_extra=_FIELD_NAMES,
    )

    @field_validator("css")
    @classmethod
    def _css_compiles(cls, value: str | None) -> str | None:
        return None if value is None else check_css(value)

    @field_validator("xpath")
    @classmethod
    def _xpath_compiles(cls, value: str | None) -> str | None:
        return None if value is None else check_xpath(value)

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            from core.models import compile_url_pattern

            compile_url_pattern(value)
        return value

    @model_validator(mode="after")
    def _one_selector(self) -> FieldRule:
        if (self.css is None) == (self.xpath is None):
            raise ValueError("a field needs exactly one of css or xpath")
        return self


class ExtractSpec(_Frozen):
    """Declarative extraction: fields per page (or per ``items`` block) into ``items.jsonl``."""

    fields: Annotated[
        dict[str, FieldRule],
        Field(min_length=1, max_length=MAX_FIELDS, json_schema_extra=_FIELD_NAMES),
    ]
    items: Annotated[
        str | None,
        Field(
            max_length=1000,
            description="CSS of repeated blocks: each is one item",
            json_schema_extra=_CSS,
        ),
    ] = None
    urls: Annotated[
        str | None,
        Field(
            max_length=500,
            description="RE2: only pages whose URL matches",
            json_schema_extra=_RE2,
        ),
    ] = None
    json_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema every item must satisfy (others go to item_errors)"
    )

    @field_validator("items")
    @classmethod
    def _items_compiles(cls, value: str | None) -> str | None:
        return None if value is None else check_css(value)

    @field_validator("urls")
    @classmethod
    def _urls_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            from core.models import compile_url_pattern

            compile_url_pattern(value)
        return value

    @field_validator("json_schema")
    @classmethod
    def _schema_is_valid(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is None:
            return None
        from jsonschema import SchemaError, validators

        try:
            validators.validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"json_schema is not a valid JSON Schema: {exc.message}") from exc
        return schema

    @model_validator(mode="after")
    def _bounded(self) -> ExtractSpec:
        count = _count_rules(self.fields, 1)
        if count > MAX_FIELDS:
            raise ValueError(f"extract has {count} fields (at most {MAX_FIELDS})")
        return self


def _count_rules(fields: dict[str, FieldRule], depth: int) -> int:
    if depth > MAX_NESTING:
        raise ValueError(f"fields nest deeper than {MAX_NESTING} levels")
    total = 0
    for name, rule in fields.items():
        if not name or len(name) > 100:
            raise ValueError("field names are 1-100 characters")
        total += 1 + (_count_rules(rule.fields, depth + 1) if rule.fields else 0)
    return total


def check_media_patterns(patterns: list[str]) -> list[str]:
    clean = []
    for pattern in patterns:
        lower = pattern.strip().lower()
        if not _MEDIA_PATTERN.fullmatch(lower):
            raise ValueError(f"{pattern!r} is not a media type (type/subtype or type/*)")
        clean.append(lower)
    return clean


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    """Which bodies a crawl downloads: ``allow_types`` minus ``refuse_types``."""

    allow: tuple[str, ...] = DEFAULT_ALLOW_TYPES
    refuse: tuple[str, ...] = ()

    def allows(self, media_type: str | None) -> bool:
        """Whether a body of ``media_type`` (None: the server sent no type) is downloaded."""
        if media_type is None:
            return True  # sniffed as HTML, as browsers do
        major = media_type.split("/", 1)[0]
        candidates = ("*/*", media_type, f"{major}/*")
        allowed = any(p in candidates for p in self.allow)
        return allowed and not any(p in candidates for p in self.refuse)


# --------------------------------------------------------------------------- page content


class Link(BaseModel):
    model_config = ConfigDict(defer_build=True)

    url: str = Field(description="absolute and normalised (the frontier's form)")
    text: str = ""
    rel: str | None = None


class PageMetadata(BaseModel):
    model_config = ConfigDict(defer_build=True)

    title: str | None = None
    description: str | None = None
    language: str | None = None
    canonical: str | None = None
    opengraph: dict[str, str] = {}
    twitter: dict[str, str] = {}
    json_ld: list[Any] = []
    microdata: list[Any] = []


class PageContent(BaseModel):
    """The formats asked for, of one page; only those asked for (and available) are set."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    markdown: str | None = None
    text: str | None = None
    html: str | None = None
    raw_html: str | None = None
    links: list[Link] | None = None
    metadata: PageMetadata | None = None
    headers: dict[str, str] | None = None
    document: dict[str, Any] | None = Field(
        None, description="what the engine read from a document (PDF: pages, truncated)"
    )


def with_content(record_line: bytes, content_line: bytes) -> bytes:
    """A manifest line (a JSON object without ``content``) with ``content`` joined in, as
    the API, the exports and ``pages.jsonl`` show it; unchanged when there is no content."""
    record = record_line.rstrip()
    content = content_line.strip()
    if not content or content == b"{}" or not record.endswith(b"}"):
        return record + b"\n"
    return record[:-1] + b',"content":' + content + b"}\n"


# --------------------------------------------------------------------------- command lines


def parse_format_args(values: list[str]) -> list[str]:
    """``--format markdown,links --format text`` → names (``none``: no formats); ValueError."""
    names = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if names == ["none"]:
        return []
    known = {f.value for f in Format}
    for name in names:
        if name not in known:
            raise ValueError(f"unknown format {name!r} (use {', '.join(sorted(known))} or none)")
    return names


def read_extract_file(path: str) -> dict[str, Any]:
    """The JSON object of an ``--extract FILE`` (``ExtractSpec``); ValueError with one line."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise ValueError(f"--extract {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"--extract {path}: not JSON ({exc.msg}, line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"--extract {path}: must hold a JSON object with 'fields'")
    return data
