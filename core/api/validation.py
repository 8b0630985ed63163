"""Turning request bodies and query strings into typed values, or into 4xx problems."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from core.api.http import ApiRequest
from core.api.problems import HttpProblem, invalid, validation_errors

M = TypeVar("M", bound=BaseModel)


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters ignored."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def parse_json_body(request: ApiRequest, model: type[M]) -> M:
    """Validate the body as ``model``: 415 if not JSON, 400 if unparseable, 422 if invalid."""
    if not is_json_media_type(request.header("content-type")):
        raise HttpProblem(415, "the body must be JSON (Content-Type: application/json)")
    try:
        document = json.loads(request.body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise HttpProblem(
            400, f"the body is not valid JSON: {_short(exc)}", slug="malformed-json"
        ) from None
    if not isinstance(document, dict):
        raise invalid(
            "the body must be a JSON object",
            [{"loc": [], "msg": "Input should be an object", "type": "model_type"}],
        )
    try:
        return model.model_validate_json(request.body)
    except ValidationError as exc:
        raise invalid("the request body is not valid", validation_errors(exc)) from None


def _short(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "unparseable"


def query_int(request: ApiRequest, name: str, *, default: int, low: int, high: int) -> int:
    """An integer query parameter in ``low..high``; 400 otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise HttpProblem(400, f"query parameter {name!r} must be an integer {low}..{high}")
    value = int(raw)
    if not low <= value <= high:
        raise HttpProblem(400, f"query parameter {name!r} must be an integer {low}..{high}")
    return value
