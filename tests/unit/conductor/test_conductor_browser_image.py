"""A crawl that renders starts its container from the browser image (issue 15): the
deployment's ``SKYCRAWL_ENGINE_BROWSER_IMAGE``, or its egress entry's ``browser.image``."""

from __future__ import annotations

from conductor_harness import Harness, MakeHarness

from core.models import Egress
from core.ports import ContainerSpec


async def _spec_of(h: Harness, crawl_id: str) -> ContainerSpec:
    container_id = (await h.crawl(crawl_id)).container_id
    assert container_id is not None
    return h.runtime.spec(container_id)


async def test_a_crawl_that_renders_starts_the_browser_image_a_plain_one_the_engine_image(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(engine_browser_image="skycrawl-engine:browser")
    await h.add_tenant(max_containers=2)
    plain = await h.submit()
    rendered = await h.submit(render="always")
    await h.pump()

    plain_spec, rendered_spec = await _spec_of(h, plain), await _spec_of(h, rendered)
    assert (plain_spec.image, plain_spec.browser) == (h.settings.engine_image, False)
    assert (rendered_spec.image, rendered_spec.browser) == ("skycrawl-engine:browser", True)


async def test_an_egress_names_its_own_browser_image(make_harness: MakeHarness) -> None:
    eu = Egress(name="eu", browser={"image": "registry.eu/skycrawl-engine:browser"})
    h = await make_harness(egresses=[eu], engine_browser_image="skycrawl-engine:browser")
    await h.add_tenant()
    rendered = await h.submit(render="auto")
    await h.pump()

    assert (await _spec_of(h, rendered)).image == "registry.eu/skycrawl-engine:browser"


async def test_without_a_browser_image_every_container_runs_the_engine_image(
    harness: Harness,
) -> None:
    await harness.add_tenant()
    rendered = await harness.submit(render="always")
    await harness.pump()

    spec = await _spec_of(harness, rendered)
    assert (spec.image, spec.browser) == (harness.settings.engine_image, True)
