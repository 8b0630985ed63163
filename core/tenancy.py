"""Tenants: accounts, API keys, quotas and teardown.

API keys look like ``sk_<prefix>_<secret>``: ``prefix`` is 8 hex characters (32 random bits)
and the lookup key of table ``api_keys``; ``secret`` is 43 URL-safe characters (256 random
bits). Only the SHA-256 of the whole key is stored and it is compared in constant time; the
plaintext is returned once, by ``TenantService.create``.

A tenant may hold several keys at once (table ``key_index`` lists them): ``create_key`` adds
one, ``revoke_key`` removes one (never the last), ``rotate_key`` does both, so a deployment
can switch keys without a moment where none works.

Creating a tenant provisions its resources first (``Provisioner.provision``), records its web
app's address (``resources["web_app"]``: ``/t/{tenant id}/`` on the shared HTTP function, see
``core.webapp``), then stores the key and the tenant; if a step fails, what was done is undone. Deleting a tenant marks it
``deleting`` (its key stops working at once), cancels its active crawls, stops its live
containers and removes their dispatch subscriptions, deletes its blobs, tears down its
resources and finally deletes its records (in dedicated mode, ``core.tenant_data``, the
teardown drops the tenant's own store with its crawl and usage records in it). A teardown
that fails half-way can be repeated.

Quotas (``core.models.Quotas``): ``max_pending`` non-terminal crawls (table ``active``) and
``submissions_per_minute`` (table ``rate``, one counter per minute bucket, expires after
2 minutes). Both answer ``QuotaExceeded`` with a ``retry_after`` in seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from core.budgets import Budgets, budgets_table, months_table
from core.clock import Clock
from core.delivery_models import delivery_tables
from core.errors import (
    BudgetReached,
    Conflict,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    Unauthorized,
)
from core.layout import subscription_name, tenant_prefix, tenant_topic
from core.metering import Meter
from core.models import Crawl, CrawlState, Egress, Frozen, Tenant, TenantCreate, TenantState
from core.ports.blob_store import BlobStore
from core.ports.container_runtime import ContainerRuntime
from core.ports.message_bus import MessageBus
from core.ports.provisioner import Provisioner
from core.records import ApiKey, ApiKeyInfo, RateCounter, Records, Table
from core.settings import SkycrawlSettings
from core.tenant_data import dedicated_tables, forget_tenant

log = logging.getLogger("skycrawl.tenancy")

TENANTS_PARTITION = "tenants"
KEYS_PARTITION = "keys"
#: Suggested wait when a tenant has ``max_pending`` crawls in flight.
PENDING_RETRY_AFTER_S = 30
RATE_COUNTER_TTL = timedelta(minutes=2)

_KEY_RE = re.compile(r"sk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
_BEARER_RE = re.compile(r"Bearer[ ]+(\S+)[ ]*", re.IGNORECASE)
# Hashed when the prefix is unknown, so that a miss costs the same as a hit.
_DUMMY_SHA256 = hashlib.sha256(b"skycrawl-unknown-key").hexdigest()


def key_sha256(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_api_key() -> tuple[str, str, str]:
    """A new tenant key: ``(plaintext, prefix, sha256 hex)``; 288 random bits in all."""
    prefix = secrets.token_hex(4)
    plaintext = f"sk_{prefix}_{secrets.token_urlsafe(32)}"
    return plaintext, prefix, key_sha256(plaintext)


def bearer_token(authorization_header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; ``Unauthorized`` otherwise."""
    if not authorization_header:
        raise Unauthorized("missing Authorization header (expected: Bearer <API key>)")
    match = _BEARER_RE.fullmatch(authorization_header)
    if match is None:
        raise Unauthorized("malformed Authorization header (expected: Bearer <API key>)")
    return match.group(1)


def web_app_url(public_base_url: str, tenant_id: str) -> str:
    """Where a tenant's web app lives on the shared HTTP function (relative without a base)."""
    return f"{public_base_url.rstrip('/')}/t/{tenant_id}/"


def minute_bucket(now: datetime) -> tuple[str, datetime]:
    """The rate-counter key of ``now`` and the start of the next minute."""
    start = now.replace(second=0, microsecond=0)
    return start.strftime("%Y%m%dT%H%M"), start + timedelta(minutes=1)


class TenantService:
    """Create, find, authenticate, limit and tear down tenants."""

    def __init__(
        self,
        records: Records,
        provisioner: Provisioner,
        bus: MessageBus,
        blobs: BlobStore,
        runtime_for: Callable[[Egress], ContainerRuntime],
        clock: Clock,
        settings: SkycrawlSettings,
    ) -> None:
        self._records = records
        self._provisioner = provisioner
        self._bus = bus
        self._blobs = blobs
        self._runtime_for = runtime_for
        self._clock = clock
        self._settings = settings

    # ------------------------------------------------------------------ accounts

    async def create(self, request: TenantCreate) -> tuple[Tenant, str]:
        """Provision and store a tenant; returns it with its plaintext API key (shown once)."""
        tenant_id = f"tn_{uuid.uuid4().hex}"
        resources = dict(await self._provisioner.provision(tenant_id=tenant_id))
        resources["web_app"] = web_app_url(self._settings.public_base_url, tenant_id)
        key: ApiKey | None = None
        try:
            plaintext, key = await self._store_new_key(tenant_id)
            tenant = Tenant(
                id=tenant_id,
                name=request.name,
                key_prefix=key.prefix,
                key_sha256=key.key_sha256,
                quotas=request.quotas,
                resources=resources,
                created_at=self._clock.now(),
            )
            await self._records.tenants.create(TENANTS_PARTITION, tenant_id, tenant)
        except BaseException:
            await self._undo_create(tenant_id, resources, key)
            raise
        log.info("tenant %s (%s) created", tenant_id, request.name)
        return tenant, plaintext

    async def _store_new_key(self, tenant_id: str) -> tuple[str, ApiKey]:
        for _ in range(5):
            plaintext, prefix, digest = generate_api_key()
            key = ApiKey(prefix=prefix, tenant_id=tenant_id, key_sha256=digest)
            try:
                await self._records.api_keys.create(KEYS_PARTITION, prefix, key)
            except Conflict:
                continue  # prefix collision: draw again
            info = ApiKeyInfo(prefix=prefix, created_at=self._clock.now())
            try:
                await self._records.key_index.create(tenant_id, prefix, info)
            except BaseException:
                await self._records.api_keys.discard(KEYS_PARTITION, prefix)
                raise
            return plaintext, key
        raise Conflict("could not allocate a unique API key prefix")

    # ------------------------------------------------------------------ keys

    async def list_keys(self, tenant: Tenant) -> list[ApiKeyInfo]:
        """The tenant's live keys, oldest first (its first key too, if it predates the index)."""
        keys = [v.value for v in await self._records.key_index.query(tenant.id)]
        known = {k.prefix for k in keys}
        first = tenant.key_prefix
        if first not in known and await self._records.api_keys.get(KEYS_PARTITION, first):
            keys.append(ApiKeyInfo(prefix=tenant.key_prefix, created_at=tenant.created_at))
        return sorted(keys, key=lambda k: (k.created_at, k.prefix))

    async def create_key(self, tenant: Tenant) -> tuple[ApiKeyInfo, str]:
        """A new key beside the existing ones; returns it with its plaintext (shown once)."""
        plaintext, key = await self._store_new_key(tenant.id)
        found = await self._records.key_index.get(tenant.id, key.prefix)
        created = self._clock.now() if found is None else found.value.created_at
        log.info("tenant %s: API key %s created", tenant.id, key.prefix)
        return ApiKeyInfo(prefix=key.prefix, created_at=created), plaintext

    async def revoke_key(self, tenant: Tenant, prefix: str) -> None:
        """Stop a key working at once; ``NotFound`` if not the tenant's, ``InvalidRequest``
        for the tenant's last key (a tenant is never locked out of its own account)."""
        keys = await self.list_keys(tenant)
        if prefix not in {k.prefix for k in keys}:
            raise NotFound(f"no API key {prefix!r}")
        if len(keys) == 1:
            raise InvalidRequest("the last API key cannot be revoked: create another one first")
        await self._records.api_keys.discard(KEYS_PARTITION, prefix)
        await self._records.key_index.discard(tenant.id, prefix)
        log.info("tenant %s: API key %s revoked", tenant.id, prefix)

    async def rotate_key(self, tenant: Tenant, prefix: str) -> tuple[ApiKeyInfo, str]:
        """A new key replacing ``prefix``: the new one works before the old one stops."""
        if prefix not in {k.prefix for k in await self.list_keys(tenant)}:
            raise NotFound(f"no API key {prefix!r}")
        info, plaintext = await self.create_key(tenant)
        await self.revoke_key(tenant, prefix)
        return info, plaintext

    async def _undo_create(
        self, tenant_id: str, resources: Mapping[str, str], key: ApiKey | None
    ) -> None:
        """Best effort, step by step: one failing step does not skip the others."""
        records, provisioner = self._records, self._provisioner
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("tenant", lambda: records.tenants.discard(TENANTS_PARTITION, tenant_id)),
            ("resources", lambda: provisioner.teardown(tenant_id=tenant_id, resources=resources)),
        ]
        if key is not None:
            prefix = key.prefix
            steps.insert(0, ("api key", lambda: records.api_keys.discard(KEYS_PARTITION, prefix)))
        for what, step in steps:
            try:
                await step()
            except Exception:
                log.exception("tenant %s: undoing a failed create: %s not removed", tenant_id, what)

    async def list(self) -> list[Tenant]:
        return [v.value for v in await self._records.tenants.query(TENANTS_PARTITION)]

    async def get(self, tenant_id: str) -> Tenant:
        found = await self._records.tenants.get(TENANTS_PARTITION, tenant_id)
        if found is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        return found.value

    # ------------------------------------------------------------------ authentication

    async def authenticate(self, authorization_header: str | None) -> Tenant:
        """The active tenant owning the bearer key; ``Unauthorized`` for anything else."""
        token = bearer_token(authorization_header)
        match = _KEY_RE.fullmatch(token)
        if match is None:
            raise Unauthorized("malformed API key")
        found = await self._records.api_keys.get(KEYS_PARTITION, match.group(1))
        expected = _DUMMY_SHA256 if found is None else found.value.key_sha256
        if not hmac.compare_digest(key_sha256(token), expected) or found is None:
            raise Unauthorized("invalid API key")
        tenant = await self._records.tenants.get(TENANTS_PARTITION, found.value.tenant_id)
        if tenant is None or tenant.value.state is not TenantState.active:
            raise Unauthorized("invalid API key")
        return tenant.value

    def authenticate_operator(self, authorization_header: str | None) -> None:
        """Accept the operator key only; with no operator key configured, refuse everything."""
        token = bearer_token(authorization_header)
        configured = self._settings.operator_key
        if not configured:
            raise Unauthorized("operator access is not configured")
        if not hmac.compare_digest(key_sha256(token), key_sha256(configured)):
            raise Unauthorized("invalid operator key")

    # ------------------------------------------------------------------ quotas

    async def check_submission(self, tenant: Tenant) -> None:
        """Count one submission; ``QuotaExceeded`` if a limit is reached."""
        quotas = tenant.quotas
        active = await self._records.active.query(tenant.id, limit=quotas.max_pending)
        if len(active) >= quotas.max_pending:
            raise QuotaExceeded(
                f"{quotas.max_pending} crawls are already pending or running",
                retry_after=PENDING_RETRY_AFTER_S,
            )
        now = self._clock.now()
        await self.check_budget(tenant, now)
        bucket, next_minute = minute_bucket(now)
        count = await self._increment(tenant.id, bucket, now)
        if count > quotas.submissions_per_minute:
            wait = max(1, int((next_minute - now).total_seconds() + 0.999))
            raise QuotaExceeded(
                f"more than {quotas.submissions_per_minute} submissions this minute",
                retry_after=wait,
            )

    async def check_budget(self, tenant: Tenant, now: datetime) -> None:
        """``BudgetReached`` once housekeeping found this month's budget spent."""
        month = await Budgets(self._records).reached(tenant.id, now)
        if month is None:
            return
        raise BudgetReached(
            f"the monthly budget of {month.amount:g} is reached ({month.spent:.2f} spent in "
            f"{month.month}); new crawls start again, and paused ones resume, when it is raised "
            "(PUT /v1/budget)"
        )

    async def _increment(self, tenant_id: str, bucket: str, now: datetime) -> int:
        table = self._records.rate
        expires_at = now + RATE_COUNTER_TTL
        for _ in range(50):
            current = await table.get(tenant_id, bucket)
            try:
                if current is None:
                    await table.create(
                        tenant_id, bucket, RateCounter(count=1), expires_at=expires_at
                    )
                    return 1
                count = current.value.count + 1
                await table.replace(current, RateCounter(count=count), expires_at=expires_at)
                return count
            except Conflict:
                continue
        raise Conflict(f"rate/{tenant_id}/{bucket}: too much contention")

    # ------------------------------------------------------------------ teardown

    async def delete(self, tenant_id: str) -> None:
        """Tear a tenant down completely; safe to repeat after a failure half-way."""
        marked, _ = await self._records.tenants.mutate(
            TENANTS_PARTITION,
            tenant_id,
            lambda t: t.model_copy(update={"state": TenantState.deleting}),
        )
        if marked is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        log.info("tenant %s: teardown started", tenant_id)
        await self._cancel_active(tenant_id)
        await self._stop_containers(tenant_id)
        removed = await self._blobs.delete_prefix(prefix=tenant_prefix(tenant_id))
        await self._provisioner.teardown(tenant_id=tenant_id, resources=marked.resources)
        await forget_tenant(self._records.state, tenant_id)
        await self._delete_records(marked)
        log.info("tenant %s: teardown done (%d blobs removed)", tenant_id, removed)

    async def _cancel_active(self, tenant_id: str) -> None:
        now = self._clock.now()

        def cancel(crawl: Crawl) -> Crawl | None:
            if crawl.state.terminal:
                return None
            update = {"state": CrawlState.cancelled, "finished_at": now, "updated_at": now}
            return crawl.model_copy(update={**update, "reason": "tenant deleted"})

        for entry in await self._records.active.query(tenant_id):
            await self._records.crawls.mutate(tenant_id, entry.value.crawl_id, cancel)
            await self._records.active.discard(tenant_id, entry.value.crawl_id)

    async def _stop_containers(self, tenant_id: str) -> None:
        topic = tenant_topic(self._settings.dispatch_topic, tenant_id)
        for found in await self._records.containers.query(tenant_id):
            container = found.value
            if container.state.live:
                await self._runtime_for(container.egress).stop_container(
                    container_id=container.id,
                    egress=container.egress,
                    grace_s=self._settings.stop_grace_s,
                )
            await self._bus.delete_subscription(topic=topic, name=subscription_name(container.id))

    async def _delete_records(self, tenant: Tenant) -> None:
        records = self._records
        tables: tuple[Table[Any], ...] = (
            records.crawls,
            records.active,
            records.backlog,
            records.listing,
            records.finished,
            records.containers,
            records.fleets,
            records.sessions,
            records.idempotency,
            records.rate,
            records.web_sessions,
            records.web_users,
            *delivery_tables(records),
            Table(records.state, "session_routes", Frozen),  # core.conductor.egress_health
            Meter(records.state).buckets,  # its usage: read GET /v1/usage before a teardown
            budgets_table(records),
            months_table(records),
        )
        in_own_store = dedicated_tables(records.state)  # dropped with it by the teardown
        for table in tables:
            if table.name not in in_own_store:
                await _empty_partition(table, tenant.id)
        for entry in await records.key_index.query(tenant.id):
            await records.api_keys.discard(KEYS_PARTITION, entry.value.prefix)
        await _empty_partition(records.key_index, tenant.id)
        await records.api_keys.discard(KEYS_PARTITION, tenant.key_prefix)
        await records.tenants.discard(TENANTS_PARTITION, tenant.id)


async def _empty_partition(table: Table[Any], partition: str) -> None:
    while batch := await table.query(partition, limit=500):
        for found in batch:
            await table.discard(partition, found.item.key)
