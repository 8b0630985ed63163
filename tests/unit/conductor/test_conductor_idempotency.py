"""Every handler is idempotent: a duplicate delivery changes nothing. Garbage is dead-lettered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from conductor_harness import FakeEngine, Harness, MakeHarness, kill_timers, start_ready

from core.conductor import Conductor
from core.messages import (
    CancelCrawl,
    CrawlCompleted,
    RunCrawl,
    WebhookDue,
    decode_inbox,
    encode,
)
from core.models import ContainerState, Crawl, CrawlCounts, CrawlState
from core.ports import ContainerSpec, OutboundMessage

Scenario = Callable[[Harness], Awaitable[tuple[OutboundMessage, list[FakeEngine]]]]


async def _submitted_waiting(h: Harness) -> tuple[OutboundMessage, list[FakeEngine]]:
    crawl_id = await h.submit()
    await h.pump()
    engine = h.engine(h.runtime.started_ids[0])
    await engine.subscribe()
    return _last_about(h, crawl_id, "crawl.submitted"), [engine]


async def _submitted_running(h: Harness) -> tuple[OutboundMessage, list[FakeEngine]]:
    crawl_id, engine = await start_ready(h)
    return _last_about(h, crawl_id, "crawl.submitted"), [engine]


async def _ready(h: Harness) -> tuple[OutboundMessage, list[FakeEngine]]:
    await h.submit()
    await h.submit()
    await h.pump()
    engine = h.engine(h.runtime.started_ids[0])
    message = await engine.ready()
    await h.pump()
    return message, [engine]


async def _progress(h: Harness) -> tuple[OutboundMessage, list[FakeEngine]]:
    crawl_id, engine = await start_ready(h)
    message = await engine.progress(crawl_id, fetched=7)
    await h.pump()
    assert (await h.crawl(crawl_id)).counts.fetched == 7
    return message, [engine]


async def _paused(h: Harness) -> tuple[OutboundMessage, list[FakeEngine]]:
    crawl_id, engine = await start_ready(h)
    assert await h.conductor.budget.stop_crawls("t1") == 1  # what the budget's limit does
    message = await engine.paused(crawl_id)
    await h.pump()
    assert (await h.crawl(crawl_id)).state is CrawlState.paused
    return message, [engine]


async def _completed(h: Harness) -> tuple[OutboundMessage, list[FakeEngine]]:
    crawl_id, engine = await start_ready(h)
    await h.submit()  # waits in the backlog (one container, one slot)
    await h.pump()
    message = await engine.complete(crawl_id)
    await h.pump()
    return message, [engine]


async def _failed(h: Harness) -> tuple[OutboundMessage, list[FakeEngine]]:
    crawl_id, engine = await start_ready(h)
    message = await engine.fail(crawl_id, retryable=False)
    await h.pump()
    return message, [engine]


async def _heartbeat(h: Harness) -> tuple[OutboundMessage, list[FakeEngine]]:
    _, engine = await start_ready(h)
    h.clock.advance(3)
    message = await engine.heartbeat()
    await h.pump()
    return message, [engine]


async def _kill_timer(h: Harness) -> tuple[OutboundMessage, list[FakeEngine]]:
    crawl_id, engine = await start_ready(h)
    await engine.complete(crawl_id)
    await h.pump()
    await h.advance(h.settings.idle_ttl_s)
    assert h.runtime.stopped == [engine.id]
    return h.scheduler.scheduled[-1][1], [engine]


async def _exited(h: Harness) -> tuple[OutboundMessage, list[FakeEngine]]:
    _, engine = await start_ready(h)
    message = await engine.exited(1)
    await h.pump()
    fresh = h.engine(h.runtime.started_ids[-1])
    await fresh.subscribe()
    return message, [engine, fresh]


async def _cancel_requested(h: Harness) -> tuple[OutboundMessage, list[FakeEngine]]:
    crawl_id, engine = await start_ready(h)
    await h.submit()  # waits for the slot the cancel frees
    await h.pump()
    await h.cancel("t1", crawl_id)
    await h.pump()
    return h.sent[-1], [engine]


async def _webhook(h: Harness) -> tuple[OutboundMessage, list[FakeEngine]]:
    crawl_id, engine = await start_ready(h, webhook_url="https://hooks.example.com/done")
    await engine.complete(crawl_id)
    await h.pump()
    return encode(WebhookDue(tenant_id="t1", crawl_id=crawl_id)), [engine]


def _last_about(h: Harness, crawl_id: str, kind: str) -> OutboundMessage:
    return next(
        m for m in reversed(h.sent) if m.attributes["type"] == kind and crawl_id.encode() in m.body
    )


SCENARIOS: dict[str, Scenario] = {
    "crawl.submitted (waiting for ready)": _submitted_waiting,
    "crawl.submitted (running)": _submitted_running,
    "container.ready": _ready,
    "crawl.progress": _progress,
    "crawl.completed": _completed,
    "crawl.paused": _paused,
    "crawl.failed": _failed,
    "container.heartbeat": _heartbeat,
    "container.kill-timer": _kill_timer,
    "container.exited": _exited,
    "crawl.cancel-requested": _cancel_requested,
    "crawl.webhook": _webhook,
}


async def _work(engines: list[FakeEngine]) -> set[tuple[str, str, str, int]]:
    seen = set()
    for engine in engines:
        for message in await engine.work():
            attempt = message.attempt if isinstance(message, RunCrawl) else 0
            seen.add((engine.id, message.type, message.crawl_id, attempt))
    return seen


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_a_duplicate_delivery_changes_nothing(harness: Harness, scenario: Scenario) -> None:
    await harness.add_tenant("t1", max_containers=2, parallel_per_container=1)
    message, engines = await scenario(harness)
    before = await harness.snapshot()
    work_before = await _work(engines)
    assert decode_inbox(message.body)  # a real inbox message, delivered once already

    await harness.resend(message)
    await harness.pump()

    assert await harness.snapshot() == before
    # a run may be repeated (containers drop runs they have), never a new dispatch or cancel
    assert await _work(engines) <= {w for w in work_before if w[1] == "crawl.run"}
    assert await harness.dead_letters() == []


async def test_a_duplicate_retryable_failure_does_not_cost_another_attempt(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    await engine.runs()
    message = await engine.fail(crawl_id, retryable=True)
    await harness.resend(message)  # right behind the original

    await harness.pump(batch=1)

    crawl = await harness.crawl(crawl_id)
    assert crawl.state is CrawlState.dispatched
    assert crawl.attempts == 2
    assert [(r.crawl_id, r.attempt) for r in await engine.runs()] == [(crawl_id, 2)]


async def test_a_duplicate_webhook_keeps_the_payload(harness: Harness) -> None:
    delivered: list[Crawl] = []

    async def notify(crawl: Crawl, *, attempt: int = 1) -> None:
        delivered.append(crawl)

    conductor = Conductor(
        ports=harness.ports, settings=harness.settings, engine_env={}, notifier=notify
    )
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness, webhook_url="https://hooks.example.com/done")
    await engine.complete(crawl_id)
    await harness.pump(conductor)
    assert [(c.id, c.state) for c in delivered] == [(crawl_id, CrawlState.completed)]

    await harness.send(WebhookDue(tenant_id="t1", crawl_id=crawl_id))
    await harness.pump(conductor)

    assert all(c == delivered[0] for c in delivered)  # webhooks are at-least-once


async def test_a_cancel_is_sent_to_the_container_once(harness: Harness) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    await engine.runs()
    await harness.cancel("t1", crawl_id)
    await harness.resend(harness.sent[-1])  # redelivered right behind the original

    await harness.pump(batch=1)

    assert await engine.work() == [
        CancelCrawl(container_id=engine.id, tenant_id="t1", crawl_id=crawl_id)
    ]


async def test_a_duplicate_kill_timer_of_a_restarted_container_is_ignored(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    await engine.complete(crawl_id)
    await harness.pump()
    _, timer = kill_timers(harness)[-1]
    later = await harness.submit()
    await harness.pump()
    await harness.advance(harness.settings.idle_ttl_s, beating=(engine,))

    await harness.send(timer)
    await harness.pump()

    assert harness.runtime.stopped == []
    assert (await harness.container(engine.id)).in_flight == (later,)
    assert (await harness.container(engine.id)).state is ContainerState.ready


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b'{"type": "crawl.submitted"}',
        b'{"type": "crawl.teleported", "tenant_id": "t1"}',
        b"\xff\xfe\x00",
    ],
    ids=["text", "missing-fields", "unknown-type", "binary"],
)
async def test_an_undecodable_inbox_message_is_dead_lettered_with_a_reason(
    harness: Harness, body: bytes
) -> None:
    await harness.add_tenant("t1")
    await harness.resend(OutboundMessage(body=body, attributes={"type": "?"}))
    crawl_id = await harness.submit()  # the inbox keeps flowing behind it

    await harness.pump()

    ((attributes, dead),) = await harness.dead_letters()
    assert dead == body
    assert attributes["dead_letter_reason"].startswith("undecodable inbox message")
    assert attributes["dead_letter_source"] == harness.settings.inbox_queue
    assert (await harness.crawl(crawl_id)).state is CrawlState.dispatched


async def test_a_message_whose_lease_ran_out_while_handled_does_not_break_the_batch(
    harness: Harness,
) -> None:
    other = harness.another_conductor()
    await harness.add_tenant("t1", parallel_per_container=2)

    async def slow_start(spec: ContainerSpec) -> None:  # slower than the inbox lease (120 s)
        harness.runtime.on_start = None
        harness.clock.advance(121)
        await harness.pump(other)  # meanwhile the other instance gets the message again

    harness.runtime.on_start = slow_start
    crawl_id = await harness.submit()
    later = await harness.submit()

    assert await harness.pump() == 2  # the lost lease of the first is no error of the batch

    for crawl in (crawl_id, later):
        assert (await harness.crawl(crawl)).state is CrawlState.dispatched
    assert await harness.pump() == 0
    assert await harness.dead_letters() == []


async def test_a_late_report_of_an_earlier_attempt_does_not_end_the_current_one(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    await engine.runs()
    await engine.fail(crawl_id, retryable=True)  # attempt 1 fails …
    await harness.pump()
    assert [(r.crawl_id, r.attempt) for r in await engine.runs()] == [(crawl_id, 2)]
    stale = CrawlCompleted(
        container_id=engine.id, tenant_id="t1", crawl_id=crawl_id, attempt=1, counts=CrawlCounts()
    )
    await harness.send(stale)  # … and a report about attempt 1 arrives late
    await harness.pump()

    crawl = await harness.crawl(crawl_id)
    assert crawl.state is CrawlState.dispatched
    assert crawl.attempts == 2
    assert crawl_id in (await harness.container(engine.id)).in_flight


async def test_a_retryable_failure_on_the_last_attempt_is_dead_lettered_with_a_reason(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(max_attempts=2)
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness)
    for _ in range(2):
        await engine.runs()
        await engine.fail(crawl_id, retryable=True, error="proxy refused")
        await harness.pump()

    crawl = await harness.crawl(crawl_id)
    assert crawl.state is CrawlState.dead_lettered
    assert crawl.reason is not None
    assert "proxy refused" in crawl.reason
    assert "2 attempts" in crawl.reason
