"""The idle policy's records: each tenant's idle-gap histogram, the gap it has open.

``core.conductor.idle_policy`` decides; this module reads and writes what it decides from
(the ``idle`` table, one ``IdleStats`` per tenant), every write a compare-and-set:

* a container's idle gap ends when work is reserved on it: the edges its kill-timer chain
  passed (``Container.idle_bin``) are folded into the histogram;
* a container stopped idle opens the tenant's gap at its keep-alive; each housekeeping run
  adds one ``timer_period_s`` to it (a count of runs, not a clock); the next container
  started for work — or the first crawl on a pre-warmed one — closes it into the histogram;
* housekeeping asks ``tick`` whether the plan wants a container started ahead of the
  predicted arrival (once per open gap).

Only the adaptive policy measures; under ``fixed`` and ``break_even`` nothing here reads or
writes the state store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.conductor.idle_policy import EDGES_S, IdlePolicy, KeepAlive, start_latency
from core.errors import Conflict
from core.models import Container, Egress
from core.records import IdleStats, Records

KEY = "idle"


@dataclass(frozen=True, slots=True)
class Prewarm:
    """Start ``count`` containers in ``egress`` now (as many as stopped idle in the gap:
    a tenant whose bursts need four gets four), each kept ``keep_s`` if no work comes."""

    egress: Egress
    keep_s: float
    count: int = 1


class IdleGaps:
    def __init__(
        self,
        *,
        records: Records,
        policy: IdlePolicy,
        egresses: list[Egress],
        typical_start_s: Callable[[Egress], float],
    ) -> None:
        self._records = records
        self.policy = policy
        self._egresses = egresses
        self._typical = typical_start_s

    def latency(self, egress: Egress) -> float:
        return start_latency(egress, self._typical(egress))

    async def stats(self, tenant_id: str) -> IdleStats | None:
        """The tenant's histogram, or None (also: the policy does not measure)."""
        if not self.policy.measures:
            return None
        found = await self._records.idle.get(tenant_id, KEY)
        return None if found is None else found.value

    def decide(self, container: Container, stats: IdleStats | None) -> KeepAlive:
        return self.policy.decide(stats, self.latency(container.egress))

    def went_idle(self, container: Container, stats: IdleStats | None) -> Container:
        """``container`` as it becomes idle: its keep-alive chosen, its gap counter reset. A
        pre-warmed container that never had work keeps the window it was started with."""
        keep = container.keep_alive_s
        if not (container.prewarm and keep is not None):
            keep = self.decide(container, stats).keep_alive_s
        return container.model_copy(update={"keep_alive_s": keep, "idle_bin": 0})

    async def _change(
        self, tenant_id: str, change: Callable[[IdleStats], IdleStats | None]
    ) -> None:
        for _ in range(20):
            _, changed = await self._records.idle.mutate(tenant_id, KEY, change)
            if changed or await self._records.idle.get(tenant_id, KEY) is not None:
                return
            new = change(IdleStats(tenant_id=tenant_id))
            if new is None:
                return
            try:
                await self._records.idle.create(tenant_id, KEY, new)
                return
            except Conflict:  # created meanwhile: change that one
                continue

    async def observe(self, container: Container, idle_bin: int) -> None:
        """A container's idle gap ended after passing ``idle_bin`` histogram edges."""
        if not self.policy.measures:
            return
        gap = 0.0 if idle_bin <= 0 else EDGES_S[min(idle_bin, len(EDGES_S)) - 1]
        lat = self.latency(container.egress)
        await self._change(container.tenant_id, lambda s: self.policy.observe(s, gap, lat))

    async def open(self, container: Container) -> None:
        """A container stopped idle: the tenant's gap opens (the first one's keep-alive is
        its length so far); each further one stopped meanwhile is counted."""
        if not self.policy.measures or container.keep_alive_s is None:
            return
        opened = container.keep_alive_s

        def start(s: IdleStats) -> IdleStats | None:
            if s.open_s is not None:
                return s.model_copy(update={"open_count": s.open_count + 1})
            update = {
                "open_s": opened,
                "open_egress": container.egress.name,
                "prewarmed": False,
                "open_count": 1,
            }
            return s.model_copy(update=update)

        await self._change(container.tenant_id, start)

    async def close(self, tenant_id: str, egress: Egress) -> None:
        """Work came for a tenant whose gap was open: fold its length in."""
        if not self.policy.measures:
            return
        lat = self.latency(egress)

        def end(s: IdleStats) -> IdleStats | None:
            if s.open_s is None:
                return None
            folded = self.policy.observe(s, s.open_s, lat)
            return folded.model_copy(update={"open_s": None, "open_egress": None, "open_count": 0})

        found = await self._records.idle.get(tenant_id, KEY)
        if found is not None and found.value.open_s is not None:
            await self._records.idle.mutate(tenant_id, KEY, end)

    async def tick(self, tenant_id: str, period_s: float) -> Prewarm | None:
        """One housekeeping run: the open gap grows by ``period_s``; a pre-warm when the
        plan's moment falls before the next run (once per gap)."""
        if not self.policy.measures:
            return None
        found = await self._records.idle.get(tenant_id, KEY)
        if found is None or found.value.open_s is None:
            return None
        egress = next((e for e in self._egresses if e.name == found.value.open_egress), None)
        if egress is None:
            egress = min(self._egresses, key=lambda e: e.cost_per_second)
        lat = self.latency(egress)
        plan = self.policy.decide(found.value, lat)
        wanted: list[Prewarm] = []

        def grow(s: IdleStats) -> IdleStats | None:
            wanted.clear()
            if s.open_s is None:
                return None
            now_s = s.open_s + period_s
            if now_s >= EDGES_S[-1]:  # out of the histogram's range: count it, stop counting
                folded = self.policy.observe(s, now_s, lat)
                closed = {"open_s": None, "open_egress": None, "open_count": 0}
                return folded.model_copy(update=closed)
            update: dict[str, object] = {"open_s": now_s}
            due = None if plan.prewarm_at_s is None else plan.prewarm_at_s - lat
            if due is not None and not s.prewarmed and now_s + period_s > due:
                early = max(0.0, due - now_s)  # ready this much before the plan's moment
                wanted.append(Prewarm(egress, plan.prewarm_keep_s + early, max(1, s.open_count)))
                update["prewarmed"] = True
            return s.model_copy(update=update)

        _, changed = await self._records.idle.mutate(tenant_id, KEY, grow)
        return wanted[-1] if changed and wanted else None
