"""ServiceBusMessageBus beyond the contract suite: rules, dead-letter forwarding, lock keeping,
scheduling -- against the fake namespace of ``fakes.py``."""

from __future__ import annotations

import asyncio

import pytest
from azure.servicebus.management import CorrelationRuleFilter

from adapters.azure.message_bus import RULE_NAME, ServiceBusMessageBus
from adapters.azure.scheduler import ServiceBusScheduler
from core.clock import FakeClock
from core.errors import Conflict, InvalidRequest, NotFound
from core.ports import OutboundMessage, Queue, Subscription, dead_letter_queue
from tests.integration.azure.fakes import FakeServiceBusClient, FakeServiceBusNamespace
from tests.integration.azure.fakes_admin import FakeAdministrationClient


def bus_on(namespace: FakeServiceBusNamespace, lock_s: float = 60.0) -> ServiceBusMessageBus:
    return ServiceBusMessageBus(
        FakeServiceBusClient(namespace),  # type: ignore[arg-type]
        FakeAdministrationClient(namespace),  # type: ignore[arg-type]
        clock=namespace.clock,
        lock_duration_s=lock_s,
        min_wait_s=0.01,
    )


def msg(body: bytes = b"x", **attributes: str) -> OutboundMessage:
    return OutboundMessage(body=body, attributes=attributes)


async def test_a_new_subscription_has_only_the_correlation_rule(
    namespace: FakeServiceBusNamespace,
) -> None:
    bus = bus_on(namespace)
    await bus.ensure_topic(topic="dispatch")
    await bus.ensure_subscription(topic="dispatch", name="c-1", filter={"container_id": "g1"})
    rules = namespace.topics["dispatch"]["c-1"].rules
    assert list(rules) == [RULE_NAME]  # $Default is gone
    rule = rules[RULE_NAME]
    assert isinstance(rule, CorrelationRuleFilter)
    assert rule.properties == {"container_id": "g1"}
    await bus.close()


async def test_ensure_subscription_repairs_the_rules_of_an_existing_one(
    namespace: FakeServiceBusNamespace,
) -> None:
    bus = bus_on(namespace)
    await bus.ensure_topic(topic="dispatch")
    admin = FakeAdministrationClient(namespace)
    await admin.create_subscription("dispatch", "c-1")  # born with $Default (match-all)
    await admin.create_rule("dispatch", "c-1", "stray", filter=CorrelationRuleFilter(label="x"))

    await bus.ensure_subscription(topic="dispatch", name="c-1", filter={"container_id": "g1"})
    rules = namespace.topics["dispatch"]["c-1"].rules
    assert list(rules) == [RULE_NAME]
    await bus.ensure_subscription(topic="dispatch", name="c-1", filter={"container_id": "g2"})
    assert namespace.topics["dispatch"]["c-1"].rules[RULE_NAME].properties == {  # type: ignore[union-attr]
        "container_id": "g2"
    }

    await bus.publish(topic="dispatch", message=msg(container_id="g1"))
    await bus.publish(topic="dispatch", message=msg(b"mine", container_id="g2"))
    leases = await bus.receive(source=Subscription("dispatch", "c-1"))
    assert [lease.body for lease in leases] == [b"mine"]
    await bus.close()


async def test_subscription_dead_letters_outlive_the_subscription(
    namespace: FakeServiceBusNamespace,
) -> None:
    bus = bus_on(namespace)
    await bus.ensure_topic(topic="dispatch")
    sub = await bus.ensure_subscription(topic="dispatch", name="c-1", filter={"container_id": "g"})
    await bus.publish(topic="dispatch", message=msg(b"bad", container_id="g"))
    lease = (await bus.receive(source=sub))[0]
    await bus.dead_letter(lease=lease, reason="undecodable work message")
    await bus.delete_subscription(topic="dispatch", name="c-1")

    dead = await bus.receive(source=Queue(dead_letter_queue("dispatch")))
    assert [d.body for d in dead] == [b"bad"]
    assert dead[0].attributes["dead_letter_reason"] == "undecodable work message"
    assert dead[0].attributes["container_id"] == "g"
    with pytest.raises(InvalidRequest):
        await bus.dead_letter(lease=dead[0], reason="again")
    await bus.close()


async def test_first_delivery_counts_one_and_max_deliveries_is_native(
    namespace: FakeServiceBusNamespace,
) -> None:
    bus = bus_on(namespace, lock_s=1.0)
    await bus.ensure_queue(name="inbox", max_deliveries=5)
    await bus.ensure_queue(name="inbox", max_deliveries=2)  # an existing queue is updated
    assert namespace.queues["inbox"].max_delivery_count == 2
    await bus.send(queue="inbox", message=msg())
    first = await bus.receive(source=Queue("inbox"))
    assert first[0].delivery_count == 1
    await bus.release(lease=first[0])
    second = await bus.receive(source=Queue("inbox"))
    assert second[0].delivery_count == 2
    await bus.release(lease=second[0])
    assert await bus.receive(source=Queue("inbox")) == []
    dead = await bus.receive(source=Queue("inbox-dlq"))
    assert dead[0].attributes["dead_letter_reason"] == "MaxDeliveryCountExceeded"
    await bus.close()


async def test_leases_are_settled_only_by_the_bus_that_received_them(
    namespace: FakeServiceBusNamespace,
) -> None:
    one, other = bus_on(namespace), bus_on(namespace)
    await one.ensure_queue(name="inbox")
    await one.send(queue="inbox", message=msg())
    lease = (await one.receive(source=Queue("inbox")))[0]
    with pytest.raises(Conflict):
        await other.ack(lease=lease)
    await one.ack(lease=lease)
    await one.close()
    await other.close()


async def test_long_leases_are_renewed_then_lapse(wall_namespace: FakeServiceBusNamespace) -> None:
    bus = bus_on(wall_namespace, lock_s=0.3)
    await bus.ensure_queue(name="inbox")
    await bus.send(queue="inbox", message=msg())
    lease = (await bus.receive(source=Queue("inbox"), visibility_timeout_s=1.2))[0]
    await asyncio.sleep(0.8)  # well past the 0.3 s lock: renewed in the background
    assert await bus.receive(source=Queue("inbox")) == []
    await asyncio.sleep(1.0)  # past the 1.2 s visibility timeout: renewals stopped, lock lapsed
    again = await bus.receive(source=Queue("inbox"), wait_s=1.0)
    assert [a.message_id for a in again] == [lease.message_id]
    assert again[0].delivery_count == 2
    await bus.close()


async def test_release_with_delay_keeps_the_lock_until_then(
    wall_namespace: FakeServiceBusNamespace,
) -> None:
    bus = bus_on(wall_namespace, lock_s=0.3)
    await bus.ensure_queue(name="inbox")
    await bus.send(queue="inbox", message=msg())
    lease = (await bus.receive(source=Queue("inbox")))[0]
    await bus.release(lease=lease, delay_s=0.9)
    await asyncio.sleep(0.6)
    assert await bus.receive(source=Queue("inbox")) == []
    again = await bus.receive(source=Queue("inbox"), wait_s=1.5)
    assert again[0].delivery_count == 2
    await bus.close()


async def test_scheduler_handles_and_cancel(namespace: FakeServiceBusNamespace) -> None:
    bus = bus_on(namespace)
    scheduler = ServiceBusScheduler(bus)
    await bus.ensure_queue(name="inbox")
    clock = namespace.clock
    assert isinstance(clock, FakeClock)
    handle = await scheduler.schedule(queue="inbox", message=msg(b"kill"), delay_s=60)
    assert handle.startswith("inbox:")
    assert await scheduler.cancel(handle=handle) is True
    assert await scheduler.cancel(handle="inbox:not-a-number") is False
    with pytest.raises(InvalidRequest):
        await scheduler.schedule(queue="inbox", message=msg(), delay_s=31 * 86400)
    with pytest.raises(NotFound):
        await scheduler.schedule(queue="nope", message=msg(), delay_s=0)
    await bus.close()


async def test_bad_arguments_and_missing_entities(namespace: FakeServiceBusNamespace) -> None:
    bus = bus_on(namespace)
    await bus.ensure_queue(name="inbox")
    with pytest.raises(InvalidRequest):
        await bus.ensure_queue(name="inbox-dlq")
    with pytest.raises(InvalidRequest):
        await bus.receive(source=Queue("inbox"), visibility_timeout_s=0)
    with pytest.raises(InvalidRequest):
        await bus.receive(source=Queue("inbox"), max_messages=0)
    with pytest.raises(NotFound):
        await bus.publish(topic="no-topic", message=msg())
    with pytest.raises(NotFound):
        await bus.ensure_subscription(topic="no-topic", name="s", filter={})
    with pytest.raises(NotFound):
        await bus.receive(source=Queue("never-created"))
    await bus.delete_subscription(topic="no-topic", name="s")  # missing is fine
    await bus.close()
