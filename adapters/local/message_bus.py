"""Local MessageBus: queues, a dispatch topic and filtered subscriptions in one SQLite file.

Features
    * Queues with leases: ``receive`` marks up to ``max_messages`` visible rows as leased until
      ``now + visibility_timeout_s`` under a fresh receipt (a random token) and counts the
      delivery. Leasing runs in a ``BEGIN IMMEDIATE`` transaction, so two bus instances -- in
      one process or in several (the conductor and every engine subprocess share the file) --
      never lease the same message at the same time.
    * ``ack``, ``release`` and ``dead_letter`` need the *current* receipt. A receipt stays
      current until the message is acked, released, dead-lettered or leased again, so acking
      an expired lease still works if nobody took the message meanwhile. A superseded receipt
      raises ``core.errors.Conflict`` and changes nothing: the other holder owns the message.
    * A message about to be delivered more than ``max_deliveries`` times (per queue, set by
      ``ensure_queue``, default 5) moves to the queue ``dead_letter_queue(name)`` instead, with
      the attribute ``dead_letter_reason`` (``dead_letter(reason=...)`` does the same at once)
      and ``dead_letter_source``. Dead-letter queues keep messages without a delivery limit.
    * Topics fan out: ``publish`` copies the message into every subscription of the topic whose
      filter matches (every filter attribute equal; an empty filter matches all), at once
      (``filter_propagation_s=0``). Subscriptions are received from as
      ``Subscription(topic, name)``, 5 deliveries each; their dead letters go to the topic's
      queue ``dead_letter_queue(topic)``, which outlives the subscriptions.
      ``delete_subscription`` drops the subscription and every message it holds.
    * ``send(delay_s=...)`` hides a message until then; ``receive(wait_s=...)`` long-polls the
      file every 20-100 ms (a cheap read; the write lock is taken only when a message is
      visible), so waiting receivers cost next to no CPU.
    * Persistent: a new instance on the same file (after a crash or restart) sees every message;
      leases held by a dead process simply expire.
    * Threads: each instance owns one connection on one dedicated worker thread
      (``SqliteThread``), so the event loop never blocks on SQLite. A receive whose caller is
      cancelled may still lease messages; they come back when the visibility timeout ends.

Limits
    Body plus attribute names and values at most 256 KiB (else ``InvalidRequest``); visibility
    timeout above 0 and at most 12 h; delays up to 30 days; queue, topic and subscription names
    of letters, digits, ``.``, ``_`` and ``-`` (200 at most); no limit on subscriptions per
    topic unless ``max_subscriptions_per_topic`` is given (then ``ensure_subscription`` beyond
    it is ``QuotaExceeded``, as on the clouds' brokers); sending to or receiving from a
    queue or subscription that was never ensured (or was deleted) is ``NotFound``. "Now" comes from the injected
    clock (times are the clock's epoch seconds), so every process sharing a file must use the
    same clock -- the system clock outside tests. Throughput is that of one SQLite writer:
    thousands of messages a second, plenty for one machine. Durability is
    ``synchronous=NORMAL``: a crashed process loses nothing, a power cut may lose the last
    transactions.

Settings
    ``SKYCRAWL_LOCAL_DATA_DIR`` (the file is ``<data_dir>/bus.sqlite3``). Costs nothing.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache, partial
from pathlib import Path

from adapters.local.state_store import SqliteThread
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
from core.clock import Clock, SystemClock
from core.errors import Conflict, InvalidRequest, NotFound, QuotaExceeded
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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    source TEXT PRIMARY KEY,   -- 'queue/<name>' or 'sub/<topic>/<name>'
    max_deliveries INTEGER,    -- NULL: no limit (dead-letter queues)
    dead_letter TEXT           -- where messages over the limit go
);
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS subscriptions (
    topic TEXT NOT NULL,
    name TEXT NOT NULL,
    filter TEXT NOT NULL,
    PRIMARY KEY (topic, name)
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    attributes TEXT NOT NULL,
    visible_at REAL NOT NULL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (source, visible_at);
CREATE INDEX IF NOT EXISTS messages_id ON messages (message_id);
CREATE UNIQUE INDEX IF NOT EXISTS messages_receipt ON messages (receipt);
"""


@lru_cache(maxsize=4096)
def _filter_of(filter_json: str) -> dict[str, str]:
    """A subscription's stored filter, parsed once (every publish checks every filter of
    its topic; parsing them each time was most of a publish's own time)."""
    wanted: dict[str, str] = json.loads(filter_json)
    return wanted


def _check_message(message: OutboundMessage) -> str:
    """Validate the size; returns the attributes as JSON."""
    return json.dumps(check_size(message), separators=(",", ":"))


def _check_delay(delay_s: float) -> None:
    if not 0 <= delay_s <= MAX_DELAY_S:
        raise InvalidRequest(f"delay must be between 0 and {MAX_DELAY_S:.0f} seconds")


def _insert(
    conn: sqlite3.Connection, source: str, message_id: str, body: bytes, attrs: str, at: float
) -> None:
    conn.execute(
        "INSERT INTO messages (source, message_id, body, attributes, visible_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (source, message_id, body, attrs, at),
    )


def _require_source(conn: sqlite3.Connection, source: str) -> tuple[int | None, str | None]:
    row = conn.execute(
        "SELECT max_deliveries, dead_letter FROM sources WHERE source=?", (source,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no such queue or subscription: {source}")
    return row[0], row[1]


def _move_to_dead_letter(
    conn: sqlite3.Connection, seq: int, attributes: str, *, target: str, origin: str, reason: str
) -> None:
    attrs = dead_letter_attributes(
        json.loads(attributes), reason=reason, source=origin.split("/", 1)[1]
    )
    conn.execute(
        "UPDATE messages SET source=?, attributes=?, receipt=NULL, visible_at=0 WHERE seq=?",
        (target, json.dumps(attrs, separators=(",", ":")), seq),
    )


def _lease(
    conn: sqlite3.Connection, source: Source, count: int, timeout_s: float, now: float
) -> list[Lease]:
    key = source_key(source)
    max_deliveries, dead_letter = _require_source(conn, key)
    leases: list[Lease] = []
    while len(leases) < count:
        rows = conn.execute(
            "SELECT seq, message_id, body, attributes, delivery_count FROM messages "
            "WHERE source=? AND visible_at<=? ORDER BY visible_at, seq LIMIT ?",
            (key, now, count - len(leases)),
        ).fetchall()
        if not rows:
            break
        for seq, message_id, body, attributes, delivered in rows:
            if max_deliveries is not None and dead_letter and delivered >= max_deliveries:
                reason = f"delivered {delivered} times (max_deliveries={max_deliveries})"
                _move_to_dead_letter(
                    conn, seq, attributes, target=dead_letter, origin=key, reason=reason
                )
                continue
            receipt = uuid.uuid4().hex
            conn.execute(
                "UPDATE messages SET receipt=?, visible_at=?, delivery_count=? WHERE seq=?",
                (receipt, now + timeout_s, delivered + 1, seq),
            )
            attrs = json.loads(attributes)
            leases.append(Lease(source, message_id, bytes(body), attrs, delivered + 1, receipt))
    return leases


def _has_visible(conn: sqlite3.Connection, source: str, now: float) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE source=? AND visible_at<=?)", (source, now)
    ).fetchone()
    return bool(row[0])


def _lost(lease: Lease) -> Conflict:
    return Conflict(f"lease on message {lease.message_id} is no longer held (superseded or gone)")


class SqliteMessageBus:
    """MessageBus on one SQLite file in WAL mode, shared safely by several processes."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock | None = None,
        max_subscriptions_per_topic: int | None = None,
    ) -> None:
        self.capabilities = BusCapabilities(
            max_message_bytes=MAX_MESSAGE_BYTES,
            filters_applied=True,
            filter_propagation_s=0,
            max_visibility_timeout_s=MAX_VISIBILITY_TIMEOUT_S,
            native_dead_letter=True,
            max_subscriptions_per_topic=max_subscriptions_per_topic,
        )
        self.path = path
        self.clock: Clock = clock or SystemClock()
        self._db = SqliteThread(path, schema=_SCHEMA)

    def _now(self) -> float:
        return self.clock.now().timestamp()

    # ----------------------------------------------------------------------------- queues

    async def ensure_queue(self, *, name: str, max_deliveries: int = 5) -> None:
        check_name("queue", name)
        if max_deliveries < 1:
            raise InvalidRequest("max_deliveries must be at least 1")
        key, dlq = source_key(Queue(name)), source_key(Queue(dead_letter_queue(name)))

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO sources VALUES (?, ?, ?) ON CONFLICT (source) DO UPDATE SET "
                "max_deliveries=excluded.max_deliveries, dead_letter=excluded.dead_letter",
                (key, max_deliveries, dlq),
            )
            conn.execute("INSERT OR IGNORE INTO sources VALUES (?, NULL, NULL)", (dlq,))

        await self._db.write(op)

    async def send(self, *, queue: str, message: OutboundMessage, delay_s: float = 0) -> str:
        _check_delay(delay_s)
        return await self.send_at(
            queue=queue, message=message, deliver_at=self.clock.now() + timedelta(seconds=delay_s)
        )

    async def send_at(self, *, queue: str, message: OutboundMessage, deliver_at: datetime) -> str:
        """Enqueue ``message``, invisible until ``deliver_at`` (used by ``SqliteScheduler``)."""
        attrs = _check_message(message)
        key, message_id, at = source_key(Queue(queue)), uuid.uuid4().hex, deliver_at.timestamp()

        def op(conn: sqlite3.Connection) -> None:
            _require_source(conn, key)
            _insert(conn, key, message_id, message.body, attrs, at)

        await self._db.write(op)
        return message_id

    async def withdraw(self, *, message_id: str) -> bool:
        """Delete a message never delivered yet (used by ``SqliteScheduler.cancel``)."""

        def op(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM messages WHERE message_id=? AND delivery_count=0 "
                "AND receipt IS NULL AND source LIKE 'queue/%'",
                (message_id,),
            ).rowcount

        return await self._db.write(op) > 0

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
        deadline = loop.time() + max(wait_s, 0)
        pause = POLL_MIN_S
        key = source_key(source)
        lease = partial(_lease, source=source, count=max_messages, timeout_s=visibility_timeout_s)
        while True:
            leases = await self._db.write(partial(lease, now=self._now()))
            if leases:
                return leases
            while True:  # long-poll with cheap reads; take the write lock only when worth it
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                await asyncio.sleep(min(pause, remaining))
                pause = min(pause * 1.5, POLL_MAX_S)
                if await self._db.read(partial(_has_visible, source=key, now=self._now())):
                    break

    async def ack(self, *, lease: Lease) -> None:
        key = source_key(lease.source)

        def op(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM messages WHERE receipt=? AND source=?", (lease.receipt, key)
            ).rowcount

        if await self._db.write(op) != 1:
            raise _lost(lease)

    async def release(self, *, lease: Lease, delay_s: float = 0) -> None:
        _check_delay(delay_s)
        key, at = source_key(lease.source), self._now() + delay_s

        def op(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE messages SET receipt=NULL, visible_at=? WHERE receipt=? AND source=?",
                (at, lease.receipt, key),
            ).rowcount

        if await self._db.write(op) != 1:
            raise _lost(lease)

    async def dead_letter(self, *, lease: Lease, reason: str) -> None:
        key = source_key(lease.source)

        def op(conn: sqlite3.Connection) -> None:
            _, target = _require_source(conn, key)
            row = conn.execute(
                "SELECT seq, attributes FROM messages WHERE receipt=? AND source=?",
                (lease.receipt, key),
            ).fetchone()
            if row is None:
                raise _lost(lease)
            if target is None:
                raise InvalidRequest(f"{key} is a dead-letter queue itself")
            _move_to_dead_letter(conn, row[0], row[1], target=target, origin=key, reason=reason)

        await self._db.write(op)

    # ----------------------------------------------------------------------------- topics

    async def ensure_topic(self, *, topic: str) -> None:
        check_name("topic", topic)
        dlq = source_key(Queue(dead_letter_queue(topic)))

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR IGNORE INTO topics VALUES (?)", (topic,))
            conn.execute("INSERT OR IGNORE INTO sources VALUES (?, NULL, NULL)", (dlq,))

        await self._db.write(op)

    async def publish(self, *, topic: str, message: OutboundMessage) -> str:
        (message_id,) = await self._publish(topic, [message])
        return message_id

    async def publish_many(self, *, topic: str, messages: Sequence[OutboundMessage]) -> list[str]:
        """``core.ports.message_bus.GroupPublish``: the topic's subscriptions read once,
        every copy inserted in one transaction."""
        return await self._publish(topic, messages)

    async def _publish(self, topic: str, messages: Sequence[OutboundMessage]) -> list[str]:
        checked = [(message, _check_message(message)) for message in messages]
        now = self._now()

        # Read the topic's subscriptions without the write lock, then insert one copy per
        # matching subscription, each only if that subscription still exists (a delete
        # meanwhile leaves no orphan). For the usual single match that is two statements,
        # not a five-statement transaction (the routing bench's publish).
        def subscriptions(conn: sqlite3.Connection) -> list[tuple[str | None, str | None]]:
            return conn.execute(
                "SELECT s.name, s.filter FROM topics t LEFT JOIN subscriptions s "
                "ON s.topic = t.name WHERE t.name=?",
                (topic,),
            ).fetchall()

        rows = await self._db.read(subscriptions)
        if not rows:
            raise NotFound(f"no such topic: {topic}")
        filters = [
            (name, _filter_of(filter_json))
            for name, filter_json in rows
            if name is not None and filter_json is not None
        ]
        copies: list[tuple[str, str, bytes, str, float, str]] = []
        ids: list[str] = []
        for message, attrs_json in checked:
            attributes, message_id = dict(message.attributes), uuid.uuid4().hex
            ids.append(message_id)
            for name, wanted in filters:
                if all(attributes.get(k) == v for k, v in wanted.items()):
                    key = source_key(Subscription(topic, name))
                    copies.append((key, message_id, message.body, attrs_json, now, key))

        def op(conn: sqlite3.Connection) -> None:
            for copy in copies:
                conn.execute(
                    "INSERT INTO messages (source, message_id, body, attributes, visible_at) "
                    "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM sources WHERE source=?)",
                    copy,
                )

        if len(copies) == 1:
            await self._db.write_one(op)
        elif copies:
            await self._db.write(op)
        return ids

    async def ensure_subscription(
        self, *, topic: str, name: str, filter: Mapping[str, str]
    ) -> Subscription:
        check_name("subscription", name)
        key, dlq = (
            source_key(Subscription(topic, name)),
            source_key(Queue(dead_letter_queue(topic))),
        )
        filter_json = json.dumps(dict(filter), sort_keys=True)

        limit = self.capabilities.max_subscriptions_per_topic

        def op(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM topics WHERE name=?", (topic,)).fetchone() is None:
                raise NotFound(f"no such topic: {topic}")
            if limit is not None:
                (others,) = conn.execute(
                    "SELECT COUNT(*) FROM subscriptions WHERE topic=? AND name<>?", (topic, name)
                ).fetchone()
                if others >= limit:
                    raise QuotaExceeded(
                        f"topic {topic} holds its limit of {limit} subscriptions", retry_after=60
                    )
            conn.execute(
                "INSERT INTO subscriptions VALUES (?, ?, ?) "
                "ON CONFLICT (topic, name) DO UPDATE SET filter=excluded.filter",
                (topic, name, filter_json),
            )
            conn.execute("INSERT OR IGNORE INTO sources VALUES (?, 5, ?)", (key, dlq))

        await self._db.write(op)
        return Subscription(topic, name)

    async def delete_subscription(self, *, topic: str, name: str) -> None:
        key = source_key(Subscription(topic, name))

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM subscriptions WHERE topic=? AND name=?", (topic, name))
            conn.execute("DELETE FROM sources WHERE source=?", (key,))
            conn.execute("DELETE FROM messages WHERE source=?", (key,))

        await self._db.write(op)

    async def delete_topic(self, *, topic: str) -> None:
        """Remove a topic with its subscriptions, dead-letter queue and messages (the local
        provisioner's teardown of a tenant); missing is not an error."""
        dlq = source_key(Queue(dead_letter_queue(topic)))

        def op(conn: sqlite3.Connection) -> None:
            names = conn.execute("SELECT name FROM subscriptions WHERE topic=?", (topic,))
            for source in [source_key(Subscription(topic, n)) for (n,) in names.fetchall()]:
                conn.execute("DELETE FROM sources WHERE source=?", (source,))
                conn.execute("DELETE FROM messages WHERE source=?", (source,))
            conn.execute("DELETE FROM subscriptions WHERE topic=?", (topic,))
            conn.execute("DELETE FROM sources WHERE source=?", (dlq,))
            conn.execute("DELETE FROM messages WHERE source=?", (dlq,))
            conn.execute("DELETE FROM topics WHERE name=?", (topic,))

        await self._db.write(op)

    async def topics(self) -> dict[str, list[str]]:
        """Every topic with the names of its subscriptions (what teardown tests list)."""

        def op(conn: sqlite3.Connection) -> dict[str, list[str]]:
            found: dict[str, list[str]] = {
                name: [] for (name,) in conn.execute("SELECT name FROM topics").fetchall()
            }
            for topic, name in conn.execute("SELECT topic, name FROM subscriptions").fetchall():
                found.setdefault(topic, []).append(name)
            return found

        return await self._db.read(op)

    async def close(self) -> None:
        await self._db.close()
