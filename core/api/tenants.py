"""Operator routes (``Authorization: Bearer <operator key>``): tenants and containers; and a
tenant's own API keys (``/v1/keys``, tenant key).

A tenant key on the operator routes is a valid credential without the right: 403. A missing
or wrong key: 401. Key routes: ``GET /v1/keys`` lists the live keys (prefixes only),
``POST /v1/keys`` adds one (201, plaintext shown once), ``POST /v1/keys/{prefix}/rotate``
adds one and revokes ``prefix`` (the new key works before the old one stops), ``DELETE
/v1/keys/{prefix}`` revokes (204; 409 for the last key, so a tenant is never locked out).
"""

from __future__ import annotations

import re

from core.api.fleet_views import container_view
from core.api.http import ApiResponse
from core.api.problems import HttpProblem
from core.api.routing import JSON_BODY_ERRORS, Context, Reply, Route
from core.api.schemas import (
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyView,
    ContainerList,
    TenantCreated,
    TenantList,
    TenantView,
)
from core.api.validation import parse_json_body
from core.egress_scoring import HEALTH_PARTITION, HEALTH_TABLE, EgressHealthRecord
from core.errors import NotFound
from core.models import Tenant, TenantCreate
from core.records import ApiKeyInfo, Records, Table
from core.settings import SkycrawlSettings
from core.tenancy import TenantService

_TENANT_ID = re.compile(r"tn_[0-9a-f]{32}")
_KEY_PREFIX = re.compile(r"[0-9a-f]{8}")


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
        health_table = Table(self._records.state, HEALTH_TABLE, EgressHealthRecord)
        health = {v.value.egress: v.value for v in await health_table.query(HEALTH_PARTITION)}
        items = [container_view(c, health) for c in containers]
        return ApiResponse.json(200, ContainerList(items=items))

    # ------------------------------------------------------------------ a tenant's keys

    async def list_keys(self, ctx: Context) -> ApiResponse:
        keys = await self._tenants.list_keys(ctx.owner)
        return ApiResponse.json(200, ApiKeyList(items=[_key_view(k) for k in keys]))

    async def create_key(self, ctx: Context) -> ApiResponse:
        info, plaintext = await self._tenants.create_key(ctx.owner)
        return self._key_created(info, plaintext)

    async def rotate_key(self, ctx: Context) -> ApiResponse:
        prefix = await self._own_prefix(ctx)
        info, plaintext = await self._tenants.rotate_key(ctx.owner, prefix)
        return self._key_created(info, plaintext)

    async def revoke_key(self, ctx: Context) -> ApiResponse:
        prefix = await self._own_prefix(ctx)
        if len(await self._tenants.list_keys(ctx.owner)) == 1:
            raise HttpProblem(
                409,
                "the last API key cannot be revoked: create another one first",
                slug="last-key",
                title="Last API key",
            )
        await self._tenants.revoke_key(ctx.owner, prefix)
        return ApiResponse.empty(204)

    async def _own_prefix(self, ctx: Context) -> str:
        prefix = ctx.params["prefix"]
        keys = await self._tenants.list_keys(ctx.owner)
        if not _KEY_PREFIX.fullmatch(prefix) or prefix not in {k.prefix for k in keys}:
            raise NotFound(f"no API key {prefix!r}")
        return prefix

    def _key_created(self, info: ApiKeyInfo, plaintext: str) -> ApiResponse:
        body = ApiKeyCreated(prefix=info.prefix, created_at=info.created_at, api_key=plaintext)
        return ApiResponse.json(201, body)

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
            *self._key_routes(),
        ]

    def _key_routes(self) -> list[Route]:
        no_key = Reply(404, "No such key (or not yours).")
        created = Reply(201, "The new key, shown once.", ApiKeyCreated)
        return [
            Route(
                "GET",
                "/v1/keys",
                self.list_keys,
                "List your API keys (prefixes only)",
                replies=(Reply(200, "Your live keys.", ApiKeyList),),
            ),
            Route(
                "POST", "/v1/keys", self.create_key, "Create another API key", replies=(created,)
            ),
            Route(
                "POST",
                "/v1/keys/{prefix}/rotate",
                self.rotate_key,
                "Replace an API key by a new one",
                replies=(created, no_key),
            ),
            Route(
                "DELETE",
                "/v1/keys/{prefix}",
                self.revoke_key,
                "Revoke an API key",
                replies=(
                    Reply(204, "Revoked."),
                    no_key,
                    Reply(409, "It is your last key."),
                ),
            ),
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


def _key_view(info: ApiKeyInfo) -> ApiKeyView:
    return ApiKeyView(prefix=info.prefix, created_at=info.created_at)
