"""A tiny browser stand-in for the web app tests: form posts, cookies, CSRF tokens."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from core.api import Api, ApiRequest, ApiResponse

HOST = "skycrawl.example.test"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Browser:
    api: Api
    host: str = HOST
    cookie: str | None = None
    last: ApiResponse | None = field(default=None, repr=False)

    async def request(
        self,
        method: str,
        path: str,
        *,
        form: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        all_headers = {"host": self.host, **(headers or {})}
        body = b""
        if form is not None:
            body = urlencode(form).encode()
            all_headers["content-type"] = "application/x-www-form-urlencoded"
        if self.cookie:
            all_headers["cookie"] = f"skycrawl_session={self.cookie}"
        response = await self.api.handle(
            ApiRequest(method, path, dict(query or {}), all_headers, body)
        )
        set_cookie = response.headers.get("set-cookie")
        if set_cookie:
            value = set_cookie.split(";", 1)[0].split("=", 1)[1]
            self.cookie = value or None
        self.last = response
        return response

    async def get(self, path: str, **query: str) -> ApiResponse:
        return await self.request("GET", path, query=query)

    async def post(self, path: str, form: Mapping[str, str], **kw: object) -> ApiResponse:
        return await self.request("POST", path, form=form, **kw)  # type: ignore[arg-type]

    async def csrf(self, path: str) -> str:
        """The CSRF token in the forms of page ``path``."""
        page = await self.get(path)
        assert page.status == 200, page.body[:500]
        match = _CSRF.search(page.body.decode())
        assert match, "no CSRF token on the page"
        return match.group(1)

    async def sign_in(self, tenant_id: str, key: str) -> ApiResponse:
        return await self.post(f"/t/{tenant_id}/signin", {"key": key})

    def text(self) -> str:
        assert self.last is not None
        return self.last.body.decode()
