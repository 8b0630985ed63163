"""The whole story on AWS (moto), through the Lambda handlers: submit through the API function
→ the conductor function fed from the real SQS inbox → a container starts (a real
``python -m engine_container`` process with ``SKYCRAWL_PROVIDER=aws``: moto runs no ECS
containers, so the local subprocess runtime stands in for ECS here) → it subscribes its own
SQS queue to the SNS dispatch topic and says ``ready`` → the crawl goes down the topic → it
crawls a site served on 127.0.0.1 into S3 → completion → the kill timer comes back through an
SQS delay → the container is stopped, and its queue and subscription are gone. The tenant's
CloudFormation stack is created and deleted on the way.

What Lambda's infrastructure does is done here by the test: ``EventSourceMapping`` (receive a
batch from the inbox, invoke the conductor with it, delete what it did not report as failed)
and the EventBridge rule (invoke housekeeping every 2 s). Every invocation runs on one
thread, like one warm Lambda execution environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from adapters.local.container_runtime import SubprocessRuntime
from core.layout import subscription_name, tenant_topic
from functions.aws import api, bootstrap, conductor, housekeeping
from functions.aws.bootstrap import AwsStack
from tests.e2e.support import serve_site
from tests.integration.aws import moto_server
from tests.integration.aws.lambda_events import (
    http_event,
    json_of,
    receive_batch,
    scheduled_event,
    sqs_event,
)
from tests.integration.aws.moto_deployment import OPERATOR_KEY, deploy

pytestmark = pytest.mark.e2e

T = TypeVar("T")


@dataclass
class LambdaContext:
    function_name: str = "skycrawl-e2e"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:skycrawl-e2e"
    aws_request_id: str = "e2e"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class AwsWorld:
    stack: AwsStack
    lambda_thread: ThreadPoolExecutor
    context: LambdaContext

    async def invoke(self, handler: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.lambda_thread, handler, *args)

    async def http(self, method: str, path: str, key: str, **kwargs: Any) -> Any:
        result = await self.invoke(
            api.handler, http_event(method, path, key=key, **kwargs), self.context
        )
        assert result["statusCode"] < 400, result
        return json_of(result) if result["body"] else None

    async def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if await predicate():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def event_source_mapping(world: AwsWorld, stop: asyncio.Event) -> None:
    """What Lambda does with the inbox: batches in, the conductor function, deletes out."""
    sqs = moto_server.client("sqs")
    inbox = world.stack.settings.inbox_queue
    url = (await asyncio.to_thread(sqs.get_queue_url, QueueName=inbox))["QueueUrl"]
    arn = await world.invoke(bootstrap.run, world.stack.bus.queue_arn(inbox))
    while not stop.is_set():
        messages = await asyncio.to_thread(receive_batch, sqs, url, wait_s=1)
        if not messages:
            continue
        result = await world.invoke(conductor.handler, sqs_event(messages, arn), world.context)
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for message in messages:
            if message["MessageId"] not in failed:
                await asyncio.to_thread(
                    sqs.delete_message, QueueUrl=url, ReceiptHandle=message["ReceiptHandle"]
                )


async def eventbridge_rule(world: AwsWorld, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await world.invoke(housekeeping.handler, scheduled_event(), world.context)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2)


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AwsWorld]:
    for name, value in moto_server.CREDENTIALS.items():  # engine processes inherit these
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    deployment = deploy(
        ecs=False,
        allow_cidrs=["127.0.0.0/8"],
        idle_ttl_s=2.0,
        heartbeat_interval_s=0.5,
        heartbeat_timeout_s=20.0,
        startup_timeout_s=30.0,
        checkpoint_interval_s=0.5,
        stop_grace_s=3.0,
    )
    runtime = SubprocessRuntime(
        command=(sys.executable, "-m", "engine_container"),
        log_dir=tmp_path / "logs",
        close_grace_s=3.0,
    )
    stack = bootstrap.build_aws_stack(deployment.settings, deployment.aws, runtime=runtime)
    bootstrap.install(stack)
    world = AwsWorld(stack, ThreadPoolExecutor(1, thread_name_prefix="lambda"), LambdaContext())
    stop = asyncio.Event()
    loops = [
        asyncio.create_task(event_source_mapping(world, stop)),
        asyncio.create_task(eventbridge_rule(world, stop)),
    ]
    try:
        yield world
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*loops), 15)
        await world.invoke(bootstrap.run, stack.ports.close())
        bootstrap.install(None)
        world.lambda_thread.shutdown(wait=True)


async def test_crawl_on_aws_through_the_lambdas_and_back_to_zero(world: AwsWorld) -> None:
    w, stack = world, world.stack
    created = await w.http("POST", "/v1/tenants", OPERATOR_KEY, body={"name": "acme"})
    tenant_id, key = created["id"], created["api_key"]
    cloudformation = moto_server.client("cloudformation")
    tenant = await w.invoke(bootstrap.run, stack.records.tenants.get("tenants", tenant_id))
    stack_id = tenant.value.resources["stack_id"]
    described = await asyncio.to_thread(cloudformation.describe_stacks, StackName=stack_id)
    assert described["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"

    async with serve_site(pages=20) as site:
        submitted = await w.http(
            "POST", "/v1/crawls", key, body={"seeds": [site.url], "max_pages": 100, "max_depth": 20}
        )
        crawl_id = submitted["id"]
        status: dict[str, Any] = {}

        async def finished() -> bool:
            nonlocal status
            status = await w.http("GET", f"/v1/crawls/{crawl_id}", key)
            return status["status"] not in ("pending", "dispatched")

        await w.wait_for(finished, 60, "the crawl to finish")
    assert status["status"] == "completed", status
    assert status["counts"]["fetched"] == 21  # "/" and /p/0 … /p/19
    container_id = status["container_id"]

    pages = await w.http("GET", f"/v1/crawls/{crawl_id}/pages", key, query={"limit": "50"})
    assert len({p["url"] for p in pages["items"]}) == 21
    blobs = await w.invoke(bootstrap.run, stack.ports.blobs.list(prefix=f"tenants/{tenant_id}/"))
    assert any("/manifest/" in b for b in blobs)
    assert any("/warc/" in b for b in blobs)

    async def stopped_idle() -> bool:
        containers = await w.http("GET", "/v1/containers", OPERATOR_KEY)
        mine = [c for c in containers["items"] if c["id"] == container_id]
        return bool(mine) and mine[0]["state"] == "stopped"

    await w.wait_for(stopped_idle, 20, "the idle container to be stopped by its kill timer")
    record = await w.invoke(bootstrap.run, stack.records.containers.get(tenant_id, container_id))
    assert record is not None
    assert record.value.reason == "idle"
    running = stack.ports.list_running(stack.settings.egresses)
    assert await w.invoke(bootstrap.run, running) == []

    sqs, sns = moto_server.client("sqs"), moto_server.client("sns")
    topic = tenant_topic(stack.settings.dispatch_topic, tenant_id)  # the tenant's own
    assert tenant.value.resources["dispatch_topic"] == topic
    topic_arn = f"{stack.aws.topic_arn_prefix}{topic}"
    queue = stack.bus.topics.subscription_queue(topic, subscription_name(container_id))
    assert queue.startswith(stack.aws.subscription_queue_prefix)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        await asyncio.to_thread(sqs.get_queue_url, QueueName=queue)
    subscriptions = await asyncio.to_thread(sns.list_subscriptions_by_topic, TopicArn=topic_arn)
    assert subscriptions["Subscriptions"] == []
    leftovers = await asyncio.to_thread(
        sqs.list_queues, QueueNamePrefix=stack.aws.subscription_queue_prefix
    )
    assert leftovers.get("QueueUrls", []) == []

    await w.http("DELETE", f"/v1/tenants/{tenant_id}", OPERATOR_KEY)
    described = await asyncio.to_thread(cloudformation.describe_stacks, StackName=stack_id)
    assert described["Stacks"][0]["StackStatus"] == "DELETE_COMPLETE"
    with pytest.raises(sns.exceptions.NotFoundException):  # its topic went with its stack
        await asyncio.to_thread(sns.get_topic_attributes, TopicArn=topic_arn)
    assert (
        await w.invoke(bootstrap.run, stack.ports.blobs.list(prefix=f"tenants/{tenant_id}/")) == []
    )
