"""Declarative extraction (``CrawlSpec.extract``, see ``core.output.ExtractSpec``) with parsel.

A field's selector is CSS (parsel's ``::text`` and ``::attr(name)`` included) or XPath. A
selector that ends on elements yields each element's text, whitespace-collapsed; one that
ends on text or attributes yields those, stripped. ``regex`` (RE2) keeps the first group (or
the whole match) of each value and drops values it does not match. ``many`` keeps every
value (a list), otherwise the first (or null). ``fields`` makes each match an object of
those fields, evaluated relative to it.

With ``items`` (CSS) every matching block is one item; otherwise a page gives one item, when
at least one of its fields found something. A field (path ``offers.price`` for nested ones)
that found nothing, and is not ``optional``, is named once in ``missing_fields``;
``(items)`` when the ``items`` selector matched nothing. Items are then checked against
``json_schema``: one that fails is not kept, and each failure is one line of
``item_errors`` (``item 2: $.price: 'x' is not of type 'number'``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # parsel (and lxml) are imported only by crawls that extract
    from parsel import Selector, SelectorList

    from core.output import ExtractSpec, FieldRule

MAX_VALUE_CHARS = 100_000
MAX_ITEMS_PER_PAGE = 1000
MAX_ERRORS = 20


@dataclass(slots=True)
class Extracted:
    items: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Extractor:
    """One crawl's ``ExtractSpec``, compiled once (per worker process)."""

    def __init__(self, spec: ExtractSpec) -> None:
        self._spec = spec
        from core.models import compile_url_pattern  # not at import: the workers' memory

        self._urls = compile_url_pattern(spec.urls) if spec.urls else None
        self._regexes = {
            rule.regex: compile_url_pattern(rule.regex)
            for rule in _rules(spec.fields)
            if rule.regex
        }
        self._validator: Any = None
        if spec.json_schema is not None:
            from jsonschema import validators

            cls = validators.validator_for(spec.json_schema)
            self._validator = cls(spec.json_schema)

    def applies_to(self, url: str) -> bool:
        return self._urls is None or self._urls.search(url) is not None

    def extract(self, selector: Selector) -> Extracted:
        result = Extracted()
        missing: dict[str, None] = {}
        if self._spec.items is not None:
            blocks = selector.css(self._spec.items)[:MAX_ITEMS_PER_PAGE]
            if not blocks:
                missing["(items)"] = None
            candidates = [self._object(block, self._spec.fields, "", missing) for block in blocks]
        else:
            item = self._object(selector, self._spec.fields, "", missing)
            candidates = [item] if any(_found(v) for v in item.values()) else []
        result.missing = list(missing)
        for index, item in enumerate(candidates):
            problems = self._problems(item)
            if problems:
                room = MAX_ERRORS - len(result.errors)
                result.errors += [f"item {index}: {p}" for p in problems][: max(0, room)]
            else:
                result.items.append(item)
        return result

    def _object(
        self, root: Selector, fields: dict[str, FieldRule], prefix: str, missing: dict[str, None]
    ) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for name, rule in fields.items():
            path = f"{prefix}{name}"
            value = self._value(root, rule, path, missing)
            if not _found(value) and not rule.optional:
                missing[path] = None
            obj[name] = value
        return obj

    def _value(self, root: Selector, rule: FieldRule, path: str, missing: dict[str, None]) -> Any:
        matches: SelectorList[Selector] = (
            root.css(rule.css) if rule.css is not None else root.xpath(rule.xpath or "")
        )
        if rule.fields:
            objects = [self._object(m, rule.fields, f"{path}.", missing) for m in matches]
            return objects if rule.many else (objects[0] if objects else None)
        values = []
        for match in matches:
            value = self._text(match)
            if rule.regex is not None:
                value = self._search(rule.regex, value)
            if value:
                values.append(value[:MAX_VALUE_CHARS])
                if not rule.many:
                    break
        return values if rule.many else (values[0] if values else None)

    @staticmethod
    def _text(match: Selector) -> str:
        if isinstance(match.root, str):  # ::text, ::attr(), text() and @attr results
            return match.root.strip()
        return " ".join(str(match.xpath("string()").get() or "").split())

    def _search(self, pattern: str, value: str) -> str:
        found = self._regexes[pattern].search(value)
        if found is None:
            return ""
        return str(found.group(1) if found.re.groups else found.group(0))

    def _problems(self, item: dict[str, Any]) -> list[str]:
        if self._validator is None:
            return []
        return [
            f"{error.json_path}: {error.message}"[:300]
            for error in self._validator.iter_errors(item)
        ]


def _found(value: Any) -> bool:
    return value not in (None, "", [], {})


def _rules(fields: dict[str, FieldRule]) -> Iterable[FieldRule]:
    for rule in fields.values():
        yield rule
        if rule.fields:
            yield from _rules(rule.fields)
