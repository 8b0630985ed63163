"""ASGI adapter: serve ``core.api.Api`` with any ASGI server (uvicorn in ``skycrawl up``).

A plain ASGI callable, no framework. It turns the scope and body into an ``ApiRequest`` and
the ``ApiResponse`` back into ``http.response.*`` events. The body is read only up to
``settings.max_request_bytes + 1`` bytes (a larger ``Content-Length`` is not read at all), so
an oversize upload costs little; the API answers it with 413. Lifespan events are accepted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from core.api import Api, ApiRequest, ApiResponse
from core.api.problems import problem_response, too_large

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ApiAsgiApp:
    """The API as an ASGI 3 application."""

    def __init__(self, api: Api) -> None:
        self._api = api
        self._cap = api.settings.max_request_bytes + 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"unsupported ASGI scope type {scope['type']!r}")
        headers = _headers(scope)
        path = str(scope["path"])
        if _declared_length(headers) >= self._cap:
            response = problem_response(too_large(self._cap - 1), instance=path)
            response.headers.update({"connection": "close", "cache-control": "no-store"})
            await _send_response(send, response)
            return
        body = await self._read_body(receive)
        request = ApiRequest(
            method=str(scope["method"]).upper(),
            path=path,
            query=_query(scope),
            headers=headers,
            body=body,
        )
        await _send_response(send, await self._api.handle(request, streaming=True))

    async def _read_body(self, receive: Receive) -> bytes:
        """At most ``cap`` bytes: enough for the API to see that a body is too large."""
        chunks: list[bytes] = []
        size = 0
        while size < self._cap:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = bytes(message.get("body", b""))
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)[: self._cap]


def create_asgi_app(api: Api) -> AsgiApp:
    """An ASGI application answering every request with ``api.handle``."""
    return ApiAsgiApp(api)


def _declared_length(headers: dict[str, str]) -> int:
    value = headers.get("content-length", "").strip()
    return int(value) if value.isascii() and value.isdigit() else 0


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = bytes(raw_name).decode("latin-1").lower()
        value = bytes(raw_value).decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _query(scope: Scope) -> dict[str, str]:
    raw = bytes(scope.get("query_string", b"")).decode("latin-1")
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw, keep_blank_values=True):
        query.setdefault(name, value)
    return query


async def _send_response(send: Send, response: ApiResponse) -> None:
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers.items()
        if name.lower() != "content-length"
    ]
    if response.stream is not None:  # chunked transfer: the length is not known up front
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        async for chunk in response.stream:
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
