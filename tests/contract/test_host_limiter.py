"""HostLimiter contract: leases per host, reserved start gaps, holds, expiry, sharing.

Run against ``SqliteHostLimiter`` (two instances on one file standing for two processes) and
``PostgresHostLimiter`` (two instances, each with its own connection pool, on one database);
the cloud designs are in ``core/ports/host_limiter.py``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.local.host_limiter import SqliteHostLimiter
from core.ports.host_limiter import HostLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def _postgres_pair(clock: Clock) -> tuple[HostLimiter, HostLimiter]:
    """Two limiters with a pool each on the shared scratch database, its limits emptied
    (the tests reuse host names)."""
    from adapters.selfhosted.database import PostgresDatabase
    from adapters.selfhosted.host_limiter import PostgresHostLimiter
    from tests.integration.selfhosted.postgres import shared_url

    scratch = PostgresDatabase(shared_url(), max_size=1)
    async with scratch.connection("truncate") as conn:
        await conn.execute("TRUNCATE host_limits, host_leases")
    await scratch.close()

    def one() -> PostgresHostLimiter:
        return PostgresHostLimiter(PostgresDatabase(shared_url(), max_size=2), clock=clock)

    return one(), one()


@pytest.fixture(params=["sqlite", "postgres"])
async def pair(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[tuple[HostLimiter, HostLimiter]]:
    if request.param == "postgres":
        first, second = await _postgres_pair(clock)
    else:
        path = tmp_path / "limits" / "hosts.sqlite3"
        first, second = SqliteHostLimiter(path, clock=clock), SqliteHostLimiter(path, clock=clock)
    yield first, second
    await first.close()
    await second.close()


async def test_start_times_are_reserved_gap_apart_across_instances(pair, clock: Clock) -> None:
    a, b = pair
    waits = []
    for limiter in (a, b, a, b):
        grant = await limiter.acquire(host="h", gap_s=2.0, concurrency=10, ttl_s=60)
        assert grant.lease_id is not None
        waits.append(grant.wait_s)
    assert waits == [0.0, 2.0, 4.0, 6.0]
    other = await b.acquire(host="other", gap_s=2.0, concurrency=10, ttl_s=60)
    assert other.wait_s == 0.0  # hosts are independent


async def test_concurrency_is_shared_and_freed_by_release(pair) -> None:
    a, b = pair
    first = await a.acquire(host="h", gap_s=0, concurrency=2, ttl_s=60)
    second = await b.acquire(host="h", gap_s=0, concurrency=2, ttl_s=60)
    full = await a.acquire(host="h", gap_s=0, concurrency=2, ttl_s=60)
    assert first.lease_id
    assert second.lease_id
    assert full.lease_id is None
    assert full.wait_s > 0
    await b.release(lease_id=second.lease_id)
    again = await a.acquire(host="h", gap_s=0, concurrency=2, ttl_s=60)
    assert again.lease_id is not None
    await a.release(lease_id="no-such-lease")  # unknown leases are fine


async def test_leases_of_a_dead_process_expire(pair, clock: Clock) -> None:
    a, b = pair
    held = await a.acquire(host="h", gap_s=0, concurrency=1, ttl_s=30)
    assert held.lease_id is not None
    assert (await b.acquire(host="h", gap_s=0, concurrency=1, ttl_s=30)).lease_id is None
    clock.now += 31
    assert (await b.acquire(host="h", gap_s=0, concurrency=1, ttl_s=30)).lease_id is not None


async def test_hold_delays_every_instance(pair, clock: Clock) -> None:
    a, b = pair
    await a.hold(host="h", seconds=5)
    grant = await b.acquire(host="h", gap_s=0, concurrency=4, ttl_s=60)
    assert grant.wait_s == pytest.approx(5.0)
    await a.hold(host="h", seconds=1)  # a shorter hold never shortens a longer one
    assert (await b.acquire(host="h", gap_s=0, concurrency=4, ttl_s=60)).wait_s == pytest.approx(
        5.0
    )
    clock.now += 6
    assert (await a.acquire(host="h", gap_s=0, concurrency=4, ttl_s=60)).wait_s == 0.0


async def test_leases_of_a_killed_process_are_freed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "hosts.sqlite3"
    script = (
        "import asyncio, os, signal, sys\n"
        "from pathlib import Path\n"
        "from adapters.local.host_limiter import SqliteHostLimiter\n"
        "async def main():\n"
        f"    limiter = SqliteHostLimiter(Path({str(path)!r}))\n"
        "    grant = await limiter.acquire(host='h', gap_s=0, concurrency=1, ttl_s=600)\n"
        "    assert grant.lease_id\n"
        "    os.kill(os.getpid(), signal.SIGKILL)  # dies holding the lease\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=Path(__file__).resolve().parents[2]
    )
    assert await proc.wait() == -signal.SIGKILL
    limiter = SqliteHostLimiter(path)
    try:
        grant = await limiter.acquire(host="h", gap_s=0, concurrency=1, ttl_s=600)
        assert grant.lease_id is not None  # not blocked for the dead lease's 600 s
    finally:
        await limiter.close()
