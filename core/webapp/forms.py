"""The crawl form: fields → the JSON body of ``POST /v1/crawls``, and the API's problem
details → messages next to the fields they concern.

Numbers and URLs are passed as typed, so the API (pydantic + the SSRF guard) judges them, and
its ``errors[].loc`` say which field was wrong. Fields of ``CrawlSpec`` this form has no input
for (formats, extraction fields as other work adds them) go in the "More options" JSON box,
whose label lists them — the form grows with the API without a change here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from core.models import CrawlSpec

LIST_FIELDS = ("seeds", "include", "exclude")
TEXT_FIELDS = ("scope", "max_pages", "max_depth", "session", "egress", "region", "webhook_url")
NUMBER_FIELDS = frozenset({"max_pages", "max_depth"})
FORM_FIELDS = frozenset({*LIST_FIELDS, *TEXT_FIELDS, "headers", "respect_robots"})


def extra_fields() -> list[str]:
    """``CrawlSpec`` fields the form has no input for (set through "More options")."""
    return [name for name in CrawlSpec.model_fields if name not in FORM_FIELDS]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def spec_body(fields: Mapping[str, list[str]]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The request body the form describes, and errors found before the API sees it."""

    def value(name: str) -> str:
        return (fields.get(name) or [""])[0]

    body: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name in LIST_FIELDS:
        items = _lines(value(name))
        if items or name == "seeds":
            body[name] = items
    for name in TEXT_FIELDS:
        text = value(name).strip()
        if text:  # a form sends text: whole numbers go as JSON numbers (the API is strict)
            number = name in NUMBER_FIELDS and text.lstrip("-").isdigit()
            body[name] = int(text) if number else text
    body["respect_robots"] = value("respect_robots") == "on"
    headers: dict[str, str] = {}
    for line in _lines(value("headers")):
        name, sep, header_value = line.partition(":")
        if not sep or not name.strip():
            errors.setdefault("headers", []).append(f"{line!r} is not 'Name: value'")
            continue
        headers[name.strip()] = header_value.strip()
    if headers:
        body["headers"] = headers
    more = value("more").strip()
    if more:
        try:
            extra = json.loads(more)
        except ValueError as exc:
            errors.setdefault("more", []).append(f"not JSON: {exc}")
            extra = {}
        if not isinstance(extra, dict):
            errors.setdefault("more", []).append("must be a JSON object")
        else:
            body.update({k: v for k, v in extra.items() if k not in FORM_FIELDS})
    return body, errors


def field_errors(problem: Mapping[str, Any]) -> tuple[dict[str, list[str]], list[str]]:
    """A problem's ``errors`` by form field; the rest (and the ``detail``) as general errors."""
    by_field: dict[str, list[str]] = {}
    general: list[str] = []
    for error in problem.get("errors") or []:
        loc = list(error.get("loc") or [])
        message = str(error.get("msg", "invalid"))
        name = str(loc[0]) if loc else ""
        if name in FORM_FIELDS:
            if len(loc) > 1 and name in LIST_FIELDS:
                message = f"line {int(loc[1]) + 1}: {message}"
            by_field.setdefault(name, []).append(message)
        elif name in CrawlSpec.model_fields:
            by_field.setdefault("more", []).append(f"{name}: {message}")
        else:
            general.append(message)
    if not by_field and not general:
        general.append(str(problem.get("detail") or problem.get("title") or "refused"))
    return by_field, general


def form_values(spec: Mapping[str, Any]) -> dict[str, str]:
    """A stored spec as form values (to re-run with changes, or to re-show a failed post)."""
    values: dict[str, str] = {}
    for name in LIST_FIELDS:
        values[name] = "\n".join(str(v) for v in spec.get(name) or [])
    for name in TEXT_FIELDS:
        raw = spec.get(name)
        values[name] = "" if raw is None else str(raw)
    headers = spec.get("headers") or {}
    values["headers"] = "\n".join(f"{k}: {v}" for k, v in headers.items())
    values["respect_robots"] = "on" if spec.get("respect_robots", True) else ""
    extra = {k: spec[k] for k in extra_fields() if k in spec and spec[k] not in (None, [], {})}
    values["more"] = json.dumps(extra, indent=2) if extra else ""
    return values


def posted_values(fields: Mapping[str, list[str]]) -> dict[str, str]:
    names = [*LIST_FIELDS, *TEXT_FIELDS, "headers", "respect_robots", "more"]
    return {name: (fields.get(name) or [""])[0] for name in names}
