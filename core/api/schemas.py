"""What the API answers with: response bodies (and the problem shape) as pydantic models.

These models are also the source of ``/openapi.json``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.api.fleet_views import ContainerView
from core.delivery_models import WebhookAttempt
from core.models import (
    Crawl,
    CrawlCounts,
    CrawlState,
    PageRecord,
    Quotas,
    Tenant,
    TenantState,
)
from core.run_changes import RunChanges


class Out(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)


class CrawlAccepted(Out):
    """Answer to ``POST /v1/crawls``."""

    id: str
    status: CrawlState
    status_url: str


class CrawlTimings(Out):
    created_at: datetime
    dispatched_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float = Field(description="From creation to the end (or to now, if running).")


class CrawlLinks(Out):
    status: str
    pages: str
    export_jsonl: str
    export_warc: str


class CrawlStatus(Out):
    """A crawl and where it stands."""

    id: str
    status: CrawlState
    counts: CrawlCounts
    container_id: str | None
    attempts: int
    reason: str | None
    timings: CrawlTimings
    links: CrawlLinks
    webhook: WebhookStatus | None = Field(
        None, description="Delivery attempts of the crawl's webhook (GET of one crawl only)."
    )
    changes: RunChanges | None = Field(
        None,
        description="New, changed, unchanged and gone pages against the crawl this one "
        "re-crawled (recrawl_of id: a schedule's previous run), once the crawl has ended; "
        "GET of one crawl only.",
    )

    @classmethod
    def of(cls, crawl: Crawl, *, now: datetime, base_url: str) -> CrawlStatus:
        end = crawl.finished_at or now
        url = f"{base_url}/v1/crawls/{crawl.id}"
        return cls(
            id=crawl.id,
            status=crawl.state,
            counts=crawl.counts,
            container_id=crawl.container_id,
            attempts=crawl.attempts,
            reason=crawl.reason,
            timings=CrawlTimings(
                created_at=crawl.created_at,
                dispatched_at=crawl.dispatched_at,
                finished_at=crawl.finished_at,
                duration_s=max(0.0, (end - crawl.created_at).total_seconds()),
            ),
            links=CrawlLinks(
                status=url,
                pages=f"{url}/pages",
                export_jsonl=f"{url}/export?format=jsonl",
                export_warc=f"{url}/export?format=warc",
            ),
        )


class WebhookStatus(Out):
    """Where the crawl's webhook stands: every attempt, its answer, and the next retry."""

    state: Literal["pending", "delivered", "failed"]
    attempts: list[WebhookAttempt]


class CrawlList(Out):
    items: list[CrawlStatus]
    next_cursor: str | None


class PageList(Out):
    items: list[PageRecord]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at end.")


class ItemList(Out):
    """Items of a crawl's dataset: each the extracted fields plus ``_url``, the page."""

    items: list[dict[str, Any]]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at end.")


class TenantView(Out):
    """A tenant as the operator sees it (never the key or its hash)."""

    id: str
    name: str
    state: TenantState
    quotas: Quotas
    key_prefix: str
    resources: dict[str, str]
    created_at: datetime

    @classmethod
    def of(cls, tenant: Tenant) -> TenantView:
        return cls(
            id=tenant.id,
            name=tenant.name,
            state=tenant.state,
            quotas=tenant.quotas,
            key_prefix=tenant.key_prefix,
            resources=tenant.resources,
            created_at=tenant.created_at,
        )


class TenantCreated(TenantView):
    api_key: str = Field(description="The tenant's API key. Shown once; only a hash is kept.")


class TenantList(Out):
    items: list[TenantView]


class ContainerList(Out):
    items: list[ContainerView]  # core.api.fleet_views: proxy credentials redacted


class Health(Out):
    status: Literal["ok"] = "ok"


class ProblemError(Out):
    loc: list[str | int]
    msg: str
    type: str


class Problem(Out):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str = Field(description="``about:blank`` or ``urn:skycrawl:problem:<slug>``.")
    title: str
    status: int
    detail: str
    instance: str
    errors: list[ProblemError] | None = None


class ApiKeyView(Out):
    """One of a tenant's live API keys: its prefix (``sk_<prefix>_…``), never the secret."""

    prefix: str
    created_at: datetime


class ApiKeyList(Out):
    items: list[ApiKeyView]


class ApiKeyCreated(ApiKeyView):
    api_key: str = Field(description="The new key. Shown once: only its hash is stored.")
