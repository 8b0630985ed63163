"""The whole story with real containers: the engine image on a Docker Engine, started and
stopped by the conductor through ``DockerRuntime``, crawling a site served on 127.0.0.1.

submit → container starts → ready → crawl → kill timer → container gone; ``docker kill``
mid-crawl → resumed in another container; SIGTERM mid-crawl → checkpointed, then resumed
where it stopped."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from core.ports import RunState
from tests.e2e.docker.conftest import DockerHarness
from tests.e2e.support import serve_site

pytestmark = [pytest.mark.e2e, pytest.mark.docker]


async def wait_terminal(h: DockerHarness, key: str, crawl_id: str, timeout: float) -> Any:
    status: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal status
        status = await h.json("GET", f"/v1/crawls/{crawl_id}", key)
        return status["status"] in ("completed", "failed", "dead-lettered", "cancelled")

    await h.wait_for(done, timeout, f"crawl {crawl_id} to finish")
    return status


async def page_urls(h: DockerHarness, key: str, crawl_id: str) -> list[str]:
    urls: list[str] = []
    cursor = None
    while True:
        query = {"limit": "100"} | ({"cursor": cursor} if cursor else {})
        response = await h.call("GET", f"/v1/crawls/{crawl_id}/pages", key, query=query)
        body = json.loads(response.body)
        urls += [p["url"] for p in body["items"]]
        cursor = body.get("next_cursor")
        if not cursor:
            return urls


async def test_a_crawl_runs_in_a_container_that_is_gone_when_idle(
    docker_harness: DockerHarness,
) -> None:
    h = docker_harness
    tenant_id, key = await h.tenant("acme", max_containers=2, parallel=2)
    async with serve_site(pages=30) as site:
        created = await h.json("POST", "/v1/crawls", key, {"seeds": [site.url], "max_depth": 50})

        async def container_started() -> bool:
            return bool(h.containers())

        await h.wait_for(container_started, 60, "a Docker container for the crawl")
        [container] = h.containers()
        assert container.labels["skycrawl.tenant"] == tenant_id
        guid = container.labels["skycrawl.container-id"]
        status = await wait_terminal(h, key, created["id"], 90)
    assert status["status"] == "completed", status
    assert status["container_id"] == guid
    assert status["counts"]["fetched"] == 31
    assert len(set(await page_urls(h, key, created["id"]))) == 31
    record = await h.stack.records.containers.get(tenant_id, guid)
    assert record is not None
    assert record.value.ready_at is not None

    async def gone() -> bool:
        return not h.containers() and not await h.live_containers(tenant_id)

    await h.wait_for(gone, 45, "the kill timer to stop the idle container")
    final = await h.runtime.describe(container_id=guid)
    assert (final.state, final.exit_code) == (RunState.exited, 0)  # it took SIGTERM and left
    record = await h.stack.records.containers.get(tenant_id, guid)
    assert record is not None
    assert (record.value.state.value, record.value.reason) == ("stopped", "idle")


#: Each page answers this late: with the engine's per-host concurrency the 200 pages take ~8 s,
#: so a signal sent once 40 are reported lands mid-crawl. At 0.05 s the crawl could end (in
#: ~2 s) before its progress said 40: the signal then stopped an idle container.
PAGE_DELAY_S = 0.2


async def crawl_until_under_way(
    h: DockerHarness, key: str, site_url: str, fetched: int
) -> tuple[str, str]:
    created = await h.json(
        "POST", "/v1/crawls", key, {"seeds": [site_url], "max_pages": 1000, "max_depth": 100}
    )
    crawl_id = created["id"]

    async def under_way() -> bool:
        status = await h.json("GET", f"/v1/crawls/{crawl_id}", key)
        return bool(status["counts"]["fetched"] >= fetched)

    await h.wait_for(under_way, 90, "the crawl to get under way")
    status = await h.json("GET", f"/v1/crawls/{crawl_id}", key)
    return crawl_id, status["container_id"]


async def test_docker_kill_mid_crawl_resumes_in_another_container(
    docker_harness: DockerHarness,
) -> None:
    h = docker_harness
    tenant_id, key = await h.tenant("sturdy", max_containers=2, parallel=1)
    async with serve_site(pages=200, delay_s=PAGE_DELAY_S) as site:
        crawl_id, victim = await crawl_until_under_way(h, key, site.url, 40)
        h.client.containers.get(h.runtime.name_of(victim)).kill()  # SIGKILL, no goodbye
        final = await wait_terminal(h, key, crawl_id, 150)
    assert final["status"] == "completed", final
    assert (final["attempts"], final["container_id"] != victim) == (2, True)
    urls = await page_urls(h, key, crawl_id)
    assert len(urls) == len(set(urls)) == 201, "every page exactly once in the results"
    assert (await h.runtime.describe(container_id=victim)).exit_code == 137
    record = await h.stack.records.containers.get(tenant_id, victim)
    assert record is not None
    assert record.value.state.value == "failed"


async def test_sigterm_mid_crawl_checkpoints_and_the_crawl_resumes_there(
    docker_harness: DockerHarness,
) -> None:
    h = docker_harness
    _, key = await h.tenant("drained", max_containers=2, parallel=1)
    async with serve_site(pages=200, delay_s=PAGE_DELAY_S) as site:
        crawl_id, victim = await crawl_until_under_way(h, key, site.url, 40)
        h.client.containers.get(h.runtime.name_of(victim)).kill(signal="SIGTERM")
        final = await wait_terminal(h, key, crawl_id, 150)
        hits = dict(site.hits)
    assert final["status"] == "completed", final
    assert final["container_id"] != victim, (final, _story_of(h, victim))
    urls = await page_urls(h, key, crawl_id)
    assert len(urls) == len(set(urls)) == 201
    victim_status = await h.runtime.describe(container_id=victim)
    refetched = sum(n - 1 for path, n in hits.items() if path != "/robots.txt" and n > 1)
    # SIGTERM made the engine checkpoint what it had and exit cleanly (also when the
    # conductor's own stop, SIGTERM again, lands while it is on its way out): only pages in
    # flight then (a few per host) are fetched again, never the 40+ done before.
    seen = ((victim_status.state, victim_status.exit_code), refetched <= 20)
    assert seen == ((RunState.exited, 0), True), (refetched, _story_of(h, victim))


def _story_of(h: DockerHarness, container_id: str) -> str:
    """For a failure's reader: the container's signals and exit (Docker's events), its log."""
    name = h.runtime.name_of(container_id)
    now = int(time.time())
    events = h.client.events(since=now - 600, until=now, decode=True, filters={"container": name})
    lines = []
    for event in events:
        attributes = event.get("Actor", {}).get("Attributes", {})
        signal, code = attributes.get("signal", ""), attributes.get("exitCode", "")
        lines.append(f"{event.get('timeNano')} {event.get('Action')} {signal}{code}")
    log = h.client.containers.get(name).logs(tail=40, timestamps=True).decode()
    return "\n".join([*lines, log])
