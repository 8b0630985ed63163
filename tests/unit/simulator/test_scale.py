"""The internet-scale model: operations counted on the real conductor, then scaled."""

from __future__ import annotations

from dataclasses import replace

from simulator.model import SimConfig, standard_policies
from simulator.scale import CLOUDS, model, profile_conductor, run_day
from simulator.trace import synthetic


def test_the_profile_counts_what_the_real_conductor_does_and_the_model_finds_the_limit() -> None:
    config = SimConfig(capacity=1, housekeeping_s=300.0)
    spec = standard_policies(config)[-1]
    small = synthetic(tenants=2, crawls=12, days=0.02, seed=4)
    prof, result = profile_conductor(small, config, spec)
    assert result.crawls == len(small.crawls)
    assert prof.messages["CrawlSubmitted"] == len(small.crawls)
    assert prof.messages["CrawlCompleted"] == len(small.crawls)
    # every submission reads its crawl and writes its dispatch; every start claims the fleet
    assert prof.ops["CrawlSubmitted"]["read"] >= len(small.crawls)
    assert prof.ops["CrawlSubmitted"]["write"] >= len(small.crawls)
    assert prof.writes_by_table["fleets"] >= result.starts

    day_trace = synthetic(tenants=20, crawls=4000, days=1, seed=5, duration_scale=4)
    day = run_day(day_trace, config, spec)
    aws = model(prof, result, day, day_trace, CLOUDS["aws"], config.runtime.price)
    assert not aws["saturated"]
    assert aws["messages_per_crawl"] > 1
    assert aws["control_plane_cost_per_1000_crawls"] > 0
    tiny = replace(
        CLOUDS["aws"], max_concurrency=1, latency_ms=dict.fromkeys(CLOUDS["aws"].latency_ms, 500.0)
    )
    starved = model(prof, result, day, day_trace, tiny, config.runtime.price)
    assert starved["saturated"]
    assert starved["saturates_first"] == "conductor concurrency"
    assert starved["worst_queue_depth"] > 0
