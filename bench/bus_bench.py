"""Message bus throughput and latency: PostgreSQL (LISTEN/NOTIFY and polling) vs SQLite.

    .venv/bin/python bench/bus_bench.py [--messages 2000] [--consumers 2] [--samples 300]
        [--rounds 3] [--only sqlite,postgres-notify,...] [--database-url URL]

Buses: ``sqlite`` (the local bus), ``postgres-notify`` (the default: receivers wake on
LISTEN/NOTIFY), ``postgres-poll`` (``notify=False``: receivers poll every 20-100 ms) and
``postgres-notify-async`` (NOTIFY, and ``synchronous_commit=off``: commits do not wait for
the disk). Two measurements per bus, in interleaved rounds (round 1 in that order, round 2
starting with the next one...), each on a fresh queue:

* **throughput**: one producer sends ``--messages`` messages one ``send`` at a time (as the
  conductor and the API do) while ``--consumers`` consumers, each on its own bus instance
  (its own SQLite connection / PostgreSQL pool), ``receive`` batches of up to 10 with a long
  poll and ``ack`` each message: messages/s from the first send to the last ack.
* **latency**: a consumer waits in a long poll (``wait_s=5``); the producer, on another bus
  instance, sends one message, waits until it is received, pauses 5-25 ms, and sends the next
  (``--samples`` times): send-to-receive time, p50 and p99. This is where waking on NOTIFY
  and polling every 20-100 ms differ.

Everything runs in this one process (one event loop) against the machine's PostgreSQL
(a scratch database created and dropped by the bench, unless ``--database-url``) and a
SQLite file in a temporary directory. The 1-minute load average is printed before and
after each measurement and stored with the figures (``bench/.work/bus-bench.json``):
on a shared machine, figures taken under load are not comparable with quiet ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.local.message_bus import SqliteMessageBus  # noqa: E402
from adapters.selfhosted.database import PostgresDatabase  # noqa: E402
from adapters.selfhosted.message_bus import PostgresMessageBus  # noqa: E402
from core.ports import MessageBus, OutboundMessage, Queue  # noqa: E402

BUSES = ("sqlite", "postgres-notify", "postgres-poll", "postgres-notify-async")
ADMIN_URL = os.environ.get(
    "SKYCRAWL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def load() -> float:
    return os.getloadavg()[0]


@contextlib.contextmanager
def scratch_database(url: str | None) -> Any:
    if url:
        yield url
        return
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = f"bench_bus_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(ADMIN_URL, dbname=name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def opener(kind: str, sqlite_path: Path, database_url: str) -> Callable[[], MessageBus]:
    def open_bus() -> MessageBus:
        if kind == "sqlite":
            return SqliteMessageBus(sqlite_path)
        database = PostgresDatabase(
            database_url, max_size=4, synchronous_commit=not kind.endswith("-async")
        )
        return PostgresMessageBus(database, notify=kind.startswith("postgres-notify"))

    return open_bus


@contextlib.asynccontextmanager
async def buses(open_bus: Callable[[], MessageBus], count: int) -> AsyncIterator[list[MessageBus]]:
    opened = [open_bus() for _ in range(count)]
    try:
        yield opened
    finally:
        for bus in opened:
            await bus.close()


async def throughput(open_bus: Callable[[], MessageBus], messages: int, consumers: int) -> float:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    async with buses(open_bus, consumers + 1) as (producer, *readers):
        await producer.ensure_queue(name=queue)
        acked = 0
        done = asyncio.Event()

        async def consume(bus: MessageBus) -> None:
            nonlocal acked
            while not done.is_set():
                leases = await bus.receive(
                    source=Queue(queue), max_messages=10, visibility_timeout_s=60, wait_s=0.5
                )
                for lease in leases:
                    await bus.ack(lease=lease)
                acked += len(leases)
                if acked >= messages:
                    done.set()

        started = time.perf_counter()
        tasks = [asyncio.create_task(consume(bus)) for bus in readers]
        for i in range(messages):
            await producer.send(queue=queue, message=OutboundMessage(body=b"m%d" % i))
        await asyncio.wait_for(done.wait(), 300)
        elapsed = time.perf_counter() - started
        await asyncio.gather(*tasks)
    return messages / elapsed


async def latency(open_bus: Callable[[], MessageBus], samples: int) -> list[float]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    rng = random.Random(7)
    async with buses(open_bus, 2) as (producer, consumer):
        await producer.ensure_queue(name=queue)
        received: asyncio.Queue[float] = asyncio.Queue()

        async def consume() -> None:
            for _ in range(samples):
                while True:
                    leases = await consumer.receive(
                        source=Queue(queue), max_messages=1, visibility_timeout_s=60, wait_s=5
                    )
                    if leases:
                        break
                received.put_nowait(time.perf_counter())
                await consumer.ack(lease=leases[0])

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)  # the consumer is in its long poll (and listening)
        times = []
        for i in range(samples):
            sent = time.perf_counter()
            await producer.send(queue=queue, message=OutboundMessage(body=b"l%d" % i))
            times.append(await asyncio.wait_for(received.get(), 10) - sent)
            await asyncio.sleep(rng.uniform(0.005, 0.025))
        await task
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    kinds = [k for k in BUSES if k in args.only.split(",")]
    results: dict[str, dict[str, list[float]]] = {
        k: {"msgs_s": [], "p50_ms": [], "p99_ms": [], "load": []} for k in kinds
    }
    with tempfile.TemporaryDirectory() as tmp, scratch_database(args.database_url) as url:
        for round_no in range(args.rounds):
            order = kinds[round_no % len(kinds) :] + kinds[: round_no % len(kinds)]
            for kind in order:
                open_bus = opener(kind, Path(tmp) / f"bus-{round_no}.sqlite3", url)
                before = load()
                rate = await throughput(open_bus, args.messages, args.consumers)
                times = await latency(open_bus, args.samples)
                after = load()
                r = results[kind]
                r["msgs_s"].append(rate)
                r["p50_ms"].append(percentile(times, 0.5) * 1000)
                r["p99_ms"].append(percentile(times, 0.99) * 1000)
                r["load"] += [before, after]
                print(
                    f"round {round_no + 1} {kind:16} {rate:8.0f} msg/s  "
                    f"p50 {r['p50_ms'][-1]:6.2f} ms  p99 {r['p99_ms'][-1]:6.2f} ms  "
                    f"load {before:.2f} -> {after:.2f}",
                    flush=True,
                )
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "messages": args.messages,
        "consumers": args.consumers,
        "samples": args.samples,
        "rounds": args.rounds,
        "results": results,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        "| bus | msgs/s | send→receive p50 ms | p99 ms | load (1 min) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind, r in report["results"].items():
        lines.append(
            f"| {kind} | {statistics.median(r['msgs_s']):,.0f} | "
            f"{statistics.median(r['p50_ms']):.2f} | {statistics.median(r['p99_ms']):.2f} | "
            f"{min(r['load']):.1f}-{max(r['load']):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(BUSES))
    parser.add_argument("--database-url", help="an existing database (default: a scratch one)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load {load():.2f} before the bench", flush=True)
    report = asyncio.run(run(args))
    print(
        f"\nmedians of {args.rounds} rounds ({args.messages} messages, {args.consumers} "
        f"consumers, {args.samples} latency samples):\n"
    )
    print(table(report))
    out = ROOT / "bench" / ".work" / "bus-bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nfigures in {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
