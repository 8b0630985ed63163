"""Routes: method + path template → handler, with what ``/openapi.json`` says about them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from core.api.http import JSON, ApiRequest, ApiResponse
from core.api.problems import HttpProblem
from core.errors import Unauthorized
from core.models import Tenant

#: Who may call a route; ``either``: a tenant key (``Context.tenant`` set) or the operator's.
Auth = Literal["tenant", "operator", "either", "none"]


@dataclass(frozen=True, slots=True)
class Context:
    """A request being handled: its path parameters and who sent it."""

    request: ApiRequest
    params: Mapping[str, str]
    tenant: Tenant | None = None

    @property
    def owner(self) -> Tenant:
        """The authenticated tenant (routes with ``auth="tenant"`` always have one)."""
        if self.tenant is None:
            raise Unauthorized("this route needs a tenant key")
        return self.tenant

    @property
    def tenant_id(self) -> str:
        return self.owner.id


Handler = Callable[[Context], Awaitable[ApiResponse]]


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented response of a route."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    content_type: str = JSON
    headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Param:
    """A documented query or header parameter."""

    name: str
    location: Literal["query", "header"]
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # template, e.g. "/v1/crawls/{crawl_id}"
    handler: Handler
    summary: str
    auth: Auth = "tenant"
    body: type[BaseModel] | None = None
    replies: tuple[Reply, ...] = ()
    params: tuple[Param, ...] = ()

    def match(self, path: str) -> dict[str, str] | None:
        """Path parameters if ``path`` fits the template (one non-empty segment each)."""
        return match_path(self.path, path)


def match_path(template: str, path: str) -> dict[str, str] | None:
    """The ``{name}`` segments of ``template`` filled from ``path`` (each one non-empty
    segment), or None if ``path`` does not fit. Shared by the API's and the web app's routes."""
    want, got = template.split("/"), path.split("/")
    if len(want) != len(got):
        return None
    params: dict[str, str] = {}
    for pattern, segment in zip(want, got, strict=True):
        if pattern.startswith("{") and pattern.endswith("}"):
            if not segment:
                return None
            params[pattern[1:-1]] = segment
        elif pattern != segment:
            return None
    return params


JSON_BODY_ERRORS = (
    Reply(400, "The body is not JSON."),
    Reply(413, "The body is too large."),
    Reply(415, "The body is not JSON (Content-Type)."),
    Reply(422, "The body is not valid."),
)
LIMIT = Param(
    "limit",
    "query",
    "Items per page (default 100).",
    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
)
#: Cursors are positions in plain text, so that every string of the documented form is one
#: (a position past the end is an empty page); the base64 form of earlier versions still reads.
LIST_CURSOR = r"^c1\.[0-9]{17}\.cr_[0-9a-f]{32}$"
PAGE_CURSOR = r"^p1\.[0-9]{1,12}\.[0-9]{1,9}$"


def cursor_param(pattern: str) -> Param:
    return Param(
        "cursor",
        "query",
        "Cursor from the previous page's next_cursor (omit for the first page).",
        {"type": "string", "pattern": pattern, "maxLength": 64},
    )


PAGING = (cursor_param(PAGE_CURSOR), LIMIT)
LIST_PAGING = (cursor_param(LIST_CURSOR), LIMIT)


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = tuple(routes)

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for ``method path``; 404 if no path fits, 405 (with Allow) if no method."""
        allowed: list[str] = []
        for route in self.routes:
            params = route.match(path)
            if params is None:
                continue
            if route.method == method:
                return route, params
            allowed.append(route.method)
        if not allowed:
            raise HttpProblem(404, f"no route for {path}")
        allow = ", ".join(sorted(set(allowed)))
        raise HttpProblem(405, f"{method} is not allowed here", headers={"allow": allow})
