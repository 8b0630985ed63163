"""The web app calls the API's own route handlers, in process, as the signed-in tenant.

A form post becomes the same ``ApiRequest`` a program would send, answered by the same
handler: the same validation, quota checks, idempotency and problem details (RFC 9457), which
the pages then show inline. The session stands in for the bearer key: the handler gets the
session's tenant in its ``Context``, exactly what ``Api._authenticate`` would have given it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.api.http import ApiRequest, ApiResponse
from core.api.problems import from_exception, problem_response
from core.api.routing import Context, Router
from core.errors import Forbidden
from core.models import Tenant


@dataclass(frozen=True, slots=True)
class Answer:
    """An API answer, parsed: ``ok`` with ``data``, or a ``problem`` body."""

    status: int
    data: Any
    response: ApiResponse

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def problem(self) -> dict[str, Any]:
        return self.data if not self.ok and isinstance(self.data, dict) else {}


class InProcessApi:
    def __init__(self, router: Router) -> None:
        self._router = router

    async def call(
        self,
        method: str,
        path: str,
        *,
        tenant: Tenant | None,
        operator: bool = False,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Answer ``method path`` as ``tenant`` (or as the operator); never raises."""
        all_headers = dict(headers or {})
        raw = b""
        if body is not None:
            raw = json.dumps(body).encode()
            all_headers["content-type"] = "application/json"
        request = ApiRequest(method, path, dict(query or {}), all_headers, raw)
        try:
            route, params = self._router.resolve(method, path)
            if route.auth == "operator" and not operator:
                raise Forbidden("an operator route")
            if route.auth == "tenant" and tenant is None:
                raise Forbidden("a tenant route")
            if route.auth == "either" and tenant is None and not operator:
                raise Forbidden("a tenant route")
            response = await route.handler(Context(request, params, tenant))
        except Exception as exc:
            response = problem_response(from_exception(exc), instance=path)
        return Answer(response.status, _parse(response), response)


def _parse(response: ApiResponse) -> Any:
    content_type = response.headers.get("content-type", "")
    if "json" not in content_type or "ndjson" in content_type or not response.body:
        return None
    try:
        return json.loads(response.body)
    except ValueError:
        return None
