"""One crawl: status, cancel, resume (a crawl the budget paused), re-run, exports, the page browser, a page and its preview.

The preview is the stored body served by its own response with ``Content-Security-Policy:
sandbox; default-src 'none'`` (an opaque origin: no script, no form, no plugin, and no
request of any kind — not even an image or a style sheet), shown in an ``<iframe sandbox>``
without ``allow-scripts`` or ``allow-same-origin``: two independent locks. Non-HTML bodies
are shown as plain text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.api.crawls import load_crawl
from core.api.http import ApiResponse
from core.errors import NotFound
from core.exports import FORMATS
from core.models import dump
from core.webapp import forms, http
from core.webapp.pages import (
    POSITION,
    STATUS_FILTERS,
    filter_pages,
    find_page,
    read_pages,
    stored_body,
)
from core.webapp.routing import WebRequest, WebRoute
from core.webapp.tenant_views import crawl_form

if TYPE_CHECKING:
    from core.webapp.app import WebApp

PREVIEW_CSP = "sandbox; default-src 'none'; frame-ancestors 'self'"


class CrawlViews:
    def __init__(self, app: WebApp) -> None:
        self.app = app

    async def _status(self, wr: WebRequest) -> dict[str, Any]:
        answer = await self.app.api.call("GET", f"/v1/crawls/{wr.params['crawl']}", tenant=wr.owner)
        if answer.status == 404:
            raise NotFound(wr.params["crawl"])
        if not answer.ok:
            raise RuntimeError(f"crawl status: {answer.problem}")
        data: dict[str, Any] = answer.data
        return data

    async def crawl(self, wr: WebRequest) -> ApiResponse:
        status = await self._status(wr)
        found = await load_crawl(self.app.records, wr.owner.id, status["id"])
        pages = await read_pages(self.app.blobs, wr.owner.id, status["id"])
        query = wr.request.query
        chosen = {k: query.get(k, "") for k in ("status", "type", "url")}
        if chosen["status"] not in STATUS_FILTERS:
            chosen["status"] = ""
        matching = filter_pages(
            pages, status=chosen["status"], content_type=chosen["type"], url=chosen["url"]
        )
        size = self.app.web.page_size
        start = _int(query.get("start", ""), len(matching))
        return self.app.render(
            wr,
            "crawl.html",
            crawl=status,
            spec=dump(found.value.spec),
            pages=matching[start : start + size],
            total=len(pages),
            matching=len(matching),
            start=start,
            size=size,
            chosen=chosen,
            status_filters=STATUS_FILTERS,
            exports=[(f.name, f.label) for f in FORMATS.values()],
        )

    async def cancel(self, wr: WebRequest) -> ApiResponse:
        crawl_id = wr.params["crawl"]
        answer = await self.app.api.call("DELETE", f"/v1/crawls/{crawl_id}", tenant=wr.owner)
        if answer.status == 404:
            raise NotFound(crawl_id)
        if not answer.ok:
            return self.app.error(wr, answer.status, str(answer.problem.get("detail", "")))
        back = http.field(wr.form, "back")
        return http.redirect(
            back if back == f"{wr.base}/crawls" else f"{wr.base}/crawls/{crawl_id}"
        )

    async def resume(self, wr: WebRequest) -> ApiResponse:
        crawl_id = wr.params["crawl"]
        answer = await self.app.api.call("POST", f"/v1/crawls/{crawl_id}/resume", tenant=wr.owner)
        if answer.status == 404:
            raise NotFound(crawl_id)
        if not answer.ok:
            return self.app.error(wr, answer.status, str(answer.problem.get("detail", "")))
        return http.redirect(f"{wr.base}/crawls/{crawl_id}")

    async def rerun(self, wr: WebRequest) -> ApiResponse:
        found = await load_crawl(self.app.records, wr.owner.id, wr.params["crawl"])
        spec = found.value.spec.model_dump(mode="json", exclude_defaults=True)
        answer = await self.app.api.call("POST", "/v1/crawls", tenant=wr.owner, body=spec)
        if not answer.ok:
            values = forms.form_values(found.value.spec.model_dump(mode="json"))
            by_field, general = forms.field_errors(answer.problem)
            return crawl_form(self.app, wr, values, by_field, general, answer.status)
        return http.redirect(f"{wr.base}/crawls/{answer.data['id']}")

    async def edit(self, wr: WebRequest) -> ApiResponse:
        """The new-crawl form, filled with this crawl's request (re-run with changes)."""
        found = await load_crawl(self.app.records, wr.owner.id, wr.params["crawl"])
        values = forms.form_values(found.value.spec.model_dump(mode="json"))
        return crawl_form(self.app, wr, values, {}, [])

    async def export(self, wr: WebRequest) -> ApiResponse:
        crawl_id = wr.params["crawl"]
        answer = await self.app.api.call(
            "GET",
            f"/v1/crawls/{crawl_id}/export",
            tenant=wr.owner,
            query={"format": wr.request.query.get("format", "jsonl")},
        )
        if answer.status == 404:
            raise NotFound(crawl_id)
        if not answer.ok:
            return self.app.error(wr, answer.status, str(answer.problem.get("detail", "")))
        response = answer.response
        response.headers.update({"cache-control": "no-store", "x-content-type-options": "nosniff"})
        return response

    async def _page(self, wr: WebRequest) -> tuple[dict[str, Any], Any]:
        status = await self._status(wr)
        if not POSITION.fullmatch(wr.params["page"]):
            raise NotFound(wr.params["page"])
        pages = await read_pages(self.app.blobs, wr.owner.id, status["id"])
        page = find_page(pages, wr.params["page"])
        if page is None:
            raise NotFound(wr.params["page"])
        return status, page

    async def page(self, wr: WebRequest) -> ApiResponse:
        status, page = await self._page(wr)
        return self.app.render(wr, "page.html", crawl=status, page=page, record=page.record)

    async def content(self, wr: WebRequest) -> ApiResponse:
        status, page = await self._page(wr)
        body = await stored_body(self.app.blobs, wr.owner.id, status["id"], page)
        kind = (page.record.content_type or "").split(";", 1)[0].strip().lower()
        if body is None:
            body, kind = b"(the crawler did not keep this page's content)", "text/plain"
        elif kind not in ("text/html", "application/xhtml+xml"):
            kind = "text/plain"
        headers = {
            "content-type": f"{kind}; charset=utf-8" if kind == "text/plain" else kind,
            "content-security-policy": PREVIEW_CSP,
            "x-frame-options": "SAMEORIGIN",
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "cross-origin-resource-policy": "same-origin",
            "cache-control": "private, no-store",
        }
        return ApiResponse(200, headers, body)

    def routes(self) -> list[WebRoute]:
        c = "/t/{tenant}/crawls/{crawl}"
        return [
            WebRoute("GET", c, self.crawl, "tenant"),
            WebRoute("POST", f"{c}/cancel", self.cancel, "tenant", "editor"),
            WebRoute("POST", f"{c}/resume", self.resume, "tenant", "editor"),
            WebRoute("POST", f"{c}/rerun", self.rerun, "tenant", "editor"),
            WebRoute("GET", f"{c}/edit", self.edit, "tenant", "editor"),
            WebRoute("GET", f"{c}/export", self.export, "tenant"),
            WebRoute("GET", f"{c}/pages/{{page}}", self.page, "tenant"),
            WebRoute("GET", f"{c}/pages/{{page}}/content", self.content, "tenant"),
        ]


def _int(raw: str, high: int) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        return 0
    return min(int(raw), max(0, high - 1)) if high else 0
