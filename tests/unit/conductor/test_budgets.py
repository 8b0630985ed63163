"""Budgets on the conductor's side: each threshold warned once, by a signed webhook, and at
the limit the tenant's crawls pause with reason "budget reached" (a running one once its
engine finished the pages in flight; its slot then freed), while the usage so far is kept.
The pause/resume round trip itself is in ``test_budget_pause.py``.

The webhook receiver is a real HTTP server on 127.0.0.1 (``test_webhooks.receiver``); the
conductor runs over the real local ports with a FakeClock.
"""

from __future__ import annotations

import json
import time

from conductor_harness import MakeHarness, start_ready
from test_webhooks import notifying, receiver

from core.budgets import BUDGET_KEY, Budget, budgets_table
from core.messages import CancelCrawl, PauseCrawl
from core.models import ContainerState, CrawlState, Egress
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
    # told to pause, not cancelled: the engine finishes the page in flight first
    assert (crawl.state, crawl.pause_requested) == (CrawlState.dispatched, "budget reached")
    work = await engine.work()
    pauses = [m for m in work if isinstance(m, PauseCrawl)]
    assert pauses
    assert {(m.crawl_id, m.reason) for m in pauses} == {(crawl_id, "budget reached")}
    assert not any(isinstance(m, CancelCrawl) for m in work)
    assert (await h.container(engine.id)).in_flight == (crawl_id,), "busy until it answers"

    await engine.paused(crawl_id, fetched=4)
    await h.pump()

    crawl = await h.crawl(crawl_id)
    assert (crawl.state, crawl.reason, crawl.counts.fetched) == (
        CrawlState.paused,
        "budget reached",
        4,
    )
    assert crawl.container_id is None
    assert crawl.pause_requested is None
    assert (await h.container(engine.id)).in_flight == ()
    assert await h.active_ids() == {crawl_id}, "not terminal: it can resume"
    await h.advance(300)  # idle_ttl: the container drains as usual
    assert (await h.container(engine.id)).state is ContainerState.stopped


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

    assert (await h.crawl(running)).pause_requested == "budget reached"
    assert (await h.crawl(waiting)).state is CrawlState.paused
    assert (await h.crawl(waiting)).reason == "budget reached"
    assert await h.records.backlog.query("t1") == [], "out of the backlog"
    assert len(h.runtime.started) == 1  # nothing started for the waiting one
