"""``PostgresMessageBus``: queues, a dispatch topic and filtered subscriptions in PostgreSQL.

Features
    * Queues with leases: ``receive`` picks up to ``max_messages`` visible rows with
      ``SELECT ... ORDER BY visible_at, seq FOR UPDATE SKIP LOCKED`` (the local bus's order)
      and leases them in the same statement -- one round trip, one commit: a fresh receipt
      (``gen_random_uuid()``), ``visible_at = now() + visibility timeout``, one more
      delivery. Any number of
      processes on any number of machines may receive from one queue; none ever holds a
      lease on a message another holds, and none waits for another's lock.
    * ``ack``, ``release`` and ``dead_letter`` need the *current* receipt (acking an expired
      lease still works if nobody took the message meanwhile); a superseded receipt raises
      ``core.errors.Conflict`` and changes nothing.
    * A message about to be delivered more than ``max_deliveries`` times (per queue, default
      5) moves to ``dead_letter_queue(name)`` instead, with ``dead_letter_reason`` and
      ``dead_letter_source`` (``dead_letter(reason=...)`` does the same at once).
    * Topics fan out in one statement: ``publish`` inserts a copy for every subscription of
      the topic whose filter is contained in the attributes (``filter <@ attributes`` over the
      topic's subscriptions, found by the primary key; an empty filter matches all), at once (``filter_propagation_s=0``).
      Subscriptions get 5 deliveries; their dead letters go to ``dead_letter_queue(topic)``.
    * Waiting receivers sleep on ``LISTEN/NOTIFY`` instead of polling: every statement that
      makes a message visible (send, publish, release, a move to a dead-letter queue) runs
      ``pg_notify('skycrawl_bus', source)`` in its transaction, and one listening connection
      per bus instance wakes the receivers of that source when it commits. A receiver with
      nothing to take sleeps until the next message of its source is due (a delayed send, a
      lease running out: it asks the database when) or a notification, and at most
      ``RECHECK_S``, so a lost listening connection costs latency, never messages.
      ``notify=False`` polls every 20-100 ms instead (the bench compares both).
    * Every time is the database's ``now()``: delays, visibility timeouts and lease expiry
      never compare two machines' clocks.

Limits
    Body plus attributes at most 256 KiB (as locally, so a message that works on one machine
    works here); attribute names and values hold no NUL character (PostgreSQL text cannot);
    visibility timeout above 0 and at most 12 h; delays up to 30 days; names of letters,
    digits, ``.``, ``_`` and ``-`` (200 at most); an unknown queue or subscription is
    ``NotFound``. Throughput: see ``bench/README.md`` (the PostgreSQL bus bench).

Settings
    ``SKYCRAWL_SELFHOSTED_DATABASE_URL`` (``adapters/selfhosted/settings.py``). Tables:
    ``bus_sources``, ``bus_topics``, ``bus_subscriptions``, ``bus_messages``
    (``migrations/0001_bus.sql``). Costs the database it runs on, nothing per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from adapters.selfhosted.database import PostgresDatabase
from adapters.sql_bus import (
    MAX_DELAY_S,
    MAX_MESSAGE_BYTES,
    MAX_VISIBILITY_TIMEOUT_S,
    POLL_MAX_S,
    POLL_MIN_S,
    check_name,
    check_size,
    source_key,
)
from core.errors import Conflict, InvalidRequest, NotFound
from core.ports.message_bus import (
    BusCapabilities,
    Lease,
    OutboundMessage,
    Queue,
    Source,
    Subscription,
    check_receive,
    dead_letter_attributes,
    dead_letter_queue,
)

log = logging.getLogger("skycrawl.selfhosted.bus")

CHANNEL = "skycrawl_bus"  # the channel name is also spelled out in the SQL below
RECHECK_S = 5.0  # longest sleep of a waiting receiver between two looks at its source


def _check_message(message: OutboundMessage) -> Jsonb:
    attributes = check_size(message)
    if any("\x00" in k or "\x00" in v for k, v in attributes.items()):
        raise InvalidRequest("message attributes must not contain NUL characters")
    return Jsonb(attributes)


def _check_delay(delay_s: float) -> None:
    if not 0 <= delay_s <= MAX_DELAY_S:
        raise InvalidRequest(f"delay must be between 0 and {MAX_DELAY_S:.0f} seconds")


def _lost(lease: Lease) -> Conflict:
    return Conflict(f"lease on message {lease.message_id} is no longer held (superseded or gone)")


async def _require_source(conn: AsyncConnection[Any], key: str) -> tuple[int | None, str | None]:
    cur = await conn.execute(
        "SELECT max_deliveries, dead_letter FROM bus_sources WHERE source = %s", (key,)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no such queue or subscription: {key}")
    return row[0], row[1]


async def _move_to_dead_letter(
    conn: AsyncConnection[Any],
    seq: int,
    attributes: Mapping[str, str],
    *,
    target: str,
    origin: str,
    reason: str,
) -> None:
    attrs = dead_letter_attributes(attributes, reason=reason, source=origin.split("/", 1)[1])
    await conn.execute(  # its own statement: the lease that moves it may have committed
        "WITH inserted AS (UPDATE bus_messages SET source = %s, attributes = %s,"
        " receipt = NULL, visible_at = now() WHERE seq = %s RETURNING source)"
        " SELECT pg_notify('skycrawl_bus', source) FROM inserted",
        (target, Jsonb(attrs), seq),
    )


class _Listener:
    """One ``LISTEN`` connection per bus instance, waking the receivers of a source."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection[Any] | None = None
        self._starting: asyncio.Lock | None = None

    @contextlib.contextmanager
    def watch(self, key: str) -> Any:
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[key]

    async def start(self) -> None:
        """Listen (again, if the connection was lost); returns once ``LISTEN`` is in force."""
        if self._task is not None and not self._task.done():
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._task is not None and not self._task.done():
                return
            await self._close_conn()
            conn = await self._database.connect()
            await conn.execute(f"LISTEN {CHANNEL}")
            self._conn = conn
            self._task = asyncio.create_task(self._run(conn), name="skycrawl-bus-listen")

    async def _run(self, conn: AsyncConnection[Any]) -> None:
        try:
            async for note in conn.notifies():
                for event in self._waiters.get(note.payload, ()):
                    event.set()
        except Exception as exc:  # connection lost: wake everyone; the next receive relistens
            log.warning("bus LISTEN connection lost (%s); receivers fall back to re-checks", exc)
            for waiters in self._waiters.values():
                for event in waiters:
                    event.set()

    async def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_conn()


class PostgresMessageBus:
    """MessageBus on PostgreSQL tables, shared by every process that reaches the database."""

    capabilities = BusCapabilities(
        max_message_bytes=MAX_MESSAGE_BYTES,
        filters_applied=True,
        filter_propagation_s=0,
        max_visibility_timeout_s=MAX_VISIBILITY_TIMEOUT_S,
        native_dead_letter=True,
    )

    def __init__(self, database: PostgresDatabase, *, notify: bool = True) -> None:
        self._database = database.attach()
        self._notify = notify
        self._listener = _Listener(database)
        self._closed = False

    # ----------------------------------------------------------------------------- queues

    async def ensure_queue(self, *, name: str, max_deliveries: int = 5) -> None:
        check_name("queue", name)
        if max_deliveries < 1:
            raise InvalidRequest("max_deliveries must be at least 1")
        key, dlq = source_key(Queue(name)), source_key(Queue(dead_letter_queue(name)))
        async with self._database.transaction("ensure_queue") as conn:
            await conn.execute(
                "INSERT INTO bus_sources VALUES (%s, %s, %s) ON CONFLICT (source) DO UPDATE"
                " SET max_deliveries = excluded.max_deliveries,"
                " dead_letter = excluded.dead_letter",
                (key, max_deliveries, dlq),
            )
            await conn.execute(
                "INSERT INTO bus_sources VALUES (%s, NULL, NULL) ON CONFLICT DO NOTHING", (dlq,)
            )

    async def send(self, *, queue: str, message: OutboundMessage, delay_s: float = 0) -> str:
        """Enqueue, invisible until ``delay_s`` after the database's ``now()``."""
        _check_delay(delay_s)
        attrs, key, message_id = (
            _check_message(message),
            source_key(Queue(queue)),
            uuid.uuid4().hex,
        )
        async with self._database.connection("send") as conn:
            cur = await conn.execute(
                "WITH inserted AS (INSERT INTO bus_messages"
                " (source, message_id, body, attributes, visible_at)"
                " SELECT source, %s, %s, %s, now() + %s * interval '1 second'"
                " FROM bus_sources WHERE source = %s RETURNING source)"
                " SELECT pg_notify('skycrawl_bus', source) FROM inserted",
                (message_id, message.body, attrs, delay_s, key),
            )
            if cur.rowcount != 1:
                raise NotFound(f"no such queue: {queue}")
        return message_id

    async def withdraw(self, *, message_id: str) -> bool:
        """Delete a queued message never delivered yet (``PostgresScheduler.cancel``)."""
        async with self._database.connection("withdraw") as conn:
            cur = await conn.execute(
                "DELETE FROM bus_messages WHERE message_id = %s AND delivery_count = 0"
                " AND receipt IS NULL AND source LIKE 'queue/%%'",
                (message_id,),
            )
            return cur.rowcount > 0

    async def receive(
        self,
        *,
        source: Source,
        max_messages: int = 10,
        visibility_timeout_s: float = 60,
        wait_s: float = 0,
    ) -> list[Lease]:
        check_receive(
            max_messages=max_messages,
            visibility_timeout_s=visibility_timeout_s,
            longest_s=MAX_VISIBILITY_TIMEOUT_S,
        )
        loop = asyncio.get_running_loop()
        deadline, key, pause = loop.time() + max(wait_s, 0), source_key(source), POLL_MIN_S
        listening = self._notify and wait_s > 0
        while True:
            if listening:
                await self._listener.start()
            with self._listener.watch(key) as woken:  # before looking: no wake-up is missed
                leases, due_in = await self._lease(source, key, max_messages, visibility_timeout_s)
                if leases:
                    return leases
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                if listening:
                    nap = min(remaining, RECHECK_S, due_in if due_in is not None else RECHECK_S)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), max(nap, 0.001))
                else:
                    await asyncio.sleep(min(pause, remaining))
                    pause = min(pause * 1.5, POLL_MAX_S)

    async def _lease(
        self, source: Source, key: str, count: int, timeout_s: float
    ) -> tuple[list[Lease], float | None]:
        """Lease up to ``count`` messages; with none, also how soon the next one is due.

        One statement (its own transaction) picks and leases: the common receive is one
        round trip and one commit. A message past its source's ``max_deliveries`` is leased
        with the others, then moved to the dead-letter queue under that lease."""
        leases: list[Lease] = []
        async with self._database.connection("receive") as conn:
            while len(leases) < count:
                cur = await conn.execute(
                    "WITH src AS (SELECT max_deliveries, dead_letter FROM bus_sources"
                    "  WHERE source = %(key)s),"
                    " picked AS (SELECT seq, visible_at AS was_visible FROM bus_messages"
                    "  WHERE source = %(key)s AND visible_at <= now()"
                    "  ORDER BY visible_at, seq LIMIT %(count)s FOR UPDATE SKIP LOCKED)"
                    " UPDATE bus_messages m SET receipt = gen_random_uuid()::text,"
                    "  visible_at = now() + %(timeout)s * interval '1 second',"
                    "  delivery_count = m.delivery_count + 1"
                    " FROM picked WHERE m.seq = picked.seq"
                    " RETURNING m.seq, m.message_id, m.body, m.attributes, m.delivery_count,"
                    "  m.receipt, picked.was_visible,"
                    "  (SELECT max_deliveries FROM src), (SELECT dead_letter FROM src)",
                    {"key": key, "count": count - len(leases), "timeout": timeout_s},
                )
                rows = sorted(await cur.fetchall(), key=lambda row: (row[6], row[0]))
                if not rows:
                    break
                moved = 0
                for seq, message_id, body, attrs, delivered, receipt, _, most, dlq in rows:
                    if most is not None and dlq and delivered > most:
                        reason = f"delivered {delivered - 1} times (max_deliveries={most})"
                        await _move_to_dead_letter(
                            conn, seq, attrs, target=dlq, origin=key, reason=reason
                        )
                        moved += 1
                    else:
                        leases.append(
                            Lease(source, message_id, bytes(body), attrs, delivered, receipt)
                        )
                if not moved:
                    break
            if leases:
                return leases, None
            cur = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM bus_sources WHERE source = %(key)s),"
                " extract(epoch FROM (SELECT min(visible_at) FROM bus_messages"
                "  WHERE source = %(key)s) - now())::float8",
                {"key": key},
            )
            row = await cur.fetchone()
        if row is None or not row[0]:
            raise NotFound(f"no such queue or subscription: {key}")
        return [], None if row[1] is None else max(float(row[1]), 0.0)

    async def ack(self, *, lease: Lease) -> None:
        async with self._database.connection("ack") as conn:
            cur = await conn.execute(
                "DELETE FROM bus_messages WHERE receipt = %s AND source = %s RETURNING seq",
                (lease.receipt, source_key(lease.source)),
            )
            if len(await cur.fetchall()) != 1:
                raise _lost(lease)

    async def release(self, *, lease: Lease, delay_s: float = 0) -> None:
        _check_delay(delay_s)
        async with self._database.connection("release") as conn:
            cur = await conn.execute(
                "WITH inserted AS (UPDATE bus_messages SET receipt = NULL,"
                " visible_at = now() + %s * interval '1 second'"
                " WHERE receipt = %s AND source = %s RETURNING source)"
                " SELECT pg_notify('skycrawl_bus', source) FROM inserted",
                (delay_s, lease.receipt, source_key(lease.source)),
            )
            if len(await cur.fetchall()) != 1:
                raise _lost(lease)

    async def dead_letter(self, *, lease: Lease, reason: str) -> None:
        key = source_key(lease.source)
        async with self._database.transaction("dead_letter") as conn:
            _, target = await _require_source(conn, key)
            cur = await conn.execute(
                "SELECT seq, attributes FROM bus_messages WHERE receipt = %s AND source = %s"
                " FOR UPDATE",
                (lease.receipt, key),
            )
            row = await cur.fetchone()
            if row is None:
                raise _lost(lease)
            if target is None:
                raise InvalidRequest(f"{key} is a dead-letter queue itself")
            await _move_to_dead_letter(
                conn, row[0], row[1], target=target, origin=key, reason=reason
            )

    # ----------------------------------------------------------------------------- topics

    async def ensure_topic(self, *, topic: str) -> None:
        check_name("topic", topic)
        dlq = source_key(Queue(dead_letter_queue(topic)))
        async with self._database.transaction("ensure_topic") as conn:
            await conn.execute(
                "INSERT INTO bus_topics VALUES (%s) ON CONFLICT DO NOTHING", (topic,)
            )
            await conn.execute(
                "INSERT INTO bus_sources VALUES (%s, NULL, NULL) ON CONFLICT DO NOTHING", (dlq,)
            )

    async def publish(self, *, topic: str, message: OutboundMessage) -> str:
        attrs, message_id = _check_message(message), uuid.uuid4().hex
        async with self._database.transaction("publish") as conn:
            cur = await conn.execute("SELECT 1 FROM bus_topics WHERE name = %s", (topic,))
            if await cur.fetchone() is None:
                raise NotFound(f"no such topic: {topic}")
            await conn.execute(
                "WITH inserted AS (INSERT INTO bus_messages"
                " (source, message_id, body, attributes, visible_at)"
                " SELECT 'sub/' || topic || '/' || name, %s, %s, %s, now()"
                " FROM bus_subscriptions WHERE topic = %s AND filter <@ %s"
                " RETURNING source)"
                " SELECT pg_notify('skycrawl_bus', source) FROM inserted",
                (message_id, message.body, attrs, topic, attrs),
            )
        return message_id

    async def ensure_subscription(
        self, *, topic: str, name: str, filter: Mapping[str, str]
    ) -> Subscription:
        check_name("subscription", name)
        key = source_key(Subscription(topic, name))
        dlq = source_key(Queue(dead_letter_queue(topic)))
        async with self._database.transaction("ensure_subscription") as conn:
            cur = await conn.execute("SELECT 1 FROM bus_topics WHERE name = %s", (topic,))
            if await cur.fetchone() is None:
                raise NotFound(f"no such topic: {topic}")
            await conn.execute(
                "INSERT INTO bus_subscriptions VALUES (%s, %s, %s)"
                " ON CONFLICT (topic, name) DO UPDATE SET filter = excluded.filter",
                (topic, name, Jsonb(dict(filter))),
            )
            await conn.execute(
                "INSERT INTO bus_sources VALUES (%s, 5, %s) ON CONFLICT DO NOTHING", (key, dlq)
            )
        return Subscription(topic, name)

    async def delete_subscription(self, *, topic: str, name: str) -> None:
        key = source_key(Subscription(topic, name))
        async with self._database.transaction("delete_subscription") as conn:
            await conn.execute(
                "DELETE FROM bus_subscriptions WHERE topic = %s AND name = %s", (topic, name)
            )
            await conn.execute("DELETE FROM bus_sources WHERE source = %s", (key,))
            await conn.execute("DELETE FROM bus_messages WHERE source = %s", (key,))

    async def delete_topic(self, *, topic: str) -> None:
        """Remove the topic, its subscriptions with their messages, and its dead-letter queue."""
        dlq = source_key(Queue(dead_letter_queue(topic)))
        async with self._database.transaction("delete_topic") as conn:
            cursor = await conn.execute(
                "DELETE FROM bus_subscriptions WHERE topic = %s RETURNING name", (topic,)
            )
            names = [row[0] for row in await cursor.fetchall()]
            for source in [*(source_key(Subscription(topic, n)) for n in names), dlq]:
                await conn.execute("DELETE FROM bus_sources WHERE source = %s", (source,))
                await conn.execute("DELETE FROM bus_messages WHERE source = %s", (source,))
            await conn.execute("DELETE FROM bus_topics WHERE name = %s", (topic,))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._listener.close()
        await self._database.release()
