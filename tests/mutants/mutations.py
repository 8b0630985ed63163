"""Named mutations of the conductor: each a textual patch (file, text, replacement).

``run.py`` applies them one at a time to a temporary copy of the repository and runs the
conductor's tests there; ``test_mutations_apply.py`` checks (cheaply, in every test run)
that each patch's text still occurs exactly once in the current source, so a refactor
cannot silently turn a mutant into a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The conductor's unit tests; every mutant must be killed by them (``run.py --all``).
CONDUCTOR_TESTS = "tests/unit/conductor"
RACES = "tests/unit/conductor/test_conductor_races.py"
LIFECYCLE = "tests/unit/conductor/test_conductor_lifecycle.py"
IDEMPOTENCY = "tests/unit/conductor/test_conductor_idempotency.py"
HOLES = "tests/unit/conductor/test_conductor_holes.py"
PLACEMENT = "tests/unit/conductor/test_conductor_placement.py"
BUDGET_PAUSE = "tests/unit/conductor/test_budget_pause.py"


@dataclass(frozen=True)
class Mutation:
    """``old`` replaced by ``new`` in ``path``; ``tests``: the files that should kill it
    (what ``run.py`` runs by default, to keep a full run short)."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...] = (CONDUCTOR_TESTS,)


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "generation check removed (kill timer)",
        "core/conductor/fleet.py",
        "if current is None or current.value.generation != timer.generation:",
        "if current is None:",
        (RACES, LIFECYCLE),
    ),
    Mutation(
        "drain-before-kill removed (stop_idle drains a busy container)",
        "core/conductor/fleet.py",
        "if c.state is not ContainerState.ready or c.in_flight:",
        "if c.state is not ContainerState.ready:",
        (LIFECYCLE, RACES),
    ),
    Mutation(
        "attempt check on reports removed",
        "core/conductor/conductor.py",
        "return container_id, attempt or crawl.attempts",
        "return container_id, crawl.attempts",
        (RACES, IDEMPOTENCY),
    ),
    Mutation(
        "redelivered submit not re-sent (no relay in _on_submitted)",
        "core/conductor/conductor.py",
        "value = await self.outbox.relay(\n"
        "            self.records.crawls, msg.tenant_id, msg.crawl_id, crawl.value\n"
        "        )",
        "value = crawl.value",
        (LIFECYCLE, HOLES),
    ),
    Mutation(
        "fleet slots ignored in candidate selection",
        "core/conductor/router.py",
        "if v.value.state.live and v.value.id in in_fleet}",
        "if v.value.state.live}",
        (RACES, PLACEMENT),
    ),
    Mutation(
        "reaped reserved crawls not resubmitted",
        "core/conductor/conductor.py",
        "if crawl.state is CrawlState.pending:  # reserved, never committed: resubmit",
        "if False:",
        (RACES, LIFECYCLE),
    ),
    Mutation(
        "heartbeat timeout disabled (watchdog misses)",
        "core/conductor/fleet.py",
        "if misses >= WATCHDOG_CHECKS:",
        "if False:",
        (LIFECYCLE, HOLES),
    ),
    Mutation(
        "release arms no kill timer",
        "core/conductor/fleet.py",
        "timers = (self.kill_timer(new),) if not rest and live else ()",
        "timers = ()",
        (LIFECYCLE, RACES),
    ),
    Mutation(
        "a pause request is requeued when its container dies (not paused)",
        "core/conductor/transitions.py",
        "if crawl.state is CrawlState.dispatched and crawl.pause_requested is not None:",
        "if False:",
        (BUDGET_PAUSE,),
    ),
    Mutation(
        "a withdrawn pause is not resumed when the engine answers",
        "core/conductor/conductor.py",
        "return paused if c.pause_requested else resumed(paused, now, inbox)",
        "return paused",
        (BUDGET_PAUSE,),
    ),
)
