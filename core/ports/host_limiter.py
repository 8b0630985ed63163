"""HostLimiter port: per-host politeness shared by every crawl that may hit the same host.

The engine's in-process ``Politeness`` already holds all crawls of one container to one
per-host limit; a ``HostLimiter`` extends that to every container (of every tenant) that
shares the limiter: at most ``concurrency`` leases per host at once, and lease *start times*
at least ``gap_s`` apart (the fleet-wide ``SKYCRAWL_PER_HOST_DELAY_S``, or the host's larger
robots.txt ``Crawl-delay``), plus ``hold`` for a ``Retry-After``.

Hosts are opaque keys (the engine passes a hash of the host name, so a shared limiter holds
no tenant's host names). Leases expire after ``ttl_s``, so a container that dies holding
leases frees them without help. All times are the limiter's own clock: callers only receive
durations (``wait_s``), never timestamps to compare with theirs.

Implementations: ``adapters.local.host_limiter.SqliteHostLimiter`` (one SQLite file shared by
every engine process on a machine: the embedded stack). For the clouds the same three calls
map onto one small store reachable from tenant containers through a narrow interface, never
the conductor's state store (tenant isolation):

* Redis (ElastiCache / Azure Cache / Memorystore): ``acquire`` is one Lua script on the key
  ``host:<hash>`` (``ZREMRANGEBYSCORE`` expired leases, ``ZCARD`` against ``concurrency``,
  ``ZADD`` the lease, read-modify-write ``next_start`` with ``TIME``): one round trip
  (~0.2-0.5 ms in-region) per request, the clock is the server's;
* DynamoDB / Table storage / Firestore: one item per host holding ``next_start``, ``blocked``
  and a small lease map, updated with a conditional write on its version; ~5-10 ms and one
  write unit per request, so only worth it for hosts with a delay in force.

Both are designs, not shipped adapters: on the clouds each container runs the in-process
limiter only (``SKYCRAWL_HOST_LIMITER_PATH`` unset), which bounds a host per container.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class HostGrant:
    """The answer to ``acquire``.

    ``lease_id`` set: the request may start after ``wait_s`` seconds (its reserved start) and
    must ``release`` the lease when done. ``lease_id`` None: the host is at its concurrency
    limit; ask again after ``wait_s``.
    """

    lease_id: str | None
    wait_s: float


class HostLimiter(Protocol):
    async def acquire(
        self, *, host: str, gap_s: float, concurrency: int, ttl_s: float
    ) -> HostGrant:
        """Reserve a request start to ``host``: at most ``concurrency`` unexpired leases, and
        starts at least ``gap_s`` apart (and not before a ``hold``)."""
        ...

    async def release(self, *, lease_id: str) -> None:
        """The request of this lease ended (unknown or expired leases are fine)."""
        ...

    async def hold(self, *, host: str, seconds: float) -> None:
        """No lease of ``host`` starts within the next ``seconds`` (a ``Retry-After``)."""
        ...

    async def close(self) -> None: ...
