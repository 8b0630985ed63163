"""Webhooks: tell a tenant's URL that its crawl ended — signed, retried, and on the record.

Sending
    The URL is the tenant's, so it gets the crawler's SSRF rules: http(s) only, the host
    resolved once, every address checked against the operator's policy, and the request sent
    to the checked address (``Host`` — with the port when it is not the scheme's — and TLS
    SNI keep the name): no DNS-rebinding window. Headers: ``User-Agent:
    skycrawl-webhooks/0.1``, ``Skycrawl-Event: crawl.completed`` (…), ``Skycrawl-Delivery``
    (the same id on every attempt, for de-duplication) and ``Skycrawl-Signature``
    (``core.webhook_signing``) once the tenant has made a secret (``POST
    /v1/webhooks/secret``); unsigned before that.

Retries
    A network error, a timeout, a 5xx, a 408 or a 429 is retried: the next ``WebhookDue``
    (``attempt`` + 1) is scheduled through the Scheduler port with a relative delay of
    ``BACKOFF_S`` (10 s, 30 s, 90 s, 270 s, 810 s), stored on the deliveries record in the
    same write as the attempt (an outbox entry), so a crash cannot lose it; after
    ``MAX_ATTEMPTS`` the delivery is ``failed``. Any other 4xx, or a URL the guard refuses, is
    final. A 2xx is ``delivered``. Each attempt is kept (``GET /v1/crawls/{id}`` →
    ``webhook``); a ``WebhookDue`` whose attempt is already recorded changes nothing (it
    relays what that attempt left in the outbox, if anything). Delivery is at-least-once.

Secrets
    One per tenant (``WebhookSecrets``), shown once when made. Rotating keeps the old one
    signing for ``grace_s`` (default 24 h): a ``WebhookSecretRetire`` message is chained
    through the Scheduler with relative delays and removes it when the grace is over —
    no instance compares a stored time with its own clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets as random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from core.clock import Clock
from core.conductor.outbox import Outbox, schedule
from core.delivery_models import (
    WebhookAttempt,
    WebhookDeliveries,
    WebhookSecret,
    WebhookSecrets,
    webhook_deliveries_table,
    webhook_secrets_table,
)
from core.errors import Conflict, UnsafeUrl
from core.messages import WebhookDue, WebhookSecretRetire
from core.models import Crawl, OutboxEntry
from core.netguard import AddressPolicy, check_url
from core.records import Records
from core.redaction import redact_text
from core.webhook_signing import SIGNATURE_HEADER, signature_header

log = logging.getLogger("skycrawl.webhooks")

USER_AGENT = "skycrawl-webhooks/0.1"
BACKOFF_S = (10.0, 30.0, 90.0, 270.0, 810.0)
MAX_ATTEMPTS = len(BACKOFF_S) + 1
SECRETS_KEY = "secrets"
_RETRIED_STATUSES = frozenset({408, 429})


class Notifier(Protocol):
    """What the conductor calls for a ``WebhookDue``."""

    async def __call__(self, crawl: Crawl, *, attempt: int) -> None: ...


def webhook_payload(crawl: Crawl) -> dict[str, object]:
    return {
        "event": f"crawl.{crawl.state.value}",
        "crawl": {
            "id": crawl.id,
            "status": crawl.state.value,
            "counts": crawl.counts.model_dump(),
            "reason": crawl.reason,
            "created_at": crawl.created_at.isoformat(),
            "finished_at": crawl.finished_at.isoformat() if crawl.finished_at else None,
        },
    }


def new_secret(now: datetime) -> WebhookSecret:
    return WebhookSecret(
        id=f"whk_{random.token_hex(4)}", secret=f"whsec_{random.token_urlsafe(32)}", created_at=now
    )


secrets_table = webhook_secrets_table
deliveries_table = webhook_deliveries_table


@dataclass(frozen=True, slots=True)
class _Result:
    status: int | None
    error: str | None
    elapsed_ms: float

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        if self.status is None:
            return self.error is not None and not self.error.startswith("refused:")
        return self.status >= 500 or self.status in _RETRIED_STATUSES


class WebhookNotifier:
    """Sends a crawl's webhook, records the attempt and schedules the next one."""

    def __init__(
        self,
        *,
        policy: AddressPolicy,
        records: Records,
        outbox: Outbox,
        clock: Clock,
        inbox_queue: str,
        timeout_s: float = 10.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._records = records
        self._outbox = outbox
        self._clock = clock
        self._inbox = inbox_queue
        self._timeout = timeout_s
        self._wall = wall_clock
        self._deliveries = deliveries_table(records)
        self._secrets = secrets_table(records)

    async def __call__(self, crawl: Crawl, *, attempt: int = 1) -> None:
        url = crawl.spec.webhook_url
        if not url:
            return
        found = await self._deliveries.get(crawl.tenant_id, crawl.id)
        if found is not None and _already(found.value, attempt):
            await self._outbox.relay(self._deliveries, crawl.tenant_id, crawl.id, found.value)
            return
        body = json.dumps(webhook_payload(crawl), sort_keys=True).encode()
        keys = await self._secrets.get(crawl.tenant_id, SECRETS_KEY)
        signing = [] if keys is None else [keys.value.current, *keys.value.retiring]
        sent_at = self._clock.now()
        event, delivery = f"crawl.{crawl.state.value}", f"whd_{crawl.id}"
        result = await self._post(url, event, delivery, body, [s.secret for s in signing])
        await self._record(crawl, attempt, sent_at, result, signed=bool(signing))

    async def send_event(
        self, *, tenant_id: str, url: str, event: str, delivery: str, payload: dict[str, object]
    ) -> bool:
        """Post one tenant event (a budget warning) to ``url``, signed with the tenant's
        secrets like a crawl's webhook, once; True if it was delivered (2xx)."""
        keys = await self._secrets.get(tenant_id, SECRETS_KEY)
        signing = [] if keys is None else [keys.value.current, *keys.value.retiring]
        body = json.dumps(payload, sort_keys=True).encode()
        result = await self._post(url, event, delivery, body, [s.secret for s in signing])
        if not result.delivered:
            log.warning("%s of tenant %s not delivered: %s", event, tenant_id, result.error)
        return result.delivered

    async def _post(
        self, url: str, event: str, delivery: str, body: bytes, keys: list[str]
    ) -> _Result:
        started = time.monotonic()
        try:
            target, host = await self._pinned(url)
        except (UnsafeUrl, OSError) as exc:
            log.warning("webhook %s not sent: %s", delivery, redact_text(str(exc)))
            return _Result(None, f"refused: {redact_text(str(exc))}", 0.0)
        headers = {
            "host": host,
            "user-agent": USER_AGENT,
            "content-type": "application/json",
            "skycrawl-event": event,
            "skycrawl-delivery": delivery,
        }
        if keys:
            headers[SIGNATURE_HEADER.lower()] = signature_header(keys, int(self._wall()), body)
        import httpx  # on first delivery: its import (~70 ms with its CLI) is off cold starts

        async with httpx.AsyncClient(timeout=self._timeout, trust_env=False) as client:
            try:
                response = await client.post(
                    target,
                    content=body,
                    headers=headers,
                    extensions={"sni_hostname": host.rsplit(":", 1)[0].strip("[]")},
                )
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                return _Result(None, redact_text(error), _ms(started))
        if response.status_code >= 400:
            log.warning("webhook %s: HTTP %s", delivery, response.status_code)
        return _Result(response.status_code, None, _ms(started))

    async def _pinned(self, url: str) -> tuple[str, str]:
        """Resolve and check the host; the URL rewritten to the checked address, and the
        ``Host`` header (``name:port`` when the port is not the scheme's default)."""
        check_url(url, self._policy)
        parts = urlsplit(url)
        host = parts.hostname or ""
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise UnsafeUrl(f"{host} does not resolve")
        for address in addresses:
            self._policy.check_address(address)
        ip = addresses[0]
        netloc = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        shown = f"[{host}]" if ":" in host else host
        header = shown if port == default else f"{shown}:{port}"
        path = parts.path or "/"
        return urlunsplit((parts.scheme, netloc, path, parts.query, "")), header

    async def _record(
        self, crawl: Crawl, attempt: int, sent_at: datetime, result: _Result, *, signed: bool
    ) -> None:
        retry = result.retryable and attempt < MAX_ATTEMPTS
        delay = BACKOFF_S[attempt - 1] if retry else None
        entry = WebhookAttempt(
            attempt=attempt,
            sent_at=sent_at,
            status=result.status,
            error=result.error,
            elapsed_ms=result.elapsed_ms,
            signed=signed,
            retry_in_s=delay,
        )
        state = "delivered" if result.delivered else ("pending" if retry else "failed")
        entries: tuple[OutboxEntry, ...] = ()
        if delay is not None:
            due = WebhookDue(tenant_id=crawl.tenant_id, crawl_id=crawl.id, attempt=attempt + 1)
            entries = (schedule(self._inbox, due, delay),)
        await self._store(crawl, entry, state, entries)

    async def _store(
        self,
        crawl: Crawl,
        entry: WebhookAttempt,
        state: str,
        entries: tuple[OutboxEntry, ...],
    ) -> None:
        table, tid, cid = self._deliveries, crawl.tenant_id, crawl.id
        for _ in range(20):
            found = await table.get(tid, cid)
            if found is not None and _already(found.value, entry.attempt):
                return  # a duplicate delivery of this attempt recorded it first
            base = (
                found.value if found is not None else WebhookDeliveries(tenant_id=tid, crawl_id=cid)
            )
            new = base.model_copy(
                update={
                    "state": state,
                    "attempts": (*base.attempts, entry),
                    "outbox": (*base.outbox, *entries),
                }
            )
            try:
                if found is None:
                    await table.create(tid, cid, new)
                else:
                    await table.replace(found, new)
            except Conflict:
                continue
            if entries:
                await self._outbox.relay(table, tid, cid, new, only={e.id for e in entries})
            return
        raise Conflict(f"webhook_deliveries/{tid}/{cid}: too much contention")


def _already(record: WebhookDeliveries, attempt: int) -> bool:
    return record.state != "pending" or any(a.attempt >= attempt for a in record.attempts)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


# --------------------------------------------------------------------------- secrets


async def revoke_secrets(records: Records, tenant_id: str) -> bool:
    """Drop every signing secret of the tenant (current and retiring): deliveries go out
    unsigned (``signed: false`` in their attempts) until a new one is made. False if there
    was none."""
    table = secrets_table(records)
    if await table.get(tenant_id, SECRETS_KEY) is None:
        return False
    await table.discard(tenant_id, SECRETS_KEY)
    return True


async def rotate_secret(
    records: Records, tenant_id: str, now: datetime, *, keep_old: bool
) -> tuple[WebhookSecrets, WebhookSecret | None]:
    """Make a new current secret; the old one is kept (``keep_old``) or dropped at once.
    Returns the stored record and the secret that now retires, if any."""
    table = secrets_table(records)
    fresh = new_secret(now)
    for _ in range(20):
        found = await table.get(tenant_id, SECRETS_KEY)
        if found is None:
            record = WebhookSecrets(tenant_id=tenant_id, current=fresh)
            try:
                await table.create(tenant_id, SECRETS_KEY, record)
            except Conflict:
                continue
            return record, None
        old = found.value.current
        retiring = (old, *found.value.retiring) if keep_old else found.value.retiring
        record = found.value.model_copy(update={"current": fresh, "retiring": retiring})
        try:
            await table.replace(found, record)
        except Conflict:
            continue
        return record, old if keep_old else None
    raise Conflict(f"webhook_secrets/{tenant_id}: too much contention")


async def on_secret_retire(
    msg: WebhookSecretRetire, records: Records, outbox: Outbox, inbox_queue: str
) -> None:
    """Wait out ``remaining_s`` in Scheduler-sized steps, then drop that secret."""
    table = secrets_table(records)
    if msg.remaining_s > 0:
        step = min(msg.remaining_s, outbox.max_delay_s)
        later = msg.model_copy(update={"remaining_s": msg.remaining_s - step})
        await outbox.deliver(schedule(inbox_queue, later, step))
        return

    def drop(current: WebhookSecrets) -> WebhookSecrets | None:
        kept = tuple(s for s in current.retiring if s.id != msg.secret_id)
        return None if kept == current.retiring else current.model_copy(update={"retiring": kept})

    await table.mutate(msg.tenant_id, SECRETS_KEY, drop)
