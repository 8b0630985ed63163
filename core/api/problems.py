"""RFC 9457 problem details: every error the API returns is ``application/problem+json``.

``type`` is ``about:blank`` (with the HTTP reason phrase as ``title``) for plain HTTP errors
and ``urn:skycrawl:problem:<slug>`` for the ones a client may want to tell apart
(``validation``, ``unsafe-url``, ``quota-exceeded``, ``idempotency-key-reused``,
``crawl-finished``). Validation problems carry ``errors``: pydantic's ``loc``, ``msg`` and
``type`` for each error, never the input value (it may be a secret, such as a cookie).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from pydantic import ValidationError

from core.api.http import PROBLEM_JSON, ApiResponse
from core.errors import (
    BudgetReached,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    Retryable,
    SkycrawlError,
    Unauthorized,
    UnsafeUrl,
)

log = logging.getLogger("skycrawl.api")

TYPE_PREFIX = "urn:skycrawl:problem:"


class HttpProblem(Exception):
    """Raised by route code to answer with a problem."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.title = title or HTTPStatus(status).phrase
        self.headers = dict(headers or {})
        self.errors = errors


def problem_response(problem: HttpProblem, *, instance: str) -> ApiResponse:
    payload: dict[str, Any] = {
        "type": f"{TYPE_PREFIX}{problem.slug}" if problem.slug else "about:blank",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
    }
    if problem.errors is not None:
        payload["errors"] = problem.errors
    return ApiResponse.json(
        problem.status, payload, headers=problem.headers, content_type=PROBLEM_JSON
    )


def too_large(limit: int) -> HttpProblem:
    return HttpProblem(413, f"the request body is larger than {limit} bytes")


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic errors without ``input``, ``ctx`` or ``url``."""
    return [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def invalid(detail: str, errors: list[dict[str, Any]] | None = None) -> HttpProblem:
    return HttpProblem(422, detail, slug="validation", title="Invalid request", errors=errors or [])


def from_exception(exc: Exception) -> HttpProblem:
    """Map an error raised while handling a request to a problem (500 for the unexpected)."""
    if isinstance(exc, HttpProblem):
        return exc
    if isinstance(exc, SkycrawlError):
        return _from_domain(exc)
    log.error("unexpected error while handling a request", exc_info=exc)
    return HttpProblem(500, "an unexpected error occurred; it has been logged")


def _from_domain(exc: SkycrawlError) -> HttpProblem:
    detail = str(exc)
    if isinstance(exc, UnsafeUrl):
        return HttpProblem(
            422, exc.detail, slug="unsafe-url", title="URL not allowed", errors=exc.errors
        )
    if isinstance(exc, InvalidRequest):
        return invalid(exc.detail, exc.errors)
    if isinstance(exc, Unauthorized):
        return HttpProblem(401, detail, headers={"www-authenticate": 'Bearer realm="skycrawl"'})
    if isinstance(exc, Forbidden):
        return HttpProblem(403, detail)
    if isinstance(exc, NotFound):
        return HttpProblem(404, detail)
    if isinstance(exc, QuotaExceeded):
        return HttpProblem(
            429,
            exc.detail,
            slug="quota-exceeded",
            title="Quota exceeded",
            headers={"retry-after": str(exc.retry_after)},
        )
    if isinstance(exc, BudgetReached):
        return HttpProblem(402, exc.detail, slug="budget-reached", title="Budget reached")
    if isinstance(exc, Conflict | Retryable):
        log.warning("transient failure while handling a request: %s", exc)
        return HttpProblem(
            503, "a transient failure occurred; retry later", headers={"retry-after": "1"}
        )
    log.error("unmapped error while handling a request", exc_info=exc)
    return HttpProblem(500, "an unexpected error occurred; it has been logged")
