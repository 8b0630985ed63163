"""One dispatch topic per tenant: the conductor publishes a tenant's work to that tenant's
topic only, and when the topic holds as many subscriptions as the broker allows, the crawl
waits in the backlog with the reason in its status (per tenant: other tenants go on)."""

from __future__ import annotations

from conductor_harness import Harness, MakeHarness, start_ready

from core.layout import subscription_name, tenant_topic
from core.models import ContainerState, CrawlState
from core.ports.message_bus import Subscription


async def test_each_tenant_work_goes_to_its_own_topic_only(harness: Harness) -> None:
    await harness.add_tenant("ta")
    await harness.add_tenant("tb")
    _, engine_a = await start_ready(harness, "ta")
    _, engine_b = await start_ready(harness, "tb")
    # B's container forges a filter on A's GUID -- on the topic it can reach, its tenant's
    forged = Subscription(harness.topic("tb"), subscription_name(f"{engine_b.id}-forged"))
    await harness.bus.ensure_subscription(
        topic=forged.topic, name=forged.name, filter={"container_id": engine_a.id}
    )
    crawl_a = await harness.submit("ta")
    await harness.pump()

    assert harness.topic("ta") == "dispatch-ta"
    assert harness.topic("tb") == "dispatch-tb"
    assert crawl_a in [r.crawl_id for r in await engine_a.runs()]
    assert await harness.bus.receive(source=forged, max_messages=10) == []
    assert all(r.tenant_id == "tb" for r in await engine_b.runs())
    assert engine_b.foreign == []
    spec_b = harness.runtime.spec(engine_b.id)
    assert spec_b.env["SKYCRAWL_DISPATCH_TOPIC"] == tenant_topic("dispatch", "tb")
    # the runtime gets what was provisioned for B (where it finds B's own identity)
    tenant_b = await harness.records.tenants.get("tenants", "tb")
    assert tenant_b is not None
    assert tenant_b.value.resources
    assert dict(spec_b.resources) == tenant_b.value.resources
    assert (await harness.tenants_topics()) == {
        "dispatch-ta": [subscription_name(engine_a.id)],
        "dispatch-tb": sorted([subscription_name(engine_b.id), forged.name]),
    }


async def test_at_the_topic_limit_a_crawl_waits_with_the_reason(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(topic_limit=1)
    await harness.add_tenant("ta", max_containers=4, parallel_per_container=1)
    await harness.add_tenant("tb", max_containers=4, parallel_per_container=1)
    done, engine = await start_ready(harness, "ta")
    waiting = await harness.submit("ta")
    await harness.pump()

    crawl = await harness.crawl(waiting, "ta")
    assert crawl.state is CrawlState.pending
    assert crawl.reason is not None
    assert "limit of 1 container subscriptions" in crawl.reason
    assert len(harness.runtime.started) == 1  # no container that could not subscribe
    # the limit is per tenant topic: another tenant still gets a container
    _, other = await start_ready(harness, "tb")
    assert (await harness.container(other.id, "tb")).state is ContainerState.ready

    # a slot frees on the one container A may have: the waiting crawl goes there
    await engine.complete(done)
    await harness.pump()
    crawl = await harness.crawl(waiting, "ta")
    assert crawl.state is CrawlState.dispatched
    assert crawl.container_id == engine.id
    assert [s.tenant_id for s in harness.runtime.started] == ["ta", "tb"]
