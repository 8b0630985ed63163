"""Web sign-ins: server-side session records, CSRF tokens, invited users.

Why server-side records rather than signed tokens: a signed cookie needs a server secret that
every cloud's functions share and rotate, and it cannot be revoked before it expires. A record
in the StateStore (table ``web_sessions``, already reachable from every HTTP function) is
revoked by deleting it — on logout, when a user is removed, when the tenant is torn down —
and costs one read per request. The browser holds 256 random bits; the table holds only their
SHA-256, so a copy of the table signs nobody in.

Each session belongs to one *realm*: a tenant id (the cookie's ``Path`` is ``/t/{tenant}/``
and the record lives in that tenant's partition, so a cookie of tenant A is simply not found
under ``/t/B/``) or ``"operator"`` for ``/console/``. Sessions last
``SKYCRAWL_WEB_SESSION_TTL_S`` (absolute, 4 h by default). The expiry is compared with this
instance's clock; NTP-synchronised function hosts differ by far less than a session lasts.

CSRF: every session has a random synchronizer token, embedded in each form of its pages and
compared in constant time on every state-changing request.

Invites: a tenant admin invites a user by name with a role (``viewer`` reads; ``editor`` may
also start, cancel and re-run crawls). The invite link carries ``inv_<user id>_<secret>``
(only the SHA-256 is stored); it signs the user in for ``SKYCRAWL_WEB_INVITE_TTL_S`` (7 days)
from when it was issued, as often as needed. Re-issuing replaces the token; removing the user
ends their sessions at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from datetime import timedelta
from typing import Literal

from core.clock import Clock
from core.errors import NotFound
from core.records import Records, WebRole, WebSession, WebUser
from core.webapp.settings import WebAppSettings

OPERATOR_REALM = "operator"
_INVITE = re.compile(r"inv_([0-9a-f]{32})_([A-Za-z0-9_-]{43})")
_SID = re.compile(r"[A-Za-z0-9_-]{43}")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def csrf_ok(session: WebSession, submitted: str) -> bool:
    return bool(submitted) and hmac.compare_digest(session.csrf_token, submitted)


class Sessions:
    def __init__(self, records: Records, clock: Clock, settings: WebAppSettings) -> None:
        self._records = records
        self._clock = clock
        self._ttl = timedelta(seconds=settings.session_ttl_s)
        self._invite_ttl = timedelta(seconds=settings.invite_ttl_s)

    # ------------------------------------------------------------------ sessions

    async def start(
        self, realm: str, role: WebRole, *, user: WebUser | None = None
    ) -> tuple[str, WebSession]:
        """A new session; returns the cookie value (the only copy) and the record."""
        sid = secrets.token_urlsafe(32)
        now = self._clock.now()
        session = WebSession(
            realm=realm,
            role=role,
            user_id=user.id if user else None,
            user_name=user.name if user else "",
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + self._ttl,
        )
        await self._records.web_sessions.create(
            realm, _sha256(sid), session, expires_at=session.expires_at
        )
        return sid, session

    async def find(self, realm: str, sid: str | None) -> WebSession | None:
        """The live session of cookie ``sid`` in ``realm``; None if absent, expired or revoked."""
        if not sid or not _SID.fullmatch(sid):
            return None
        found = await self._records.web_sessions.get(realm, _sha256(sid))
        if found is None:
            return None
        session = found.value
        if session.expires_at <= self._clock.now():
            await self._records.web_sessions.discard(realm, _sha256(sid))
            return None
        user_id = session.user_id
        if user_id is not None and await self._records.web_users.get(realm, user_id) is None:
            return None  # the user was removed
        return session

    async def end(self, realm: str, sid: str | None) -> None:
        if sid and _SID.fullmatch(sid):
            await self._records.web_sessions.discard(realm, _sha256(sid))

    async def _end_user(self, realm: str, user_id: str) -> None:
        for found in await self._records.web_sessions.query(realm):
            if found.value.user_id == user_id:
                await self._records.web_sessions.discard(realm, found.item.key)

    # ------------------------------------------------------------------ invited users

    async def invite(
        self, tenant_id: str, name: str, role: Literal["editor", "viewer"]
    ) -> tuple[WebUser, str]:
        """A new user and their invite token (shown once)."""
        user_id = uuid.uuid4().hex
        token = f"inv_{user_id}_{secrets.token_urlsafe(32)}"
        now = self._clock.now()
        user = WebUser(
            id=user_id,
            tenant_id=tenant_id,
            name=name,
            role=role,
            invite_sha256=_sha256(token),
            invite_expires_at=now + self._invite_ttl,
            created_at=now,
        )
        await self._records.web_users.create(tenant_id, user_id, user)
        return user, token

    async def reissue(self, tenant_id: str, user_id: str) -> tuple[WebUser, str]:
        """A fresh invite token for an existing user; the previous link stops working."""
        token = f"inv_{user_id}_{secrets.token_urlsafe(32)}"
        expires = self._clock.now() + self._invite_ttl
        user, _ = await self._records.web_users.mutate(
            tenant_id,
            user_id,
            lambda u: u.model_copy(
                update={"invite_sha256": _sha256(token), "invite_expires_at": expires}
            ),
        )
        if user is None:
            raise NotFound(f"no user {user_id!r}")
        return user, token

    async def redeem(self, tenant_id: str, token: str) -> WebUser | None:
        """The user an invite token signs in, if it is valid, current and theirs."""
        match = _INVITE.fullmatch(token.strip())
        found = None if match is None else await self._records.web_users.get(tenant_id, match[1])
        expected = "0" * 64 if found is None else found.value.invite_sha256
        if not hmac.compare_digest(_sha256(token.strip()), expected) or found is None:
            return None
        if found.value.invite_expires_at <= self._clock.now():
            return None
        return found.value

    async def users(self, tenant_id: str) -> list[WebUser]:
        users = [v.value for v in await self._records.web_users.query(tenant_id)]
        return sorted(users, key=lambda u: (u.created_at, u.id))

    async def remove_user(self, tenant_id: str, user_id: str) -> None:
        await self._records.web_users.discard(tenant_id, user_id)
        await self._end_user(tenant_id, user_id)
