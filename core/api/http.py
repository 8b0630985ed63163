"""Framework-free HTTP: the request the API receives and the response it returns.

Entry points (ASGI, Lambda, Azure Functions, Cloud Functions) turn their event into an
``ApiRequest`` and write the ``ApiResponse`` back; nothing here knows about any of them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One HTTP request. ``headers`` names are lower-case; ``path`` is percent-decoded."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(slots=True)
class ApiResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: A body sent as it is produced (exports); ``Api.handle`` joins it into ``body`` unless
    #: the caller can send chunks (``streaming=True``: the local ASGI server).
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def json(
        cls,
        status: int,
        payload: Any,
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str = JSON,
    ) -> ApiResponse:
        """A JSON response; ``payload`` may be a pydantic model or plain JSON data."""
        if isinstance(payload, BaseModel):
            body = payload.model_dump_json().encode()
        else:
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(status, {"content-type": content_type, **(headers or {})}, body)

    @classmethod
    def empty(cls, status: int = 204, *, headers: Mapping[str, str] | None = None) -> ApiResponse:
        return cls(status, dict(headers or {}), b"")

    def parsed(self) -> Any:
        """The body as JSON (for tests and adapters)."""
        return json.loads(self.body)
