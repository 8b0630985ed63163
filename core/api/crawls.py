"""Tenant routes for crawls: submit, list, status, cancel, resume.

Submitting validates the body (``CrawlSpec``) and its URLs (``core.netguard``), replays an
earlier answer for a repeated ``Idempotency-Key`` (24 h), checks the quotas, stores the crawl
and its ``active`` index entry, then puts ``CrawlSubmitted`` on the conductor's inbox. If a step
fails, the earlier ones are undone, so a failed request leaves nothing behind.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from core import sealed_headers, telemetry
from core.api.http import ApiResponse
from core.api.idempotency import IdempotencyKeys, busy, idempotency_key, spec_digest
from core.api.problems import HttpProblem
from core.api.routing import JSON_BODY_ERRORS, LIST_PAGING, Context, Param, Reply, Route
from core.api.schemas import CrawlAccepted, CrawlList, CrawlStatus, WebhookStatus
from core.api.validation import parse_json_body, query_int
from core.clock import Clock
from core.delivery_models import webhook_deliveries_table
from core.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    Retryable,
    SkycrawlError,
    UnsafeUrl,
)
from core.messages import CancelRequested, CrawlSubmitted, encode
from core.metering import crawl_done
from core.models import Crawl, CrawlSpec, CrawlState, Frozen, Tenant
from core.netguard import AddressPolicy, check_url
from core.output import allowed_handlers, handler_allowed
from core.paused import announce, resume
from core.ports.blob_store import BlobStore
from core.ports.message_bus import MessageBus
from core.records import ActiveCrawl, Records, Versioned, listing_key
from core.run_changes import run_changes
from core.settings import SkycrawlSettings
from core.tenancy import TenantService

log = logging.getLogger("skycrawl.api")

_CRAWL_ID = re.compile(r"cr_[0-9a-f]{32}")

Undo = Callable[[], Awaitable[None]]


async def load_crawl(records: Records, tenant_id: str, crawl_id: str) -> Versioned[Crawl]:
    """The tenant's crawl; ``NotFound`` for a crawl that does not exist or is not theirs."""
    found = None
    if _CRAWL_ID.fullmatch(crawl_id):
        found = await records.crawls.get(tenant_id, crawl_id)
    if found is None:
        raise NotFound(f"no crawl {crawl_id!r}")
    return found


def check_handler(spec: CrawlSpec, allowed: str) -> None:
    """A crawl may name only a handler the operator allows (``SKYCRAWL_HANDLERS``): 422."""
    names = allowed_handlers(allowed)
    if spec.handler is None or handler_allowed(spec.handler, names):
        return
    listed = ", ".join(sorted(names)) or "none"
    error: dict[str, object] = {
        "loc": ["handler"],
        "msg": f"handler {spec.handler!r} is not allowed here (allowed: {listed})",
        "type": "value_error",
    }
    raise InvalidRequest(f"handler {spec.handler!r} is not allowed", errors=[error])


def check_spec_urls(spec: CrawlSpec, policy: AddressPolicy) -> None:
    """``UnsafeUrl`` (listing every offending URL) for seeds or a webhook the policy refuses."""
    targets = [(["seeds", i], url) for i, url in enumerate(spec.seeds)]
    if spec.webhook_url is not None:
        targets.append((["webhook_url"], spec.webhook_url))
    errors: list[dict[str, object]] = []
    for loc, url in targets:
        try:
            check_url(url, policy)
        except UnsafeUrl as exc:
            errors.append({"loc": loc, "msg": exc.detail, "type": "unsafe_url"})
    if errors:
        raise UnsafeUrl("a URL targets an address the crawler may not fetch", errors=errors)


class CrawlRoutes:
    def __init__(
        self,
        *,
        records: Records,
        tenants: TenantService,
        bus: MessageBus,
        clock: Clock,
        settings: SkycrawlSettings,
        policy: AddressPolicy,
        blobs: BlobStore | None = None,
    ) -> None:
        self._records = records
        self._tenants = tenants
        self._bus = bus
        self._blobs = blobs
        self._clock = clock
        self._settings = settings
        self._policy = policy
        self._base_url = settings.public_base_url.rstrip("/")
        self._keys = IdempotencyKeys(records, clock)

    # ------------------------------------------------------------------ submit

    async def submit_crawl(self, ctx: Context) -> ApiResponse:
        parent = telemetry.valid_traceparent(ctx.request.header("traceparent"))
        with telemetry.span(
            "POST /v1/crawls", parent, kind="server", tenant_id=ctx.owner.id
        ) as traceparent:
            return await self._submit(ctx, traceparent)

    async def _submit(self, ctx: Context, traceparent: str | None) -> ApiResponse:
        tenant = ctx.owner
        spec = parse_json_body(ctx.request, CrawlSpec)
        check_spec_urls(spec, self._policy)
        check_handler(spec, self._settings.handlers)
        await self._check_recrawl_of(tenant, spec)
        key = idempotency_key(ctx.request)
        digest = spec_digest(spec)
        if key is not None:
            earlier = await self._keys.earlier(tenant.id, key, digest)
            if earlier is not None:
                return self._accepted(earlier, replayed=True)
        await self._tenants.check_submission(tenant)
        return await self._store_and_send(tenant, spec, key, digest, traceparent)

    async def _check_recrawl_of(self, tenant: Tenant, spec: CrawlSpec) -> None:
        """``recrawl_of`` names one of the tenant's own crawls (``latest`` is looked up by the
        engine, and means a full crawl when there is none)."""
        if spec.recrawl_of is None or spec.recrawl_of == "latest":
            return
        if await self._records.crawls.get(tenant.id, spec.recrawl_of) is None:
            error: dict[str, object] = {
                "loc": ["recrawl_of"],
                "msg": f"no crawl {spec.recrawl_of!r}",
                "type": "missing",
            }
            raise InvalidRequest("recrawl_of names no crawl of this tenant", errors=[error])

    async def _store_and_send(
        self, tenant: Tenant, spec: CrawlSpec, key: str | None, digest: str, traceparent: str | None
    ) -> ApiResponse:
        now = self._clock.now()
        crawl_id = f"cr_{uuid.uuid4().hex}"
        undo: list[Undo] = []
        if self._blobs is not None:  # Authorization / Cookie into the tenant's store
            blobs = self._blobs
            spec = await sealed_headers.seal(
                blobs, tenant_id=tenant.id, crawl_id=crawl_id, spec=spec
            )
            if spec.sealed_headers:
                undo.append(
                    lambda: sealed_headers.discard(blobs, tenant_id=tenant.id, crawl_id=crawl_id)
                )
        telemetry.set_attributes(crawl_id=crawl_id)
        crawl = Crawl(
            id=crawl_id,
            tenant_id=tenant.id,
            spec=spec,
            created_at=now,
            updated_at=now,
            traceparent=traceparent,
        )
        try:
            await self._store(crawl, undo)
            if key is not None:
                if not await self._keys.claim(crawl, key, digest):
                    await _run_undo(undo)  # a concurrent request with this key won
                    return self._accepted(await self._earlier_or_busy(tenant.id, key, digest))
                undo.append(lambda: self._keys.release(tenant.id, key))
            submitted = CrawlSubmitted(
                tenant_id=tenant.id, crawl_id=crawl.id, traceparent=traceparent
            )
            await self._send(submitted)
        except BaseException:
            await _run_undo(undo)
            raise
        log.info("tenant %s submitted crawl %s", tenant.id, crawl.id)
        return self._accepted(crawl)

    async def _earlier_or_busy(self, tenant_id: str, key: str, digest: str) -> Crawl:
        earlier = await self._keys.earlier(tenant_id, key, digest)
        if earlier is None:
            raise busy()
        return earlier

    async def _send(self, message: Frozen) -> None:
        """Put ``message`` on the conductor's inbox; a broken inbox is a server error."""
        try:
            await self._bus.send(queue=self._settings.inbox_queue, message=encode(message))
        except Retryable:
            raise
        except SkycrawlError as exc:  # e.g. NotFound for a missing queue: not the client's 404
            raise RuntimeError(f"cannot send to the inbox: {exc}") from exc

    async def _store(self, crawl: Crawl, undo: list[Undo]) -> None:
        tid, cid = crawl.tenant_id, crawl.id
        await self._records.crawls.create(tid, cid, crawl)
        undo.append(lambda: self._records.crawls.discard(tid, cid))
        entry = ActiveCrawl(crawl_id=cid, created_at=crawl.created_at)
        await self._records.active.create(tid, cid, entry)
        undo.append(lambda: self._records.active.discard(tid, cid))
        listed = listing_key(crawl.created_at, cid)
        await self._records.listing.create(tid, listed, entry)
        undo.append(lambda: self._records.listing.discard(tid, listed))
        await self._records.index_pending(crawl)
        undo.append(lambda: self._records.unindex_pending(crawl))

    def _accepted(self, crawl: Crawl, *, replayed: bool = False) -> ApiResponse:
        url = f"{self._base_url}/v1/crawls/{crawl.id}"
        headers = {"location": url}
        if replayed:
            headers["idempotent-replayed"] = "true"
        body = CrawlAccepted(id=crawl.id, status=crawl.state, status_url=url)
        return ApiResponse.json(202, body, headers=headers)

    # ------------------------------------------------------------------ read

    async def get_crawl(self, ctx: Context) -> ApiResponse:
        found = await load_crawl(self._records, ctx.tenant_id, ctx.params["crawl_id"])
        status = self._status(found.value)
        hooks = await webhook_deliveries_table(self._records).get(ctx.tenant_id, found.value.id)
        if hooks is not None:
            webhook = WebhookStatus(state=hooks.value.state, attempts=list(hooks.value.attempts))
            status = status.model_copy(update={"webhook": webhook})
        changes = None if self._blobs is None else await run_changes(self._blobs, found.value)
        if changes is not None:
            status = status.model_copy(update={"changes": changes})
        return ApiResponse.json(200, status)

    async def list_crawls(self, ctx: Context) -> ApiResponse:
        """Newest first; the cursor is the (created_at, id) of the last item returned."""
        limit = query_int(ctx.request, "limit", default=100, low=1, high=1000)
        # the ``listing`` index is in newest-first key order: read one page, not the partition
        start = _decode_list_cursor(ctx.request.query.get("cursor"))
        entries = await self._records.listing.query(ctx.tenant_id, limit=limit + 1, after=start)
        crawls = []
        for entry in entries[:limit]:
            found = await self._records.crawls.get(ctx.tenant_id, entry.value.crawl_id)
            if found is not None:
                crawls.append(found.value)
        page = crawls
        cursor = _encode_list_cursor(page[-1]) if len(entries) > limit and page else None
        body = CrawlList(items=[self._status(c) for c in page], next_cursor=cursor)
        return ApiResponse.json(200, body)

    def _status(self, crawl: Crawl) -> CrawlStatus:
        return CrawlStatus.of(crawl, now=self._clock.now(), base_url=self._base_url)

    # ------------------------------------------------------------------ cancel

    async def cancel_crawl(self, ctx: Context) -> ApiResponse:
        tenant_id, crawl_id = ctx.tenant_id, ctx.params["crawl_id"]
        before, written = await self._mark_cancelled(tenant_id, crawl_id)
        try:
            await self._records.active.discard(tenant_id, crawl_id)
            await self._send(
                CancelRequested(
                    tenant_id=tenant_id, crawl_id=crawl_id, container_id=before.container_id
                )
            )
        except BaseException:
            await self._revert_cancel(before, written)
            raise
        log.info("tenant %s cancelled crawl %s", tenant_id, crawl_id)
        return ApiResponse.json(202, self._status(written.value))

    async def _mark_cancelled(
        self, tenant_id: str, crawl_id: str
    ) -> tuple[Crawl, Versioned[Crawl]]:
        for _ in range(20):
            found = await load_crawl(self._records, tenant_id, crawl_id)
            before = found.value
            if before.state.terminal:
                raise HttpProblem(
                    409,
                    f"the crawl is already {before.state.value}",
                    slug="crawl-finished",
                    title="Crawl already finished",
                )
            now = self._clock.now()
            update = {"state": CrawlState.cancelled, "finished_at": now, "updated_at": now}
            after = before.model_copy(update={**update, "reason": "cancelled by the tenant"})
            # its usage is counted with the change; the conductor relays it on CancelRequested
            after = after.model_copy(update={"outbox": (*after.outbox, crawl_done(after, now))})
            try:
                return before, await self._records.crawls.replace(found, after)
            except Conflict:
                continue
        raise Conflict(f"crawl {crawl_id}: too much contention")

    async def _revert_cancel(self, before: Crawl, written: Versioned[Crawl]) -> None:
        try:
            await self._records.crawls.replace(written, before)
            active = ActiveCrawl(crawl_id=before.id, created_at=before.created_at)
            await self._records.active.create(before.tenant_id, before.id, active)
        except Exception:
            log.exception("crawl %s: could not revert a failed cancel", before.id)

    # ------------------------------------------------------------------ resume

    async def resume_crawl(self, ctx: Context) -> ApiResponse:
        """A paused crawl continues from its checkpoint: 402 while the budget is spent."""
        tenant, crawl_id = ctx.owner, ctx.params["crawl_id"]
        found = await load_crawl(self._records, tenant.id, crawl_id)
        if found.value.state is not CrawlState.paused:
            raise HttpProblem(
                409,
                f"the crawl is {found.value.state.value}, not paused",
                slug="crawl-not-paused",
                title="Crawl not paused",
            )
        now = self._clock.now()
        await self._tenants.check_budget(tenant, now)
        resumed = await resume(self._records, tenant.id, crawl_id, now, self._settings.inbox_queue)
        if resumed is None:  # resumed (or cancelled) by another request meanwhile
            current = (await load_crawl(self._records, tenant.id, crawl_id)).value
            if current.state is not CrawlState.pending:
                raise HttpProblem(409, f"the crawl is {current.state.value}, not paused")
            resumed = current
        else:
            await announce(self._bus, self._settings.inbox_queue, [resumed])
        log.info("tenant %s resumed crawl %s", tenant.id, crawl_id)
        return ApiResponse.json(202, self._status(resumed))

    # ------------------------------------------------------------------ routes

    def _submit_route(self) -> Route:
        return Route(
            "POST",
            "/v1/crawls",
            self.submit_crawl,
            "Submit a crawl",
            body=CrawlSpec,
            replies=(
                Reply(202, "Accepted.", CrawlAccepted, headers=("Location",)),
                Reply(409, "The same Idempotency-Key is in flight.", headers=("Retry-After",)),
                Reply(422, "Invalid body, unsafe URL or reused Idempotency-Key."),
                *JSON_BODY_ERRORS,
                Reply(402, "The monthly budget is spent (problem budget-reached)."),
                Reply(429, "A quota was reached.", headers=("Retry-After",)),
            ),
            params=(
                Param(
                    "Idempotency-Key",
                    "header",
                    "Repeat a request safely for 24 h: same key and body, same answer.",
                    {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
                ),
                Param(
                    "traceparent",
                    "header",
                    "W3C trace context: the crawl's trace continues the caller's (an invalid "
                    "value starts a new trace). Used when OpenTelemetry is on.",
                ),
            ),
        )

    def routes(self) -> list[Route]:
        not_found = Reply(404, "No such crawl (or not yours).")
        return [
            self._submit_route(),
            Route(
                "GET",
                "/v1/crawls",
                self.list_crawls,
                "List crawls, newest first",
                replies=(Reply(200, "A page of crawls.", CrawlList), Reply(400, "Bad cursor.")),
                params=LIST_PAGING,
            ),
            Route(
                "GET",
                "/v1/crawls/{crawl_id}",
                self.get_crawl,
                "Status of a crawl",
                replies=(Reply(200, "The crawl.", CrawlStatus), not_found),
            ),
            Route(
                "DELETE",
                "/v1/crawls/{crawl_id}",
                self.cancel_crawl,
                "Cancel a crawl",
                replies=(
                    Reply(202, "Cancelled; the container is told to stop.", CrawlStatus),
                    not_found,
                    Reply(409, "The crawl has already finished."),
                ),
            ),
            Route(
                "POST",
                "/v1/crawls/{crawl_id}/resume",
                self.resume_crawl,
                "Resume a paused crawl from its checkpoint",
                replies=(
                    Reply(202, "Pending again; it continues where it stopped.", CrawlStatus),
                    Reply(402, "The monthly budget is still spent (problem budget-reached)."),
                    not_found,
                    Reply(409, "The crawl is not paused."),
                ),
            ),
        ]


async def _run_undo(undo: list[Undo]) -> None:
    while undo:
        step = undo.pop()
        try:
            await step()
        except Exception:
            log.exception("undoing a failed submission failed")


_LIST_CURSOR = re.compile(r"c1\.([0-9]{17})\.(cr_[0-9a-f]{32})")


def _encode_list_cursor(crawl: Crawl) -> str:
    """``c1.<listing key>``: the position of ``crawl`` in the newest-first index."""
    return "c1." + listing_key(crawl.created_at, crawl.id).replace("|", ".")


def _decode_list_cursor(cursor: str | None) -> str | None:
    """The listing key to start after; 400 for a cursor of neither form."""
    if not cursor:
        return None
    match = _LIST_CURSOR.fullmatch(cursor)
    if match is not None:
        return f"{match.group(1)}|{match.group(2)}"
    after = _decode_legacy_list_cursor(cursor)
    return listing_key(after[0], after[1])


def _decode_legacy_list_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, crawl_id = raw.split("|")
        at = datetime.fromisoformat(created)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise HttpProblem(400, "invalid cursor") from None
    if at.tzinfo is None:
        raise HttpProblem(400, "invalid cursor")
    return at, crawl_id
