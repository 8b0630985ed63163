"""A small run of the fleet simulation (``conductor_sim``; ``make stress`` runs the big one):
several conductor instances with skewed clocks that die at random await points, crawls
delivered three times in shuffled order, containers that crash, hang or never come up,
stops that fail. Every figure that must be zero is zero, and the simulation did meet the
faults it is about (else a zero would prove nothing)."""

from __future__ import annotations

from pathlib import Path

from conductor_sim import SimConfig, simulate

SMALL = SimConfig(
    instances=3,
    tenants=1,
    crawls=64,  # one tenant with more pending crawls than one backlog batch (50) holds
    deliveries=3,
    death_rate=0.004,
    crash_rate=0.01,
    run_s=(1.0, 6.0),
    submit_per_s=64,
    visibility_s=30.0,
    seed=7,
)


async def test_a_small_fleet_under_faults_loses_nothing_and_runs_no_crawl_twice_at_once(
    tmp_path: Path,
) -> None:
    figures = await simulate(tmp_path, SMALL)

    assert figures.zeros == dict.fromkeys(figures.zeros, 0), figures.report()
    assert figures.instance_deaths > 0, figures.report()
    assert sum(figures.container_crashes.values()) > 0, figures.report()
    assert max(figures.skews_s) - min(figures.skews_s) > 60
    # (whether a crash hit a busy container, so that a crawl ran again, is up to chance
    # here; every re-execution there is must follow a crash: one of the zeros above)
