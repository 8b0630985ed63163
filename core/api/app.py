"""The HTTP API, framework-free: ``await Api(...).handle(ApiRequest) -> ApiResponse``.

Routes (see ``/openapi.json``)::

    POST   /v1/crawls                     tenant    submit (202 + status URL)
    GET    /v1/crawls                     tenant    list, newest first
    GET    /v1/crawls/{id}                tenant    status, counts, timings
    GET    /v1/crawls/{id}/pages          tenant    page records, cursor pagination
    GET    /v1/crawls/{id}/export         tenant    ?format=jsonl|warc
    DELETE /v1/crawls/{id}                tenant    cancel (202; 409 if already finished)
    POST   /v1/crawls/{id}/resume         tenant    resume a paused crawl (202; 402 over budget)
    POST   /v1/tenants                    operator  create (201, API key shown once)
    GET    /v1/tenants[/{id}]             operator  list / get
    DELETE /v1/tenants/{id}               operator  teardown (204)
    GET    /v1/containers                 operator  every container record
    GET    /v1/usage                      both      usage and cost per period (operator: all)
    GET    /v1/budget, PUT, DELETE        tenant    the monthly budget (402 on crawls once spent)
    GET    /v1/keys, POST /v1/keys        tenant    list / create API keys (shown once)
    POST   /v1/keys/{prefix}/rotate       tenant    replace a key; DELETE /v1/keys/{prefix} revokes
    GET    /healthz, /openapi.json        public

The web app (``/t/{tenant}/``), the operator console (``/console/``) and their assets
(``/assets/``) are answered by ``core.webapp.WebApp`` before the API's router: browser sign-in
with cookies there, bearer keys here.

Authentication is ``Authorization: Bearer <key>``. A tenant key on an operator route, or the
operator key on a tenant route, is 403; anything else that is not a valid key is 401. A crawl
of another tenant is 404, exactly like a crawl that does not exist. Bodies larger than
``settings.max_request_bytes`` are 413 before anything else is looked at. Every error is an
RFC 9457 problem (``core.api.problems``); unexpected exceptions are logged and answered 500.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from core.api.http import ApiRequest, ApiResponse
from core.api.problems import from_exception, problem_response, too_large
from core.api.routing import Context, Reply, Route, Router
from core.api.schemas import Health
from core.clock import Clock
from core.errors import ConfigurationError, Forbidden, Unauthorized
from core.models import Tenant
from core.netguard import AddressPolicy
from core.ports.blob_store import BlobStore
from core.ports.message_bus import MessageBus
from core.records import Records
from core.settings import SkycrawlSettings
from core.tenancy import TenantService
from core.webapp.paths import owns as web_owns
from core.webapp.settings import WebAppSettings

if TYPE_CHECKING:
    from core.webapp.app import WebApp

API_VERSION = "0.1.0"


def _headless(response: ApiResponse) -> ApiResponse:
    """``response`` as the answer to a HEAD: same status and headers, no body."""
    headers = dict(response.headers)
    headers.setdefault("content-length", str(len(response.body)))
    return ApiResponse(response.status, headers, b"")


class Api:
    """Every route of the public API over the core's records, bus and blobs."""

    def __init__(
        self,
        *,
        records: Records,
        tenants: TenantService,
        bus: MessageBus,
        blobs: BlobStore,
        clock: Clock,
        settings: SkycrawlSettings,
        web: WebAppSettings | None = None,
    ) -> None:
        self.settings = settings
        self._tenants = tenants
        try:
            self._policy = AddressPolicy.from_cidrs(settings.allow_cidrs)
        except ValueError as exc:
            raise ConfigurationError(f"SKYCRAWL_ALLOW_CIDRS: {exc}") from exc
        self._system = Router(self._system_routes())
        self._openapi: Any = None
        self._web_parts = (records, tenants, bus, blobs, clock, web)

    @functools.cached_property
    def router(self) -> Router:
        """Every route, built on the first request that is not ``/healthz`` or
        ``/openapi.json``: a cold start answering a health check imports no route module
        (nor their models)."""
        from core.api.crawls import CrawlRoutes
        from core.api.export_urls import ExportUrls
        from core.api.results import ResultRoutes
        from core.api.schedule_routes import ScheduleRoutes
        from core.api.tenants import TenantRoutes
        from core.api.usage_routes import UsageRoutes
        from core.api.webhook_routes import WebhookRoutes

        records, tenants, bus, blobs, clock, _ = self._web_parts
        settings, policy = self.settings, self._policy
        crawls = CrawlRoutes(
            records=records,
            tenants=tenants,
            bus=bus,
            clock=clock,
            settings=settings,
            policy=policy,
            blobs=blobs,
        )
        urls = ExportUrls(
            blobs=blobs,
            threshold_bytes=settings.export_url_bytes,
            ttl_s=settings.export_url_ttl_s,
        )
        results = ResultRoutes(records=records, blobs=blobs, urls=urls)
        admin = TenantRoutes(records=records, tenants=tenants, settings=settings)
        hooks = WebhookRoutes(records=records, bus=bus, clock=clock, inbox=settings.inbox_queue)
        usage = UsageRoutes(
            records=records, clock=clock, policy=policy, bus=bus, inbox=settings.inbox_queue
        )
        schedules = ScheduleRoutes(
            records=records,
            bus=bus,
            clock=clock,
            inbox=settings.inbox_queue,
            policy=policy,
            blobs=blobs,
        )
        others = [
            *crawls.routes(),
            *results.routes(),
            *admin.routes(),
            *hooks.routes(),
            *usage.routes(),
            *schedules.routes(),
        ]
        for route in others:  # what lets _resolve answer a system path without them
            if any(route.match(system.path) is not None for system in self._system.routes):
                raise AssertionError(f"{route.path} shadows a system route")
        return Router([*self._system.routes, *others])

    @functools.cached_property
    def web(self) -> WebApp:
        """The web app, built on the first request that needs it (not on a cold start)."""
        from core.webapp.app import WebApp

        records, tenants, bus, blobs, clock, web = self._web_parts
        return WebApp(
            router=self.router,
            records=records,
            tenants=tenants,
            bus=bus,
            blobs=blobs,
            clock=clock,
            settings=self.settings,
            web=web,
        )

    async def handle(self, request: ApiRequest, *, streaming: bool = False) -> ApiResponse:
        """Answer one request; never raises. A streamed body (``response.stream``) is left to
        a ``streaming`` caller to send, and joined into ``body`` for any other."""
        try:
            response = await self._dispatch(request)
            if response.stream is not None and not streaming:
                response.body = b"".join([chunk async for chunk in response.stream])
                response.stream = None
        except Exception as exc:
            response = problem_response(from_exception(exc), instance=request.path)
        response.headers.setdefault("cache-control", "no-store")
        return response

    async def _dispatch(self, request: ApiRequest) -> ApiResponse:
        limit = self.settings.max_request_bytes
        if len(request.body) > limit:
            raise too_large(limit)
        if web_owns(request.path):
            return await self.web.handle(request)
        method = request.method.upper()
        if method == "HEAD":  # RFC 9110: HEAD is GET without the body, on every GET route
            return _headless(await self._route(replace(request, method="GET")))
        return await self._route(request)

    async def _route(self, request: ApiRequest) -> ApiResponse:
        method, path = request.method.upper(), request.path
        if "router" not in self.__dict__ and any(
            route.match(path) is not None for route in self._system.routes
        ):  # /healthz, /openapi.json: no other route has these paths
            route, params = self._system.resolve(method, path)
        else:
            route, params = self.router.resolve(method, path)
        tenant = await self._authenticate(route, request)
        return await route.handler(Context(request, params, tenant))

    async def _authenticate(self, route: Route, request: ApiRequest) -> Tenant | None:
        header = request.header("authorization")
        if route.auth == "either":
            if self._is_operator(header):
                return None
            return await self._tenants.authenticate(header)
        if route.auth == "tenant":
            try:
                return await self._tenants.authenticate(header)
            except Unauthorized:
                if self._is_operator(header):
                    raise Forbidden("the operator key cannot act as a tenant") from None
                raise
        if route.auth == "operator":
            try:
                self._tenants.authenticate_operator(header)
            except Unauthorized:
                if await self._is_tenant(header):
                    raise Forbidden("tenant keys cannot use operator routes") from None
                raise
        return None

    def _is_operator(self, header: str | None) -> bool:
        try:
            self._tenants.authenticate_operator(header)
        except Unauthorized:
            return False
        return True

    async def _is_tenant(self, header: str | None) -> bool:
        try:
            await self._tenants.authenticate(header)
        except Unauthorized:
            return False
        return True

    # ------------------------------------------------------------------ public routes

    async def healthz(self, ctx: Context) -> ApiResponse:
        return ApiResponse.json(200, Health())

    async def healthz_head(self, ctx: Context) -> ApiResponse:
        return _headless(await self.healthz(ctx))

    async def openapi(self, ctx: Context) -> ApiResponse:
        if self._openapi is None:
            from core.api.openapi import build_openapi

            self._openapi = build_openapi(
                self.router.routes,
                title="skycrawl",
                version=API_VERSION,
                server=self.settings.public_base_url,
            )
        return ApiResponse.json(200, self._openapi)

    def _system_routes(self) -> list[Route]:
        return [
            Route(
                "GET",
                "/healthz",
                self.healthz,
                "Liveness",
                auth="none",
                replies=(Reply(200, "Alive.", Health),),
            ),
            Route(
                "HEAD",
                "/healthz",
                self.healthz_head,
                "Liveness, without a body",
                auth="none",
                replies=(Reply(200, "Alive."),),
            ),
            Route(
                "GET",
                "/openapi.json",
                self.openapi,
                "This document",
                auth="none",
                replies=(Reply(200, "OpenAPI 3.1 document."),),
            ),
        ]
