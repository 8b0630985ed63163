"""Where a crawl goes: a new container, a ready or starting one, or the tenant's backlog."""

from __future__ import annotations

from conductor_harness import Harness, MakeHarness, start_ready

from core.messages import CrawlSubmitted
from core.models import ContainerState, CrawlState, Egress


async def submit_and_pump(harness: Harness, tenant_id: str = "t1") -> str:
    crawl_id = await harness.submit(tenant_id)
    await harness.pump()
    return crawl_id


async def test_a_crawl_with_nowhere_to_go_starts_a_container_with_guid_and_connections(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1")
    crawl_id = await harness.submit("t1")
    await harness.pump()

    assert len(harness.runtime.started) == 1
    spec = harness.runtime.started[0]
    guid = spec.container_id
    assert spec.tenant_id == "t1"
    assert spec.egress.name == "local"
    assert spec.image == "skycrawl-engine:test"
    assert spec.env["SKYCRAWL_CONTAINER_ID"] == guid
    assert spec.env["SKYCRAWL_TENANT_ID"] == "t1"
    assert spec.env["SKYCRAWL_INBOX_QUEUE"] == "inbox"
    assert spec.env["SKYCRAWL_DISPATCH_TOPIC"] == "dispatch-t1"  # the tenant's own topic
    # the local connection settings (engine_env) reach the engine unchanged
    assert spec.env["SKYCRAWL_PROVIDER"] == "local"
    assert spec.env["SKYCRAWL_LOCAL_DATA_DIR"] == str(harness.root.resolve())
    assert spec.env["SKYCRAWL_ALLOW_CIDRS"] == "127.0.0.0/8"
    # the crawl waits, persisted, reserved on the starting container
    container = await harness.container(guid)
    assert container.state is ContainerState.starting
    assert container.in_flight == (crawl_id,)
    crawl = await harness.crawl(crawl_id)
    assert crawl.state is CrawlState.dispatched
    assert crawl.container_id == guid
    assert await harness.fleet() == (guid,)


async def test_proxy_of_the_egress_is_passed_to_the_container(make_harness: MakeHarness) -> None:
    harness = await make_harness(
        egresses=[Egress(name="plain"), Egress(name="proxied", proxy_url="http://proxy:3128")]
    )
    await harness.add_tenant("t1")
    await harness.submit("t1", egress="proxied")
    await harness.pump()

    (spec,) = harness.runtime.started
    assert spec.egress.name == "proxied"
    assert spec.env["SKYCRAWL_EGRESS_NAME"] == "proxied"
    assert spec.env["SKYCRAWL_PROXY_URL"] == "http://proxy:3128"


async def test_no_work_is_sent_before_ready_and_all_reserved_work_after(harness: Harness) -> None:
    await harness.add_tenant("t1", parallel_per_container=3)
    first = await harness.submit("t1")
    await harness.pump()
    guid = harness.runtime.started_ids[0]
    engine = harness.engine(guid)
    await engine.subscribe()  # the subscription exists, but the container has not said ready
    second = await harness.submit("t1")
    await harness.pump()

    assert await engine.work() == []
    assert (await harness.container(guid)).in_flight == (first, second)

    await engine.ready()
    await harness.pump()

    runs = await engine.runs()
    assert sorted((r.crawl_id, r.attempt) for r in runs) == sorted([(first, 1), (second, 1)])
    assert all(r.container_id == guid and r.tenant_id == "t1" for r in runs)
    container = await harness.container(guid)
    assert container.state is ContainerState.ready
    assert container.egress_ip == "203.0.113.7"


async def test_work_goes_only_to_the_subscription_of_its_container(harness: Harness) -> None:
    await harness.add_tenant("t1", parallel_per_container=2, max_containers=2)
    await harness.add_tenant("t2")
    a1, a2, b1, other = [await submit_and_pump(harness, t) for t in ("t1", "t1", "t1", "t2")]
    crawls = {c: await harness.crawl(c) for c in (a1, a2, b1)}
    guid_a = crawls[a1].container_id
    guid_b = crawls[b1].container_id
    assert guid_a is not None
    assert guid_b is not None
    assert crawls[a2].container_id == guid_a != guid_b  # two fit on A, the third starts B
    other_guid = (await harness.crawl(other, "t2")).container_id
    assert other_guid is not None
    engine_a, engine_b = harness.engine(guid_a), harness.engine(guid_b)
    engine_other = harness.engine(other_guid, "t2")
    for engine in (engine_a, engine_b, engine_other):
        await engine.subscribe()

    await engine_a.ready()
    await harness.pump()

    assert sorted(r.crawl_id for r in await engine_a.runs()) == sorted([a1, a2])
    assert await engine_b.work() == []
    assert await engine_other.work() == []

    await engine_b.ready()
    await engine_other.ready()
    await harness.pump()

    assert [r.crawl_id for r in await engine_b.runs()] == [b1]
    assert [(r.crawl_id, r.tenant_id) for r in await engine_other.runs()] == [(other, "t2")]
    assert await engine_a.work() == []
    assert engine_a.foreign == engine_b.foreign == engine_other.foreign == []


async def test_concurrent_submissions_at_the_limit_use_the_room_of_containers_started_meanwhile(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", parallel_per_container=2, max_containers=2)
    crawls = [await harness.submit("t1") for _ in range(3)]
    await harness.pump()  # one batch: all three see no container and try to start one

    assert len(harness.runtime.started) == 2
    for crawl_id in crawls:
        assert (await harness.crawl(crawl_id)).state is CrawlState.dispatched
    assert sorted(len(c.in_flight) for c in await harness.live()) == [1, 2]


async def test_a_new_crawl_goes_to_the_least_loaded_container_with_a_free_slot(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", parallel_per_container=3, max_containers=3)
    a = [await submit_and_pump(harness) for _ in range(3)]  # fills container A
    b = [await submit_and_pump(harness) for _ in range(2)]
    guid_a = (await harness.crawl(a[0])).container_id
    guid_b = (await harness.crawl(b[0])).container_id
    assert guid_a is not None
    assert guid_b not in (None, guid_a)
    assert {(await harness.crawl(c)).container_id for c in a} == {guid_a}
    assert {(await harness.crawl(c)).container_id for c in b} == {guid_b}
    engine_a = harness.engine(guid_a)
    await engine_a.ready()
    await harness.pump()
    assert sorted(r.crawl_id for r in await engine_a.runs()) == sorted(a)
    for crawl_id in a[:2]:
        await engine_a.complete(crawl_id)
    await harness.pump()  # A now runs 1, B 2

    nxt = await harness.submit("t1")
    await harness.pump()
    assert (await harness.crawl(nxt)).container_id == guid_a
    assert [r.crawl_id for r in await engine_a.runs()] == [nxt]  # A is ready: sent at once

    then = await submit_and_pump(harness)  # 2 and 2: either, and no third container
    last = await submit_and_pump(harness)  # 3 and 2 (or 2 and 3): the other one
    placed = {(await harness.crawl(c)).container_id for c in (then, last)}
    assert placed == {guid_a, guid_b}
    assert len(harness.runtime.started) == 2
    loads = sorted(len(c.in_flight) for c in await harness.live())
    assert loads == [3, 3]


async def test_scale_out_one_container_per_crawl_at_parallel_limit_one(harness: Harness) -> None:
    await harness.add_tenant("t1", parallel_per_container=1, max_containers=5)
    crawls = [await harness.submit("t1") for _ in range(3)]
    await harness.pump()  # one batch: the three are handled concurrently

    assert len(harness.runtime.started) == 3
    live = await harness.live()
    assert sorted(c.in_flight for c in live) == sorted((c,) for c in crawls)
    assert len({(await harness.crawl(c)).container_id for c in crawls}) == 3


async def test_at_the_container_limit_a_crawl_waits_and_is_placed_when_a_slot_frees(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", parallel_per_container=1, max_containers=1)
    first, engine = await start_ready(harness, "t1")
    waiting = await submit_and_pump(harness)

    assert len(harness.runtime.started) == 1
    crawl = await harness.crawl(waiting)
    assert crawl.state is CrawlState.pending
    assert crawl.container_id is None
    assert waiting in await harness.active_ids()
    assert [r.crawl_id for r in await engine.runs()] == [first]

    await engine.complete(first)
    await harness.pump()

    crawl = await harness.crawl(waiting)
    assert crawl.state is CrawlState.dispatched
    assert crawl.container_id == engine.id
    assert [r.crawl_id for r in await engine.runs()] == [waiting]
    assert len(harness.runtime.started) == 1


async def test_backlog_is_placed_as_soon_as_an_idle_container_stops(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(egresses=[Egress(name="east"), Egress(name="west")])
    await harness.add_tenant("t1", max_containers=1)
    first, engine = await start_ready(harness, "t1", egress="east")
    await engine.complete(first)
    await harness.pump()
    west = await harness.submit("t1", egress="west")  # the only slot holds an idle east one
    await harness.pump()
    assert (await harness.crawl(west)).state is CrawlState.pending

    await harness.advance(harness.settings.idle_ttl_s)  # the kill timer fires; no housekeeping

    assert (await harness.container(engine.id)).state is ContainerState.stopped
    crawl = await harness.crawl(west)
    assert crawl.state is CrawlState.dispatched
    assert harness.runtime.spec(crawl.container_id or "").egress.name == "west"


async def test_a_crawl_for_an_unknown_egress_fails_with_a_reason(harness: Harness) -> None:
    await harness.add_tenant("t1")
    crawl_id = await harness.submit("t1", egress="mars")
    await harness.pump()

    crawl = await harness.crawl(crawl_id)
    assert crawl.state is CrawlState.failed
    assert "unknown egress 'mars'" in (crawl.reason or "")
    assert harness.runtime.started == []
    assert crawl_id not in await harness.active_ids()


async def test_a_submission_for_an_unknown_crawl_is_dropped(harness: Harness) -> None:
    await harness.add_tenant("t1")
    await harness.send(CrawlSubmitted(tenant_id="t1", crawl_id="cr_" + "f" * 32))
    await harness.pump()

    assert harness.runtime.started == []
    assert await harness.dead_letters() == []


# --------------------------------------------------------------------- browser (issue 15)


async def test_a_render_crawl_goes_only_to_a_container_that_can_render(harness: Harness) -> None:
    await harness.add_tenant("t1", parallel_per_container=4)
    _, plain = await start_ready(harness)  # said ready without a browser
    html_only = await submit_and_pump(harness)  # "render": "never": the plain one takes it
    assert (await harness.crawl(html_only)).container_id == plain.id

    render_crawl = await harness.submit("t1", render="always")
    await harness.pump()

    crawl = await harness.crawl(render_crawl)
    assert crawl.container_id != plain.id  # a free slot there, but no browser
    assert len(harness.runtime.started) == 2
    browser_box = harness.engine(crawl.container_id or "")
    await browser_box.ready(browser=True)
    await harness.pump()
    assert [r.crawl_id for r in await browser_box.runs()] == [render_crawl]
    assert (await harness.container(browser_box.id)).browser is True

    # the next render crawl joins the container that can render, no third start
    second = await harness.submit("t1", render="auto")
    await harness.pump()
    assert (await harness.crawl(second)).container_id == browser_box.id
    assert len(harness.runtime.started) == 2


async def test_a_heartbeat_standing_in_for_a_late_ready_keeps_the_browser_flag(
    harness: Harness,
) -> None:
    await harness.add_tenant("t1", parallel_per_container=4)
    first = await harness.submit("t1", render="always")
    await harness.pump()
    (guid,) = harness.runtime.started_ids
    engine = harness.engine(guid)
    await engine.subscribe()
    await engine.heartbeat(browser=True)  # its ready is late: the heartbeat stands in
    await harness.pump()
    assert (await harness.container(guid)).browser is True

    second = await harness.submit("t1", render="always")
    await harness.pump()
    assert (await harness.crawl(second)).container_id == guid  # no second start
    assert len(harness.runtime.started) == 1
    assert {r.crawl_id for r in await engine.runs()} == {first, second}
