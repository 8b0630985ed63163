"""How the CLI reaches the API: always through the tenants' own typed client
(``skycrawl_client.AsyncSkycrawl``), over HTTP to a running ``skycrawl up`` or over an
in-process ASGI transport onto an embedded stack's ``Api`` (no socket, no DNS). One client,
so the CLI sends exactly what any API client sends and meets the same validation, quotas and
problem bodies (``skycrawl_client.ApiError``) either way.

The CLI acts as two principals -- the operator (tenants, containers) and its tenant (crawls)
-- so ``CliClient.as_(key)`` hands out one ``AsyncSkycrawl`` per key, over one transport.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel

from core.api import Api
from functions.local.asgi import create_asgi_app
from skycrawl_client import ApiError, AsyncSkycrawl

#: Base URL of the in-process transport: never resolved, the ASGI transport answers it.
IN_PROCESS_URL = "http://skycrawl.in-process"


class CliClient:
    """The typed client, per key, on one way to the API."""

    def __init__(self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._base_url = base_url
        self._transport = transport
        self._clients: dict[str, AsyncSkycrawl] = {}

    @classmethod
    def in_process(cls, api: Api) -> CliClient:
        return cls(IN_PROCESS_URL, transport=httpx.ASGITransport(app=create_asgi_app(api)))

    def as_(self, key: str) -> AsyncSkycrawl:
        """The client that authenticates with ``key``."""
        client = self._clients.get(key)
        if client is None:
            client = AsyncSkycrawl(
                self._base_url, api_key=key, transport=self._transport, timeout_s=60.0
            )
            self._clients[key] = client
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def plain(model: BaseModel) -> dict[str, Any]:
    """An answer as the JSON object the API sent (the CLI prints and writes dicts)."""
    return model.model_dump(mode="json")


__all__ = ["ApiError", "CliClient", "plain"]
