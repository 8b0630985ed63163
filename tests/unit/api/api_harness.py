"""Helpers for the API tests: the real local adapters in a temporary directory.

``Harness`` wires ``Api`` + ``TenantService`` over ``SqliteStateStore`` (dedicated tenant data:
the ``core.tenant_data`` router over it and one SQLite store per tenant), ``SqliteMessageBus``,
``FileBlobStore``, ``DirectoryProvisioner`` and ``SubprocessRuntime`` (whose "containers" are
``sleep`` subprocesses), all driven by one ``FakeClock``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.local.blob_store import FileBlobStore
from adapters.local.container_runtime import SubprocessRuntime
from adapters.local.message_bus import SqliteMessageBus
from adapters.local.provisioner import DirectoryProvisioner
from core.api import Api, ApiRequest, ApiResponse
from core.clock import FakeClock
from core.messages import InboxMessage, decode_inbox
from core.models import Egress, Quotas
from core.ports import ContainerRuntime, StateStore
from core.ports.message_bus import Queue
from core.records import Records
from core.settings import SkycrawlSettings
from core.tenancy import TenantService

OPERATOR_KEY = "operator-key-for-tests-0123456789"
BASE_URL = "https://api.example.test"
START = datetime(2030, 1, 1, 0, 0, 10, tzinfo=UTC)
SEED = {"seeds": ["https://example.com/"]}


def make_settings(**overrides: Any) -> SkycrawlSettings:
    values: dict[str, Any] = {
        "operator_key": OPERATOR_KEY,
        "public_base_url": BASE_URL,
        "max_request_bytes": 64 * 1024,
        "allow_cidrs": [],
        "stop_grace_s": 2.0,
        **overrides,
    }
    return SkycrawlSettings(**values)


@dataclass
class Harness:
    root: Path
    clock: FakeClock
    settings: SkycrawlSettings
    records: Records
    state: StateStore
    bus: SqliteMessageBus
    blobs: FileBlobStore
    provisioner: DirectoryProvisioner
    runtime: SubprocessRuntime
    tenants: TenantService
    api: Api

    def with_settings(self, **overrides: Any) -> Api:
        """Another Api over the same stores, with different settings."""
        settings = make_settings(**overrides)
        tenants = TenantService(
            self.records,
            self.provisioner,
            self.bus,
            self.blobs,
            self.runtime_for,
            self.clock,
            settings,
        )
        return Api(
            records=self.records,
            tenants=tenants,
            bus=self.bus,
            blobs=self.blobs,
            clock=self.clock,
            settings=settings,
        )

    def runtime_for(self, egress: Egress) -> ContainerRuntime:
        """The one runtime of these tests, whatever the egress."""
        return self.runtime

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json_body: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        api: Api | None = None,
    ) -> ApiResponse:
        all_headers = {k.lower(): v for k, v in (headers or {}).items()}
        if key is not None:
            all_headers.setdefault("authorization", f"Bearer {key}")
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers.setdefault("content-type", "application/json")
        request = ApiRequest(method, path, dict(query or {}), all_headers, body or b"")
        return await (api or self.api).handle(request)

    async def create_tenant(
        self, name: str = "acme", quotas: Quotas | None = None
    ) -> tuple[str, str]:
        """(tenant id, API key) of a new tenant, created through the operator route."""
        payload: dict[str, Any] = {"name": name}
        if quotas is not None:
            payload["quotas"] = quotas.model_dump()
        response = await self.call("POST", "/v1/tenants", key=OPERATOR_KEY, json_body=payload)
        assert response.status == 201, response.body
        data = response.parsed()
        return data["id"], data["api_key"]

    async def submit(self, key: str, spec: Any = None, **kwargs: Any) -> ApiResponse:
        return await self.call("POST", "/v1/crawls", key=key, json_body=spec or SEED, **kwargs)

    async def inbox(self) -> list[InboxMessage]:
        """Every message on the inbox (received and acked: each is returned once)."""
        messages: list[InboxMessage] = []
        while leases := await self.bus.receive(
            source=Queue(self.settings.inbox_queue), max_messages=10
        ):
            for lease in leases:
                messages.append(decode_inbox(lease.body))
                await self.bus.ack(lease=lease)
        return messages

    async def count(self, table: str) -> int:
        return len(await self.state.scan(table=table))

    async def assert_nothing_stored(self, *, crawls: int = 0) -> None:
        """No (more than ``crawls``) crawl records, as many active entries, no inbox message."""
        assert await self.count("crawls") == crawls
        assert await self.count("active") == crawls
        assert await self.inbox() == []


def assert_problem(response: ApiResponse, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status``; returns its body."""
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.parsed()
    assert isinstance(problem, dict)
    assert {"type", "title", "status", "detail", "instance"} <= problem.keys()
    assert problem["status"] == status
    assert isinstance(problem["title"], str)
    assert problem["title"]
    assert isinstance(problem["detail"], str)
    assert problem["detail"]
    assert "Traceback" not in response.body.decode()
    return problem
