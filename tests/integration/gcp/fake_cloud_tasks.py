"""A fake of Cloud Tasks at the SDK boundary, and fake OIDC tokens for its HTTP targets.

``FakeCloudTasks`` has the ``CloudTasksAsyncClient`` methods the scheduler calls --
``create_task(parent=, task=)``, ``get_task(name=)``, ``delete_task(name=)``, and
``transport.close()`` (counted in ``transport.closed``) -- returning real
``tasks_v2.Task`` messages and raising ``google.api_core.exceptions.NotFound`` like the
service. ``dispatch(stop)`` is the queue's dispatcher: every 20 ms it POSTs each due HTTP task
to its URL through ``post(url, headers, body) -> status`` with ``Authorization: Bearer <token>``
(a ``FakeIdTokens`` token for the task's OIDC service account and audience); a 2xx answer
removes the task, anything else is retried with back-off from 0.1 s (Cloud Tasks' queue
default), doubling up to 5 s.

Limits: one queue's worth of behaviour (no rate limits, max attempts, task deduplication
windows, App Engine targets or OAuth tokens); tasks live in memory; methods are thread-safe
and loop-agnostic (callable from any event loop), the dispatcher runs on the caller's loop.
The service checks ``parent`` names; the fake only requires a ``/queues/`` path.

``FakeIdTokens`` issues opaque tokens ``fake-oidc.<base64 of {email, aud}>`` and verifies them the
way ``functions.gcp.oidc`` needs (``verify(token, audience=) -> claims``): a wrong audience or a
garbled token raises ``ValueError``, as ``google.oauth2.id_token.verify_oauth2_token`` does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

Post = Callable[[str, dict[str, str], bytes], Awaitable[int]]


class FakeIdTokens:
    """Issues and verifies fake Google ID tokens."""

    def issue(self, email: str, audience: str) -> str:
        claims = json.dumps({"email": email, "aud": audience}).encode()
        return "fake-oidc." + base64.urlsafe_b64encode(claims).decode()

    def verify(self, token: str, *, audience: str) -> Mapping[str, Any]:
        kind, _, rest = token.partition(".")
        try:
            claims = json.loads(base64.urlsafe_b64decode(rest.encode()))
            email, token_audience = str(claims["email"]), str(claims["aud"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError("Could not verify token signature") from exc
        if kind != "fake-oidc" or "@" not in email:
            raise ValueError("Could not verify token signature")
        if token_audience != audience:
            raise ValueError(f"Token has wrong audience {token_audience}, expected {audience}")
        return {"email": email, "email_verified": True, "aud": audience}


@dataclass
class _Pending:
    task: tasks_v2.Task
    due: float
    attempts: int = 0


class _Transport:
    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


class FakeCloudTasks:
    """The part of ``tasks_v2.CloudTasksAsyncClient`` that ``CloudTasksScheduler`` uses."""

    def __init__(self, post: Post, tokens: FakeIdTokens | None = None) -> None:
        self._post = post
        self.tokens = tokens or FakeIdTokens()
        self._tasks: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self.dispatched: list[tasks_v2.Task] = []
        self.created: list[tasks_v2.Task] = []
        self.transport = _Transport()

    async def create_task(self, *, parent: str, task: tasks_v2.Task, **_: Any) -> tasks_v2.Task:
        if "/queues/" not in parent:
            raise gexc.InvalidArgument(f"bad queue name {parent}")
        created = tasks_v2.Task(task)
        created.name = f"{parent}/tasks/{uuid.uuid4().hex}"
        created.create_time = datetime.now(UTC)
        if not task.schedule_time:
            created.schedule_time = datetime.now(UTC)
        due = created.schedule_time.timestamp()  # type: ignore[attr-defined]
        with self._lock:
            self._tasks[created.name] = _Pending(created, due)
            self.created.append(created)
        return created

    async def get_task(self, *, name: str, **_: Any) -> tasks_v2.Task:
        with self._lock:
            pending = self._tasks.get(name)
        if pending is None:
            raise gexc.NotFound(f"task {name} not found")
        return pending.task

    async def delete_task(self, *, name: str, **_: Any) -> None:
        with self._lock:
            if self._tasks.pop(name, None) is None:
                raise gexc.NotFound(f"task {name} not found")

    def pending(self) -> list[tasks_v2.Task]:
        with self._lock:
            return [p.task for p in self._tasks.values()]

    async def dispatch(self, stop: asyncio.Event) -> None:
        """Deliver due tasks until ``stop`` is set."""
        while not stop.is_set():
            now = datetime.now(UTC).timestamp()
            with self._lock:
                due = [p for p in self._tasks.values() if p.due <= now]
                for pending in due:
                    pending.due = float("inf")  # in flight
            await asyncio.gather(*(self._deliver(p) for p in due))
            await asyncio.sleep(0.02)

    async def _deliver(self, pending: _Pending) -> None:
        request = pending.task.http_request
        headers = dict(request.headers)
        token = request.oidc_token
        if token.service_account_email:
            issued = self.tokens.issue(token.service_account_email, token.audience or request.url)
            headers["Authorization"] = f"Bearer {issued}"
        try:
            status = await self._post(request.url, headers, bytes(request.body))
        except Exception:
            status = 599
        with self._lock:
            if 200 <= status < 300:
                self._tasks.pop(pending.task.name, None)
                self.dispatched.append(pending.task)
                return
            pending.attempts += 1
            backoff = min(0.1 * 2 ** (pending.attempts - 1), 5.0)
            if pending.task.name in self._tasks:
                pending.due = datetime.now(UTC).timestamp() + backoff
