"""Sticky sessions: a crawl with a ``session`` leaves from the container holding it."""

from __future__ import annotations

from conductor_harness import Harness, MakeHarness, start_ready

from core.models import ContainerState, CrawlState


async def test_same_session_goes_to_the_same_container_even_when_it_is_full(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", parallel_per_container=1, max_containers=3)
    first, engine = await start_ready(harness, "t1", session="s1")
    again = await harness.submit("t1", session="s1")
    await harness.pump()
    other = await harness.submit("t1")
    await harness.pump()

    assert (await harness.crawl(again)).container_id == engine.id
    assert (await harness.container(engine.id)).in_flight == (first, again)
    assert sorted(r.crawl_id for r in await engine.runs()) == sorted([first, again])
    assert all(r.session == "s1" for r in await engine.runs())
    # a crawl without a session does not squeeze into the full container
    assert (await harness.crawl(other)).container_id not in (None, engine.id)
    binding = await harness.binding("s1")
    assert binding is not None
    assert binding.container_id == engine.id
    assert binding.egress == "local"


async def test_a_session_submitted_in_one_batch_starts_one_container(harness: Harness) -> None:
    await harness.add_tenant("t1", parallel_per_container=1, max_containers=5)
    crawls = [await harness.submit("t1", session="s1") for _ in range(4)]
    await harness.pump()  # handled concurrently: all four look for the session at once

    holders = {(await harness.crawl(c)).container_id for c in crawls}
    assert len(holders) == 1
    assert len(harness.runtime.started) == 1
    (guid,) = holders
    assert sorted((await harness.container(guid)).in_flight) == sorted(crawls)


async def test_different_sessions_get_different_containers_when_full(harness: Harness) -> None:
    await harness.add_tenant("t1", parallel_per_container=1, max_containers=3)
    one = await harness.submit("t1", session="s1")
    await harness.pump()
    two = await harness.submit("t1", session="s2")
    await harness.pump()

    a, b = (await harness.crawl(one)).container_id, (await harness.crawl(two)).container_id
    assert a is not None
    assert b not in (None, a)
    assert (await harness.binding("s1")).container_id == a  # type: ignore[union-attr]
    assert (await harness.binding("s2")).container_id == b  # type: ignore[union-attr]


async def test_after_its_container_stops_idle_the_session_rebinds(harness: Harness) -> None:
    await harness.add_tenant("t1")
    first, engine = await start_ready(harness, "t1", session="s1")
    await engine.complete(first)
    await harness.pump()
    await harness.advance(harness.settings.idle_ttl_s, beating=(engine,))
    assert (await harness.container(engine.id)).state is ContainerState.stopped
    assert await harness.binding("s1") is None

    later = await harness.submit("t1", session="s1")
    await harness.pump()

    crawl = await harness.crawl(later)
    assert crawl.container_id not in (None, engine.id)
    assert (await harness.binding("s1")).container_id == crawl.container_id  # type: ignore[union-attr]


async def test_after_its_container_dies_the_session_and_its_work_move_together(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", parallel_per_container=1)
    first, engine = await start_ready(harness, "t1", session="s1")
    second = await harness.submit("t1", session="s1")
    await harness.pump()
    await engine.exited(137)
    await harness.pump()

    moved = {(await harness.crawl(c)).container_id for c in (first, second)}
    assert len(moved) == 1
    (new_guid,) = moved
    assert new_guid not in (None, engine.id)
    assert (await harness.binding("s1")).container_id == new_guid  # type: ignore[union-attr]
    for crawl_id in (first, second):
        crawl = await harness.crawl(crawl_id)
        assert crawl.state is CrawlState.dispatched
        assert crawl.attempts == 2


async def test_a_session_waits_while_its_reaped_container_still_holds_its_work(
    make_harness: MakeHarness,
) -> None:
    """Found by the state machine: the session's container exits, its stop fails (so its
    work is not taken back yet), and the session's next crawl must not start a second
    container for the session meanwhile: the old one may still be running from its IP."""
    harness = await make_harness()
    await harness.add_tenant("t1", max_containers=3)
    first, engine = await start_ready(harness, "t1", session="s1")
    harness.runtime.fail_stops = 1
    await engine.exited(137)
    await harness.pump()
    old = await harness.container(engine.id)
    assert old.state.live  # the failed stop keeps it, with the session's crawl
    assert first in old.in_flight

    second = await harness.submit("t1", session="s1")
    await harness.pump()
    waiting = await harness.crawl(second)
    assert waiting.container_id is None
    assert "session's container" in (waiting.reason or "")
    assert [c.id for c in await harness.live()] == [engine.id]

    await harness.housekeeping()  # the stop is retried and succeeds: the work comes back
    await harness.pump()
    placed = {(await harness.crawl(c)).container_id for c in (first, second)}
    assert len(placed) == 1
    assert None not in placed
    assert placed != {engine.id}
