"""The web app's routes: path templates, who may use them, and the request they get."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from core.api.http import ApiRequest, ApiResponse
from core.api.routing import match_path
from core.models import Tenant
from core.records import WebRole, WebSession

Access = Literal["public", "tenant", "operator"]
#: What each role may do, lowest first; a route names the least role it needs.
ROLE_RANK: Mapping[WebRole, int] = {"viewer": 0, "editor": 1, "admin": 2, "operator": 2}


@dataclass(frozen=True, slots=True)
class WebRequest:
    request: ApiRequest
    params: Mapping[str, str]
    form: Mapping[str, list[str]] = field(default_factory=dict)
    tenant: Tenant | None = None
    session: WebSession | None = None
    sid: str | None = None

    @property
    def owner(self) -> Tenant:
        assert self.tenant is not None, "tenant routes always resolve their tenant"
        return self.tenant

    @property
    def user(self) -> WebSession:
        assert self.session is not None, "signed-in routes always have a session"
        return self.session

    @property
    def base(self) -> str:
        """Path prefix of this tenant's web app (``/t/{id}``), or of the console."""
        return f"/t/{self.tenant.id}" if self.tenant is not None else "/console"

    def can(self, role: WebRole) -> bool:
        return self.session is not None and ROLE_RANK[self.session.role] >= ROLE_RANK[role]


WebHandler = Callable[[WebRequest], Awaitable[ApiResponse]]


@dataclass(frozen=True, slots=True)
class WebRoute:
    method: str
    path: str  # e.g. "/t/{tenant}/crawls/{crawl}"
    handler: WebHandler
    access: Access
    role: WebRole = "viewer"  # least role (signed-in routes)

    def match(self, path: str) -> dict[str, str] | None:
        return match_path(self.path, path)
