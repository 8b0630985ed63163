"""Named mutations of the conductor: each a textual patch (file, text, replacement).

``run.py`` applies them one at a time to a temporary copy of the repository and runs the
conductor's tests there; ``test_mutations_apply.py`` checks (cheaply, in every test run)
that each patch's text still occurs exactly once in the current source, so a refactor
cannot silently turn a mutant into a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "generation check removed (kill timer)",
        "core/conductor/fleet.py",
        "if current is None or current.value.generation != timer.generation:",
        "if current is None:",
    ),
    Mutation(
        "drain-before-kill removed (stop_idle drains a busy container)",
        "core/conductor/fleet.py",
        "if c.state is not ContainerState.ready or c.in_flight:",
        "if c.state is not ContainerState.ready:",
    ),
    Mutation(
        "attempt check on reports removed",
        "core/conductor/conductor.py",
        "return container_id, attempt or crawl.attempts",
        "return container_id, crawl.attempts",
    ),
    Mutation(
        "redelivered submit not re-sent (no relay in _on_submitted)",
        "core/conductor/conductor.py",
        "value = await self.outbox.relay(\n"
        "            self.records.crawls, msg.tenant_id, msg.crawl_id, crawl.value\n"
        "        )",
        "value = crawl.value",
    ),
    Mutation(
        "fleet slots ignored in candidate selection",
        "core/conductor/router.py",
        "candidates = tuple(c for c in containers if c.id in set(slots))",
        "candidates = tuple(containers)",
    ),
    Mutation(
        "reaped reserved crawls not resubmitted",
        "core/conductor/conductor.py",
        "if crawl.state is CrawlState.pending:  # reserved, never committed: resubmit",
        "if False:",
    ),
    Mutation(
        "heartbeat timeout disabled (watchdog misses)",
        "core/conductor/fleet.py",
        "if misses >= WATCHDOG_CHECKS:",
        "if False:",
    ),
    Mutation(
        "release arms no kill timer",
        "core/conductor/fleet.py",
        "timers = (self.kill_timer(new),) if not rest and live else ()",
        "timers = ()",
    ),
)
