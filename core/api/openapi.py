"""``/openapi.json``: an OpenAPI 3.1 document built from the routes and their pydantic models.

Schemas come from ``model_json_schema`` (request bodies in validation mode, responses in
serialization mode) with ``$ref``s into ``#/components/schemas``; nested ``$defs`` are lifted
there too. Every error response is the RFC 9457 ``Problem`` schema.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel

from core.api.http import JSON, PROBLEM_JSON
from core.api.routing import Reply, Route
from core.api.schemas import Problem

REF = "#/components/schemas/{model}"
_HEADER_SCHEMAS: dict[str, dict[str, Any]] = {
    "Location": {"type": "string", "format": "uri-reference"},
    "Retry-After": {"type": "integer", "minimum": 1},
    "WWW-Authenticate": {"type": "string"},
}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "tenant": [{"tenantKey": []}],
    "operator": [{"operatorKey": []}],
    "either": [{"tenantKey": []}, {"operatorKey": []}],
    "none": [],
}


class _Components:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], mode: Literal["validation", "serialization"]) -> Any:
        schema = model.model_json_schema(ref_template=REF, mode=mode)
        for name, definition in schema.pop("$defs", {}).items():
            self.schemas.setdefault(name, definition)
        self.schemas.setdefault(model.__name__, schema)
        return {"$ref": REF.format(model=model.__name__)}


def build_openapi(routes: Iterable[Route], *, title: str, version: str, server: str) -> Any:
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation = _operation(route, components)
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    components.ref(Problem, "serialization")
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Multi-tenant, scale-to-zero crawling service. Errors are "
            "RFC 9457 problem details (application/problem+json).",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "securitySchemes": {
                "tenantKey": {"type": "http", "scheme": "bearer", "description": "Tenant key."},
                "operatorKey": {"type": "http", "scheme": "bearer", "description": "Operator key."},
            },
        },
    }
    if server:
        document["servers"] = [{"url": server}]
    return document


def _operation(route: Route, components: _Components) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "security": _SECURITY[route.auth],
        "responses": _responses(route, components),
    }
    parameters = [
        {"name": segment[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for segment in route.path.split("/")
        if segment.startswith("{")
    ]
    parameters += [
        {"name": p.name, "in": p.location, "description": p.description, "schema": dict(p.schema)}
        for p in route.params
    ]
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        schema = components.ref(route.body, "validation")
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": schema}}}
    return operation


def _responses(route: Route, components: _Components) -> dict[str, Any]:
    replies = list(route.replies)
    if route.auth != "none":
        replies.append(Reply(401, "Missing or invalid key.", headers=("WWW-Authenticate",)))
        replies.append(Reply(403, "A valid key that may not use this route."))
    responses: dict[str, Any] = {}
    for reply in replies:
        entry = responses.setdefault(str(reply.status), {"description": reply.description})
        content = _content(reply, components)
        if content is not None:
            entry.setdefault("content", {}).update(content)
        if reply.headers:
            entry["headers"] = {
                name: {"schema": _HEADER_SCHEMAS.get(name, {"type": "string"})}
                for name in reply.headers
            }
    responses["default"] = {
        "description": "Any other error.",
        "content": {PROBLEM_JSON: {"schema": components.ref(Problem, "serialization")}},
    }
    return responses


def _content(reply: Reply, components: _Components) -> dict[str, Any] | None:
    if reply.status == 204:
        return None
    if reply.status >= 400:
        return {PROBLEM_JSON: {"schema": components.ref(Problem, "serialization")}}
    if reply.model is not None:
        return {reply.content_type: {"schema": components.ref(reply.model, "serialization")}}
    if reply.content_type == JSON:
        return {JSON: {"schema": {"type": "object"}}}
    binary = {"type": "string", "contentMediaType": reply.content_type}
    return {reply.content_type: {"schema": binary}}
