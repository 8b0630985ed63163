"""Budgets on the conductor's side: each threshold warned once, by a signed webhook, and at
the limit the tenant's crawls stop with reason "budget reached" (their container told, its
slot freed), while the usage so far is kept.

The webhook receiver is a real HTTP server on 127.0.0.1 (``test_webhooks.receiver``); the
conductor runs over the real local ports with a FakeClock.
"""

from __future__ import annotations

import json
import time

from conductor_harness import MakeHarness, start_ready
from test_webhooks import notifying, receiver

from core.budgets import BUDGET_KEY, Budget, budgets_table
from core.messages import CancelCrawl
from core.models import CrawlState, Egress
from core.webhook_signing import verify_signature
from core.webhooks import rotate_secret

#: 1 cent a second, billed at least 60 s: a running container has cost 0.60 at once.
FARGATE = Egress(name="fargate", cost_per_second=0.01, min_billed_s=60.0)


async def test_thresholds_are_warned_once_each_and_the_limit_stops_running_crawls(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(egresses=[FARGATE], heartbeat_timeout_s=400.0, idle_ttl_s=300.0)
    h.conductor = notifying(h)
    await h.add_tenant()
    secrets, _ = await rotate_secret(h.records, "t1", h.clock.now(), keep_old=False)
    with receiver(200) as hook:
        budget = Budget(monthly_amount=1.0, webhook_url=hook.url)
        await budgets_table(h.records).create("t1", BUDGET_KEY, budget)
        crawl_id, engine = await start_ready(h)

        await h.housekeeping()  # 0.60 spent: 50 %
        seen_at_half = len(hook.seen)
        for _ in range(30):  # 150 s: 80 % at 80 s, the limit at 100 s
            await h.advance(5, beating=(engine,))
            await h.housekeeping()

    events = [(headers["skycrawl-event"], json.loads(body)) for headers, body in hook.seen]
    assert seen_at_half == 1
    assert [(e, b["budget"]["threshold"]) for e, b in events] == [
        ("budget.warning", 50),
        ("budget.warning", 80),
        ("budget.reached", 100),
    ]
    headers, body = hook.seen[-1]
    assert verify_signature(
        secrets.current.secret, headers["skycrawl-signature"], body, now=time.time()
    )
    crawl = await h.crawl(crawl_id)
    assert crawl.state is CrawlState.cancelled
    assert crawl.reason == "budget reached"
    work = await engine.work()
    assert any(isinstance(m, CancelCrawl) and m.crawl_id == crawl_id for m in work)
    assert (await h.container(engine.id)).in_flight == ()
    assert await h.active_ids() == set()


async def test_a_crawl_submitted_at_the_limit_is_stopped_before_it_runs(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(egresses=[FARGATE])
    await h.add_tenant(max_containers=1, parallel_per_container=1)
    await budgets_table(h.records).create("t1", BUDGET_KEY, Budget(monthly_amount=0.5))
    running, _engine = await start_ready(h)  # 0.60 spent at once: over the limit
    waiting = await h.submit()  # no free slot: it waits in the backlog
    await h.pump()

    await h.housekeeping()

    assert (await h.crawl(running)).state is CrawlState.cancelled
    assert (await h.crawl(waiting)).state is CrawlState.cancelled
    assert (await h.crawl(waiting)).reason == "budget reached"
    assert len(h.runtime.started) == 1  # nothing started for the waiting one
