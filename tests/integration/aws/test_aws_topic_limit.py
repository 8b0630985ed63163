"""On SNS (moto), each tenant's topic holds at most ``max_filter_policies_per_topic``
container subscriptions: beyond it the conductor keeps the crawl pending with the reason in
its status, and another tenant, on its own topic, still gets its containers."""

from __future__ import annotations

import json

from core.api import ApiRequest
from core.inbox import drain_inbox
from core.layout import subscription_name
from core.models import CrawlState, Quotas, TenantCreate
from core.ports import ContainerSpec, ContainerStatus, RunState, RuntimeCapabilities
from functions.aws.bootstrap import build_aws_stack
from tests.integration.aws.moto_deployment import deploy
from tests.integration.aws.moto_server import client


class StartedOnly:
    """A runtime whose containers start and keep running (they never subscribe by themselves:
    the test subscribes for them, as the engine would)."""

    capabilities = RuntimeCapabilities(name="started-only", typical_start_s=0.0, max_grace_s=1.0)

    def __init__(self) -> None:
        self.started: list[ContainerSpec] = []

    async def start_container(self, *, spec: ContainerSpec) -> None:
        self.started.append(spec)

    async def stop_container(self, *, container_id: str, grace_s: float = 10) -> None:
        return None

    async def describe(self, *, container_id: str) -> ContainerStatus:
        return ContainerStatus(container_id, RunState.running)

    async def list_running(self) -> list[ContainerStatus]:
        return [ContainerStatus(s.container_id, RunState.running) for s in self.started]

    async def close(self) -> None:
        return None


async def test_a_full_tenant_topic_keeps_the_crawl_waiting_with_the_reason(
    moto_endpoint: str,
) -> None:
    deployment = deploy(ecs=False)
    aws = deployment.aws.model_copy(update={"max_filter_policies_per_topic": 1})
    runtime = StartedOnly()
    stack = build_aws_stack(deployment.settings, aws, runtime=runtime)
    quotas = Quotas(max_containers=4, parallel_per_container=1)
    try:
        a, key_a = await stack.tenants.create(TenantCreate(name="a", quotas=quotas))
        b, key_b = await stack.tenants.create(TenantCreate(name="b", quotas=quotas))

        async def submit(key: str) -> str:
            body = json.dumps({"seeds": ["https://example.com/"]}).encode()
            headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
            response = await stack.api.handle(
                ApiRequest("POST", "/v1/crawls", headers=headers, body=body)
            )
            assert response.status == 202, response.body
            return str(response.parsed()["id"])

        async def conduct() -> None:
            queue = deployment.settings.inbox_queue
            while await drain_inbox(stack.conductor, stack.bus, queue=queue, wait_s=1):
                pass

        first = await submit(key_a)
        await conduct()
        (spec,) = runtime.started
        topic = a.resources["dispatch_topic"]
        assert spec.env["SKYCRAWL_DISPATCH_TOPIC"] == topic
        guid = spec.container_id
        await stack.bus.ensure_subscription(  # what the engine does before it says ready
            topic=topic, name=subscription_name(guid), filter={"container_id": guid}
        )
        topic_arn = f"{aws.topic_arn_prefix}{topic}"
        listed = client("sns").list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
        assert len(listed) == 1  # the topic holds its one allowed filter policy

        waiting = await submit(key_a)
        await conduct()
        crawl = await stack.records.crawls.get(a.id, waiting)
        assert crawl is not None
        assert crawl.value.state is CrawlState.pending
        assert "limit of 1 container subscriptions" in (crawl.value.reason or "")
        assert len(runtime.started) == 1
        started = await stack.records.crawls.get(a.id, first)
        assert started is not None
        assert started.value.state is CrawlState.dispatched

        await submit(key_b)  # B's own topic is empty: B gets a container
        await conduct()
        assert [s.tenant_id for s in runtime.started] == [a.id, b.id]
        assert runtime.started[1].env["SKYCRAWL_DISPATCH_TOPIC"] == b.resources["dispatch_topic"]
        await stack.bus.delete_subscription(topic=topic, name=subscription_name(guid))
    finally:
        await stack.ports.close()
