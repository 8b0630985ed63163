"""Operator routes (``Authorization: Bearer <operator key>``): tenants and containers.

A tenant key on these routes is a valid credential without the right: 403. A missing or
wrong key: 401.
"""

from __future__ import annotations

import re

from core.api.http import ApiResponse
from core.api.routing import JSON_BODY_ERRORS, Context, Reply, Route
from core.api.schemas import ContainerList, TenantCreated, TenantList, TenantView
from core.api.validation import parse_json_body
from core.errors import NotFound
from core.models import Tenant, TenantCreate
from core.records import Records
from core.settings import SkycrawlSettings
from core.tenancy import TenantService

_TENANT_ID = re.compile(r"tn_[0-9a-f]{32}")


class TenantRoutes:
    def __init__(
        self, *, records: Records, tenants: TenantService, settings: SkycrawlSettings
    ) -> None:
        self._records = records
        self._tenants = tenants
        self._base_url = settings.public_base_url.rstrip("/")

    async def create_tenant(self, ctx: Context) -> ApiResponse:
        request = parse_json_body(ctx.request, TenantCreate)
        tenant, api_key = await self._tenants.create(request)
        body = TenantCreated(**TenantView.of(tenant).model_dump(), api_key=api_key)
        location = f"{self._base_url}/v1/tenants/{tenant.id}"
        return ApiResponse.json(201, body, headers={"location": location})

    async def list_tenants(self, ctx: Context) -> ApiResponse:
        tenants = await self._tenants.list()
        return ApiResponse.json(200, TenantList(items=[TenantView.of(t) for t in tenants]))

    async def get_tenant(self, ctx: Context) -> ApiResponse:
        tenant = await self._load(ctx.params["tenant_id"])
        return ApiResponse.json(200, TenantView.of(tenant))

    async def delete_tenant(self, ctx: Context) -> ApiResponse:
        tenant = await self._load(ctx.params["tenant_id"])
        await self._tenants.delete(tenant.id)
        return ApiResponse.empty(204)

    async def list_containers(self, ctx: Context) -> ApiResponse:
        containers = [v.value for v in await self._records.containers.scan()]
        containers.sort(key=lambda c: (c.tenant_id, c.started_at, c.id))
        return ApiResponse.json(200, ContainerList(items=containers))

    async def _load(self, tenant_id: str) -> Tenant:
        if not _TENANT_ID.fullmatch(tenant_id):
            raise NotFound(f"no tenant {tenant_id!r}")
        return await self._tenants.get(tenant_id)

    def routes(self) -> list[Route]:
        not_found = Reply(404, "No such tenant.")
        return [
            Route(
                "POST",
                "/v1/tenants",
                self.create_tenant,
                "Create a tenant (returns its API key, once)",
                auth="operator",
                body=TenantCreate,
                replies=(
                    Reply(201, "Created.", TenantCreated, headers=("Location",)),
                    *JSON_BODY_ERRORS,
                ),
            ),
            Route(
                "GET",
                "/v1/tenants",
                self.list_tenants,
                "List tenants",
                auth="operator",
                replies=(Reply(200, "Every tenant.", TenantList),),
            ),
            Route(
                "GET",
                "/v1/tenants/{tenant_id}",
                self.get_tenant,
                "Get a tenant",
                auth="operator",
                replies=(Reply(200, "The tenant.", TenantView), not_found),
            ),
            Route(
                "DELETE",
                "/v1/tenants/{tenant_id}",
                self.delete_tenant,
                "Delete a tenant and everything it owns",
                auth="operator",
                replies=(Reply(204, "Deleted."), not_found),
            ),
            self._containers_route(),
        ]

    def _containers_route(self) -> Route:
        return Route(
            "GET",
            "/v1/containers",
            self.list_containers,
            "List every container record",
            auth="operator",
            replies=(Reply(200, "Every container.", ContainerList),),
        )
