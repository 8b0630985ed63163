"""Typed tables over the StateStore, with the compare-and-set loop in one place.

=============  ==========  ==============  ==============================================
table          partition   key             holds
=============  ==========  ==============  ==============================================
tenants        "tenants"   tenant id       ``Tenant``
api_keys       "keys"      key prefix      ``ApiKey`` (prefix → tenant, SHA-256 of key)
crawls         tenant id   crawl id        ``Crawl``
active         tenant id   crawl id        ``ActiveCrawl``: index of non-terminal crawls
backlog        tenant id   time|crawl id   ``ActiveCrawl``: pending crawls, oldest first
listing        tenant id   -time|crawl id  ``ActiveCrawl``: every crawl, newest first
finished       tenant id   time|crawl id   ``ActiveCrawl``: terminal crawls by finish time
containers     tenant id   GUID            ``Container``
fleets         tenant id   "fleet"         ``Fleet``: live container GUIDs (limit by CAS)
sessions       tenant id   session key     ``SessionBinding``
idempotency    tenant id   key             ``IdempotencyRecord`` (expires after 24 h)
rate           tenant id   minute          ``RateCounter`` (expires after 2 min)
key_index      tenant id   key prefix      ``ApiKeyInfo``: the tenant's live API keys
web_users      tenant id   user id         ``WebUser``: invited web-app users and roles
web_sessions   tenant id   SHA-256 of id   ``WebSession`` (expires; ``"operator"`` for the
                                           operator console)
idle           tenant id   "idle"          ``IdleStats``: idle-gap histogram, open gap
=============  ==========  ==============  ==============================================

Tables kept by other modules: ``usage`` (``core.metering``), ``budgets`` and
``budget_months`` (``core.budgets``), ``webhook_*`` and ``schedules``
(``core.delivery_models``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

from core.errors import Conflict
from core.models import Container, Crawl, Frozen, SessionBinding, Tenant, dump
from core.ports.state_store import Item, Replace, StateStore, Write, Written, write_chains

M = TypeVar("M", bound=BaseModel)


class ApiKey(Frozen):
    prefix: str
    tenant_id: str
    key_sha256: str


class ActiveCrawl(Frozen):
    crawl_id: str
    created_at: datetime


def backlog_key(created_at: datetime, crawl_id: str) -> str:
    """Key of a pending crawl in ``backlog``: key order is submission order."""
    return f"{created_at.strftime('%Y%m%dT%H%M%S.%f')}|{crawl_id}"


def listing_key(created_at: datetime, crawl_id: str) -> str:
    """Key of a crawl in ``listing``: key order is newest first (the micro-seconds inverted)."""
    micros = int(created_at.timestamp() * 1_000_000)
    return f"{_MAX_MICROS - micros:017d}|{crawl_id}"


def finished_key(finished_at: datetime, crawl_id: str) -> str:
    return f"{finished_at.strftime('%Y%m%dT%H%M%S.%f')}|{crawl_id}"


_MAX_MICROS = 10**17 - 1


class Fleet(Frozen):
    tenant_id: str
    containers: tuple[str, ...] = ()


class IdlePlan(Frozen):
    """What the adaptive idle policy chose from a tenant's histogram (``keep_alive_s`` None:
    fall back); see ``core.conductor.idle_policy``."""

    keep_alive_s: float | None
    basis: str = ""
    prewarm_at_s: float | None = None
    prewarm_keep_s: float = 0.0


class IdleStats(Frozen):
    """A tenant's idle gaps: a decayed histogram (bins: ``idle_policy.EDGES_S``), its plan,
    and the open gap of a tenant whose container stopped idle — ``open_s`` is that gap's
    length so far, counted in keep-alive plus housekeeping periods, never read off a clock."""

    tenant_id: str
    counts: tuple[float, ...] = ()
    observed: int = 0
    plan: IdlePlan | None = None
    open_s: float | None = None
    open_egress: str | None = None
    prewarmed: bool = False
    #: Containers stopped idle while the gap was open: how many to pre-warm.
    open_count: int = 0


class IdempotencyRecord(Frozen):
    key: str
    crawl_id: str
    request_sha256: str
    created_at: datetime


class RateCounter(Frozen):
    count: int = 0


class ApiKeyInfo(Frozen):
    """One live API key of a tenant (the secret is never stored; ``ApiKey`` holds its hash)."""

    prefix: str
    created_at: datetime


#: Web-app roles: ``admin`` signed in with an API key (everything, including keys and users);
#: ``editor`` may start, cancel and re-run crawls; ``viewer`` only reads. ``operator`` is the
#: operator console's.
WebRole = Literal["admin", "editor", "viewer", "operator"]


class WebUser(Frozen):
    """A person invited to a tenant's web app; signs in with the invite link's token."""

    id: str
    tenant_id: str
    name: str
    role: Literal["editor", "viewer"]
    invite_sha256: str
    invite_expires_at: datetime
    created_at: datetime


class WebSession(Frozen):
    """A signed-in browser: who, with which role, and the CSRF token of its forms."""

    realm: str  # tenant id, or "operator"
    role: WebRole
    user_id: str | None = None
    user_name: str = ""
    csrf_token: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Versioned(Generic[M]):
    """A record as read, with the store item that proves its version for compare-and-set."""

    value: M
    item: Item


class Table(Generic[M]):
    """One StateStore table holding one model type."""

    def __init__(self, state: StateStore, name: str, model: type[M]) -> None:
        self._state = state
        self.name = name
        self._model = model

    def _wrap(self, item: Item) -> Versioned[M]:
        return Versioned(self._model.model_validate(item.data), item)

    async def get(self, partition: str, key: str) -> Versioned[M] | None:
        item = await self._state.get(table=self.name, partition=partition, key=key)
        return None if item is None else self._wrap(item)

    async def create(
        self, partition: str, key: str, value: M, *, expires_at: datetime | None = None
    ) -> Versioned[M]:
        """Insert; ``Conflict`` if the key exists."""
        item = await self._state.create(
            table=self.name, partition=partition, key=key, data=dump(value), expires_at=expires_at
        )
        return Versioned(value, item)

    @staticmethod
    def replacing(current: Versioned[M], value: M) -> Replace:
        """``replace(current, value)`` as one write of ``Records.write_chains``."""
        return Replace(current.item, dump(value))

    async def replace(
        self, current: Versioned[M], value: M, *, expires_at: datetime | None = None
    ) -> Versioned[M]:
        """Overwrite if unchanged since ``current`` was read; ``Conflict`` otherwise."""
        item = await self._state.replace(item=current.item, data=dump(value), expires_at=expires_at)
        return Versioned(value, item)

    async def delete(self, current: Versioned[M]) -> None:
        await self._state.delete(item=current.item)

    async def discard(
        self, partition: str, key: str, *, current: Item | None = None, attempts: int = 20
    ) -> None:
        """Delete whatever version is there; missing is fine. ``current``: the item as last
        read, tried first instead of a read."""
        for _ in range(attempts):
            if current is None:
                found = await self.get(partition, key)
                if found is None:
                    return
                current = found.item
            try:
                await self._state.delete(item=current)
                return
            except Conflict:
                current = None
                continue
        raise Conflict(f"{self.name}/{partition}/{key}: too much contention")

    async def mutate(
        self,
        partition: str,
        key: str,
        change: Callable[[M], M | None],
        *,
        attempts: int = 20,
        current: Versioned[M] | None = None,
    ) -> tuple[M | None, bool]:
        """Read, apply ``change``, compare-and-set; retry on Conflict.

        ``change`` returns the new value, or None for "no change". Returns
        ``(value, changed)``; value is None when the record does not exist. ``current``: the
        record as the caller last read or wrote it, tried first instead of a read (a stale
        one costs one lost compare-and-set, then the loop reads afresh).
        """
        found, changed = await self.mutate_versioned(
            partition, key, change, attempts=attempts, current=current
        )
        return (None if found is None else found.value), changed

    async def mutate_versioned(
        self,
        partition: str,
        key: str,
        change: Callable[[M], M | None],
        *,
        attempts: int = 20,
        current: Versioned[M] | None = None,
    ) -> tuple[Versioned[M] | None, bool]:
        """``mutate``, returning the record with its version (for the next write)."""
        for _ in range(attempts):
            fresh = current is None
            if current is None:
                current = await self.get(partition, key)
                if current is None:
                    return None, False
            new = change(current.value)
            if new is None or new == current.value:
                if not fresh:  # "no change" is decided on what is stored, never on a hint
                    current = None
                    continue
                return current, False
            try:
                return await self.replace(current, new), True
            except Conflict:
                current = None
                continue
        raise Conflict(f"{self.name}/{partition}/{key}: too much contention")

    async def query(
        self, partition: str, *, limit: int | None = None, after: str | None = None
    ) -> list[Versioned[M]]:
        items = await self._state.query(
            table=self.name, partition=partition, limit=limit, after=after
        )
        return [self._wrap(item) for item in items]

    async def scan(self) -> list[Versioned[M]]:
        return [self._wrap(item) for item in await self._state.scan(table=self.name)]


class Records:
    """Every table the core uses, over one StateStore."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.tenants = Table(state, "tenants", Tenant)
        self.api_keys = Table(state, "api_keys", ApiKey)
        self.crawls = Table(state, "crawls", Crawl)
        self.active = Table(state, "active", ActiveCrawl)
        self.backlog = Table(state, "backlog", ActiveCrawl)
        self.listing = Table(state, "listing", ActiveCrawl)
        self.finished = Table(state, "finished", ActiveCrawl)
        self.containers = Table(state, "containers", Container)
        self.fleets = Table(state, "fleets", Fleet)
        self.sessions = Table(state, "sessions", SessionBinding)
        self.idempotency = Table(state, "idempotency", IdempotencyRecord)
        self.rate = Table(state, "rate", RateCounter)
        self.key_index = Table(state, "key_index", ApiKeyInfo)
        self.web_users = Table(state, "web_users", WebUser)
        self.web_sessions = Table(state, "web_sessions", WebSession)
        self.idle = Table(state, "idle", IdleStats)

    async def index_pending(self, crawl: Crawl) -> None:
        """Put a pending crawl in the tenant's backlog (idempotent)."""
        entry = ActiveCrawl(crawl_id=crawl.id, created_at=crawl.created_at)
        with contextlib.suppress(Conflict):
            await self.backlog.create(
                crawl.tenant_id, backlog_key(crawl.created_at, crawl.id), entry
            )

    async def unindex_pending(self, crawl: Crawl) -> None:
        entry = self.pending_entry(crawl)
        await self.backlog.discard(crawl.tenant_id, entry.key, current=entry)

    def pending_entry(self, crawl: Crawl) -> Item:
        """The crawl's backlog entry, to delete without reading it first: an entry is only
        ever created (at version 1) and deleted, never replaced (if it is gone, one refused
        delete, then a read finds nothing)."""
        return Item(
            self.backlog.name, crawl.tenant_id, backlog_key(crawl.created_at, crawl.id), {}, 1
        )

    async def write_chains(self, chains: Sequence[Sequence[Write]]) -> list[list[Written]]:
        """``core.ports.state_store.write_chains`` on this store: several compare-and-sets
        in one commit where the store can."""
        return await write_chains(self.state, chains)

    async def live_containers(self, tenant_id: str) -> list[Container]:
        return [v.value for v in await self.containers.query(tenant_id) if v.value.state.live]
