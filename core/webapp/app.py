"""``WebApp``: the tenant web app (``/t/{tenant}/``), the operator console (``/console/``)
and their assets (``/assets/``), answered by the same framework-free handler as the API.

Why server-rendered Jinja2 and a little plain JavaScript: every page must work from any
cloud's HTTP function with no build step, no CDN and a strict CSP, and be readable by screen
readers and on a phone. Jinja2 (autoescaping on for every template, undefined names are
errors) renders HTML in-process; forms post to the server, which calls the API's own handlers
(``core.webapp.client``), so validation and errors are the API's. One ES module
(``static/app.js``) adds what needs script: live progress by polling (functions have time
limits, so no long-lived connections) and copy buttons. Without script every page still works
(reload to refresh).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from core.api.http import ApiRequest, ApiResponse
from core.api.routing import Router
from core.clock import Clock
from core.errors import NotFound
from core.models import Tenant, TenantState
from core.ports.blob_store import BlobStore
from core.ports.message_bus import MessageBus
from core.records import Records
from core.redaction import redact_text, redact_url
from core.settings import SkycrawlSettings
from core.tenancy import TenantService
from core.webapp import http
from core.webapp.assets import PREFIX as ASSET_PREFIX
from core.webapp.assets import Assets
from core.webapp.client import InProcessApi
from core.webapp.console import ConsoleViews
from core.webapp.crawl_views import CrawlViews
from core.webapp.deadletters import DeadLetters
from core.webapp.paths import owns
from core.webapp.routing import ROLE_RANK, WebRequest, WebRoute
from core.webapp.sessions import OPERATOR_REALM, Sessions, csrf_ok
from core.webapp.settings import WebAppSettings
from core.webapp.tenant_views import TenantViews

log = logging.getLogger("skycrawl.webapp")

TEMPLATES = Path(__file__).parent / "templates"
_TENANT_ID = re.compile(r"tn_[0-9a-f]{32}")


class WebApp:
    """Every web route; ``handle`` answers one request and never raises."""

    def __init__(
        self,
        *,
        router: Router,
        records: Records,
        tenants: TenantService,
        bus: MessageBus,
        blobs: BlobStore,
        clock: Clock,
        settings: SkycrawlSettings,
        web: WebAppSettings | None = None,
    ) -> None:
        self.settings = settings
        self.web = web or WebAppSettings()
        self.records = records
        self.tenants = tenants
        self.blobs = blobs
        self.clock = clock
        self.api = InProcessApi(router)
        self.sessions = Sessions(records, clock, self.web)
        self.dead_letters = DeadLetters(bus, settings.inbox_queue)
        self.assets = Assets()
        self._env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.globals["asset"] = self.assets.url
        self._env.filters["duration"] = duration
        self._env.filters["pretty"] = lambda value: redact_text(
            json.dumps(value, indent=2, ensure_ascii=False)
        )
        self._env.filters["redact"] = redact_url
        self._routes: list[WebRoute] = [
            *TenantViews(self).routes(),
            *CrawlViews(self).routes(),
            *ConsoleViews(self).routes(),
        ]

    owns = staticmethod(owns)

    # ------------------------------------------------------------------ rendering

    def render(
        self, wr: WebRequest, template: str, status: int = 200, **context: Any
    ) -> ApiResponse:
        body = self._env.get_template(template).render(
            base=wr.base,
            tenant=wr.tenant,
            session=wr.session,
            csrf=wr.session.csrf_token if wr.session else "",
            can_edit=wr.can("editor"),
            is_admin=wr.can("admin"),
            poll_ms=int(self.web.poll_interval_s * 1000),
            **context,
        )
        return http.html(status, body)

    def error(self, wr: WebRequest, status: int, message: str) -> ApiResponse:
        return self.render(wr, "error.html", status, code=status, message=message)

    # ------------------------------------------------------------------ dispatch

    async def handle(self, request: ApiRequest) -> ApiResponse:
        wr = WebRequest(request, {})
        try:
            return await self._dispatch(request)
        except NotFound:
            return self.error(wr, 404, "There is nothing here.")
        except Exception:
            log.exception("web request %s %s failed", request.method, request.path)
            return self.error(wr, 500, "Something went wrong; it has been logged.")

    async def _dispatch(self, request: ApiRequest) -> ApiResponse:
        path, method = request.path, request.method.upper()
        if path.startswith(ASSET_PREFIX):
            return self.assets.response(path) or http.html(404, "not found")
        segments = path.split("/")
        bare_tenant = len(segments) == 3 and segments[1] == "t" and bool(segments[2])
        if method == "GET" and (path == "/console" or bare_tenant):
            return http.redirect(path + "/")
        route, params = self._resolve(method, path)
        if route is None:
            raise NotFound(path)
        return await self._run(route, WebRequest(request, params))

    def _resolve(self, method: str, path: str) -> tuple[WebRoute | None, dict[str, str]]:
        for route in self._routes:
            params = route.match(path)
            if params is not None and route.method == method:
                return route, params
        return None, {}

    async def _run(self, route: WebRoute, wr: WebRequest) -> ApiResponse:
        request = wr.request
        tenant = await self._tenant(wr.params.get("tenant"))
        realm = OPERATOR_REALM if route.access == "operator" else (tenant.id if tenant else "")
        sid = http.cookie(request)
        session = await self.sessions.find(realm, sid) if realm else None
        fields = http.form(request) if request.method.upper() == "POST" else {}
        wr = WebRequest(request, wr.params, fields, tenant, session, sid)
        if request.method.upper() == "POST" and not http.same_origin(request):
            return self.error(wr, 403, "This form was sent from another site.")
        if route.access == "public":
            return await route.handler(wr)
        if session is None:
            if request.method.upper() == "POST":
                return self.error(wr, 403, "Your session has ended; sign in again.")
            return http.redirect(f"{wr.base}/signin")
        if request.method.upper() == "POST" and not csrf_ok(session, http.field(fields, "csrf")):
            return self.error(wr, 403, "This form has expired; reload the page and try again.")
        if ROLE_RANK[session.role] < ROLE_RANK[route.role]:
            return self.error(wr, 403, f"Your role ({session.role}) cannot do this.")
        return await route.handler(wr)

    async def _tenant(self, tenant_id: str | None) -> Tenant | None:
        """The active tenant a ``/t/{tenant}/`` path names; NotFound otherwise."""
        if tenant_id is None:
            return None
        if not _TENANT_ID.fullmatch(tenant_id):
            raise NotFound(tenant_id)
        tenant = await self.tenants.get(tenant_id)
        if tenant.state is not TenantState.active:
            raise NotFound(tenant_id)
        return tenant

    # ------------------------------------------------------------------ sign-in helpers

    async def sign_in(self, wr: WebRequest, realm: str, session_path: str, **kw: Any) -> str:
        """Start a new session (ending the one the browser had) and return its ``Set-Cookie``."""
        await self.sessions.end(realm, wr.sid)
        sid, _ = await self.sessions.start(realm, **kw)
        secure = not http.is_loopback_http(wr.request, self.settings.public_base_url)
        return http.session_cookie(
            sid, path=session_path, max_age=int(self.web.session_ttl_s), secure=secure
        )

    def origin(self, wr: WebRequest) -> str:
        """This deployment's public origin: the configured base URL, else the request's host."""
        configured = self.settings.public_base_url.rstrip("/")
        if configured:
            return configured
        plain = http.is_loopback_http(wr.request, configured)
        return f"{'http' if plain else 'https'}://{wr.request.header('host') or 'localhost'}"

    def sign_out_cookie(self, wr: WebRequest, session_path: str) -> str:
        secure = not http.is_loopback_http(wr.request, self.settings.public_base_url)
        return http.session_cookie("", path=session_path, max_age=0, secure=secure)


def duration(seconds: float | None) -> str:
    """``95.2`` → ``1m 35s``; ``None`` → ``—``."""
    if seconds is None:
        return "—"
    sign, total = ("-" if seconds < 0 else ""), int(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h {minutes}m"
    return f"{sign}{minutes}m {secs}s" if minutes else f"{sign}{secs}s"
