"""How the CLI reaches the API: over HTTP to a running ``skycrawl up``, or in-process to an
embedded stack. Both speak ``ApiRequest``/``ApiResponse``, so the CLI has one code path and
the same validation, quotas and error bodies as any API client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from core.api import Api, ApiRequest, ApiResponse
from core.errors import SkycrawlError
from skycrawl_client import AsyncSkycrawl


class ApiError(SkycrawlError):
    """The API answered with a problem document."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
        super().__init__(str(detail))
        self.status = status
        self.problem = dict(problem)


class ApiClient(Protocol):
    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str,
        body: object | None = None,
        query: Mapping[str, str] | None = None,
    ) -> ApiResponse: ...

    async def close(self) -> None: ...


def _request(
    method: str, path: str, key: str, body: object | None, query: Mapping[str, str] | None
) -> ApiRequest:
    headers = {"authorization": f"Bearer {key}"}
    raw = b""
    if body is not None:
        raw = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    return ApiRequest(method=method, path=path, query=dict(query or {}), headers=headers, body=raw)


class InProcessClient:
    def __init__(self, api: Api) -> None:
        self._api = api

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str,
        body: object | None = None,
        query: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        return await self._api.handle(_request(method, path, key, body, query))

    async def close(self) -> None:
        return None


class HttpClient:
    """A running ``skycrawl up``, through the tenants' own typed client (``skycrawl_client``):
    the CLI sends exactly what any API client sends."""

    def __init__(self, base_url: str) -> None:
        self._api = AsyncSkycrawl(base_url, api_key="")

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str,
        body: object | None = None,
        query: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        payload = body if isinstance(body, Mapping) or body is None else None
        response = await self._api.request(
            method,
            path,
            body=payload,
            query=query,
            headers={"authorization": f"Bearer {key}"},
        )
        return ApiResponse(
            status=response.status_code, headers=dict(response.headers), body=response.content
        )

    async def close(self) -> None:
        await self._api.aclose()


def json_or_raise(response: ApiResponse) -> Any:
    """The JSON body of a 2xx answer; ``ApiError`` with the problem's detail otherwise."""
    try:
        document = json.loads(response.body) if response.body else {}
    except ValueError:
        document = {"detail": response.body[:200].decode(errors="replace")}
    if response.status >= 400:
        raise ApiError(response.status, document if isinstance(document, dict) else {})
    return document
