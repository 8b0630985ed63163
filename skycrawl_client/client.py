"""``AsyncSkycrawl`` (httpx.AsyncClient) and ``Skycrawl``, its thin synchronous shim."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from core.api.schedule_routes import ScheduleList, ScheduleRunList, ScheduleView
from core.api.schemas import (
    ApiKeyCreated,
    ApiKeyList,
    ContainerList,
    CrawlAccepted,
    CrawlList,
    CrawlStatus,
    Health,
    ItemList,
    PageList,
    TenantCreated,
    TenantList,
    TenantView,
)
from core.api.usage_routes import BudgetView, UsageReport
from core.api.webhook_routes import WebhookSecretCreated, WebhookSecretView
from core.budgets import Budget
from core.delivery_models import ScheduleCreate
from core.models import CrawlSpec, TenantCreate

M = TypeVar("M", bound=BaseModel)
Body = BaseModel | Mapping[str, Any]


class ApiError(Exception):
    """The API answered with a problem document (RFC 9457)."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        self.detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        self.errors: list[dict[str, Any]] = list(problem.get("errors") or [])
        super().__init__(f"HTTP {status}: {self.detail}")


def _json(body: Body | None) -> Any:
    if body is None:
        return None
    if isinstance(body, BaseModel):
        return body.model_dump(mode="json", exclude_unset=True)
    return dict(body)


def _raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = {"detail": response.text[:200]}
    raise ApiError(response.status_code, problem if isinstance(problem, dict) else {})


def _query(**values: object) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None}


class AsyncSkycrawl:
    """The API over ``httpx.AsyncClient``; ``api_key`` is a tenant's (or the operator's)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            transport=transport,
            timeout=timeout_s,
            trust_env=False,
            headers={"authorization": f"Bearer {api_key}", "user-agent": "skycrawl-client/0.1"},
        )

    async def __aenter__(self) -> AsyncSkycrawl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Body | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One call, answered as is (no problem check): what the typed methods build on."""
        content = None if body is None else json.dumps(_json(body)).encode()
        sent = dict(headers or {})
        if content is not None:
            sent["content-type"] = "application/json"
        return await self._http.request(
            method, path, params=dict(query or {}), content=content, headers=sent
        )

    async def _call(
        self,
        model: type[M],
        method: str,
        path: str,
        *,
        body: Body | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> M:
        response = await self.request(method, path, body=body, query=query, headers=headers)
        _raise_for_problem(response)
        return model.model_validate_json(response.content)

    async def _no_content(self, method: str, path: str) -> None:
        _raise_for_problem(await self.request(method, path))

    # ------------------------------------------------------------------ public

    async def healthz(self) -> Health:
        return await self._call(Health, "GET", "/healthz")

    async def healthz_head(self) -> int:
        return (await self.request("HEAD", "/healthz")).status_code

    async def openapi(self) -> dict[str, Any]:
        response = await self.request("GET", "/openapi.json")
        _raise_for_problem(response)
        document: dict[str, Any] = response.json()
        return document

    # ------------------------------------------------------------------ crawls

    async def submit_crawl(
        self, spec: CrawlSpec | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> CrawlAccepted:
        headers = {"idempotency-key": idempotency_key} if idempotency_key else None
        return await self._call(CrawlAccepted, "POST", "/v1/crawls", body=spec, headers=headers)

    async def list_crawls(
        self, *, cursor: str | None = None, limit: int | None = None
    ) -> CrawlList:
        return await self._call(
            CrawlList, "GET", "/v1/crawls", query=_query(cursor=cursor, limit=limit)
        )

    async def get_crawl(self, crawl_id: str) -> CrawlStatus:
        return await self._call(CrawlStatus, "GET", f"/v1/crawls/{crawl_id}")

    async def cancel_crawl(self, crawl_id: str) -> CrawlStatus:
        return await self._call(CrawlStatus, "DELETE", f"/v1/crawls/{crawl_id}")

    async def resume_crawl(self, crawl_id: str) -> CrawlStatus:
        """A paused crawl (its budget was spent) continues from its checkpoint."""
        return await self._call(CrawlStatus, "POST", f"/v1/crawls/{crawl_id}/resume")

    async def list_pages(
        self, crawl_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> PageList:
        query = _query(cursor=cursor, limit=limit)
        return await self._call(PageList, "GET", f"/v1/crawls/{crawl_id}/pages", query=query)

    async def list_items(
        self, crawl_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> ItemList:
        """The crawl's extracted items (its ``extract`` rules or handler), a page at a time."""
        query = _query(cursor=cursor, limit=limit)
        return await self._call(ItemList, "GET", f"/v1/crawls/{crawl_id}/items", query=query)

    async def export_crawl(
        self, crawl_id: str, *, format: str = "jsonl", delivery: str = "auto"
    ) -> AsyncIterator[bytes]:
        """The export's bytes as they arrive (``jsonl``, ``warc``, ``screenshots`` (a ZIP),
        ``items.jsonl``, ``items.csv``, ``items.parquet``). A ``303`` to a signed blob URL (a large export on
        a cloud) is followed without the API key: the URL carries its own signature."""
        path = f"/v1/crawls/{crawl_id}/export"
        params = {"format": format, "delivery": delivery}
        async with self._http.stream("GET", path, params=params) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for_problem(response)
            location = response.headers.get("location")
            if response.status_code != 303 or location is None:
                async for chunk in response.aiter_bytes():
                    yield chunk
                return
        async with (
            httpx.AsyncClient(timeout=self._http.timeout, trust_env=False) as blob,
            blob.stream("GET", location) as signed,
        ):
            if signed.status_code >= 400:
                await signed.aread()
                raise ApiError(signed.status_code, {"detail": signed.text[:200]})
            async for chunk in signed.aiter_bytes():
                yield chunk

    async def get_screenshot(self, crawl_id: str, name: str) -> bytes:
        """A rendered page's screenshot: ``name`` as in its page record's ``screenshot``
        (with or without the ``screenshots/`` prefix)."""
        short = name.removeprefix("screenshots/")
        response = await self._http.get(f"/v1/crawls/{crawl_id}/screenshots/{short}")
        if response.status_code >= 400:
            _raise_for_problem(response)
        return response.content

    # ------------------------------------------------------------------ keys, webhooks

    async def list_keys(self) -> ApiKeyList:
        return await self._call(ApiKeyList, "GET", "/v1/keys")

    async def create_key(self) -> ApiKeyCreated:
        return await self._call(ApiKeyCreated, "POST", "/v1/keys")

    async def rotate_key(self, prefix: str) -> ApiKeyCreated:
        return await self._call(ApiKeyCreated, "POST", f"/v1/keys/{prefix}/rotate")

    async def revoke_key(self, prefix: str) -> None:
        await self._no_content("DELETE", f"/v1/keys/{prefix}")

    async def rotate_webhook_secret(self, *, grace_s: int | None = None) -> WebhookSecretCreated:
        body = {} if grace_s is None else {"grace_s": grace_s}
        return await self._call(WebhookSecretCreated, "POST", "/v1/webhooks/secret", body=body)

    async def get_webhook_secret(self) -> WebhookSecretView:
        return await self._call(WebhookSecretView, "GET", "/v1/webhooks/secret")

    async def revoke_webhook_secrets(self) -> None:
        """Revoke every signing secret at once: deliveries go out unsigned until a new one."""
        await self._no_content("DELETE", "/v1/webhooks/secret")

    # ------------------------------------------------------------------ usage, budget

    async def get_usage(
        self,
        *,
        start: str | None = None,
        end: str | None = None,
        granularity: str | None = None,
        tenant: str | None = None,
    ) -> UsageReport:
        """Usage and cost per period (ISO 8601 ``start``/``end``); the operator's key sees
        every tenant, or ``tenant``."""
        query = _query(**{"from": start, "to": end, "granularity": granularity, "tenant": tenant})
        return await self._call(UsageReport, "GET", "/v1/usage", query=query)

    async def get_budget(self) -> BudgetView:
        return await self._call(BudgetView, "GET", "/v1/budget")

    async def put_budget(self, budget: Budget | Mapping[str, Any]) -> BudgetView:
        return await self._call(BudgetView, "PUT", "/v1/budget", body=budget)

    async def delete_budget(self) -> None:
        await self._no_content("DELETE", "/v1/budget")

    # ------------------------------------------------------------------ schedules

    async def create_schedule(self, schedule: ScheduleCreate | Mapping[str, Any]) -> ScheduleView:
        return await self._call(ScheduleView, "POST", "/v1/schedules", body=schedule)

    async def list_schedules(self) -> ScheduleList:
        return await self._call(ScheduleList, "GET", "/v1/schedules")

    async def get_schedule(self, schedule_id: str) -> ScheduleView:
        return await self._call(ScheduleView, "GET", f"/v1/schedules/{schedule_id}")

    async def list_schedule_runs(self, schedule_id: str, *, limit: int = 10) -> ScheduleRunList:
        """The latest runs, newest first, with their new / changed / unchanged / gone pages."""
        path = f"/v1/schedules/{schedule_id}/runs"
        return await self._call(ScheduleRunList, "GET", path, query={"limit": str(limit)})

    async def pause_schedule(self, schedule_id: str) -> ScheduleView:
        return await self._call(ScheduleView, "POST", f"/v1/schedules/{schedule_id}/pause")

    async def resume_schedule(self, schedule_id: str) -> ScheduleView:
        return await self._call(ScheduleView, "POST", f"/v1/schedules/{schedule_id}/resume")

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._no_content("DELETE", f"/v1/schedules/{schedule_id}")

    # ------------------------------------------------------------------ operator

    async def create_tenant(self, tenant: TenantCreate | Mapping[str, Any]) -> TenantCreated:
        return await self._call(TenantCreated, "POST", "/v1/tenants", body=tenant)

    async def list_tenants(self) -> TenantList:
        return await self._call(TenantList, "GET", "/v1/tenants")

    async def get_tenant(self, tenant_id: str) -> TenantView:
        return await self._call(TenantView, "GET", f"/v1/tenants/{tenant_id}")

    async def delete_tenant(self, tenant_id: str) -> None:
        await self._no_content("DELETE", f"/v1/tenants/{tenant_id}")

    async def list_containers(self) -> ContainerList:
        return await self._call(ContainerList, "GET", "/v1/containers")


class Skycrawl:
    """The synchronous shim: each method runs ``AsyncSkycrawl``'s on a private event loop
    (not inside a running loop: use ``AsyncSkycrawl`` there)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._runner = asyncio.Runner()
        self.aio = self._runner.run(
            _make(base_url, api_key=api_key, transport=transport, timeout_s=timeout_s)
        )

    def __enter__(self) -> Skycrawl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self.aio.aclose())
        self._runner.close()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.aio, name)
        if name == "export_crawl":

            def export(*args: Any, **kwargs: Any) -> Iterator[bytes]:
                chunks = method(*args, **kwargs)
                while True:
                    try:
                        yield self._runner.run(chunks.__anext__())
                    except StopAsyncIteration:
                        return

            return export

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(method(*args, **kwargs))

        return call


async def _make(
    base_url: str, *, api_key: str, transport: httpx.AsyncBaseTransport | None, timeout_s: float
) -> AsyncSkycrawl:
    return AsyncSkycrawl(base_url, api_key=api_key, transport=transport, timeout_s=timeout_s)
