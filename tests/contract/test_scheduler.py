"""Scheduler contract: a message reaches its queue no earlier than ``delay_s`` from now."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from core.errors import InvalidRequest
from core.ports import OutboundMessage, Queue

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.contract.harness import SchedulerHarness


async def scheduled(h: SchedulerHarness, name: str, in_s: float) -> str:
    await h.bus.ensure_queue(name=name)
    message = OutboundMessage(body=b"kill", attributes={"generation": "7"})
    return await h.scheduler.schedule(queue=name, message=message, delay_s=in_s)


async def visible(h: SchedulerHarness, name: str) -> list[bytes]:
    leases = await h.bus.receive(source=Queue(name), visibility_timeout_s=60)
    return [lease.body for lease in leases]


async def test_delivers_no_earlier_than_its_delay(
    scheduler_h: SchedulerHarness, unique: Callable[[str], str]
) -> None:
    name = unique("timers")
    await scheduled(scheduler_h, name, 2)
    assert await visible(scheduler_h, name) == []
    await scheduler_h.elapse(1.5)
    assert await visible(scheduler_h, name) == []
    await scheduler_h.elapse(0.7)
    leases = await scheduler_h.bus.receive(source=Queue(name), visibility_timeout_s=60)
    assert [(lease.body, lease.attributes["generation"]) for lease in leases] == [(b"kill", "7")]


async def test_a_delay_of_zero_or_less_delivers_at_once(
    scheduler_h: SchedulerHarness, unique: Callable[[str], str]
) -> None:
    name = unique("timers")
    await scheduled(scheduler_h, name, -5)
    assert await visible(scheduler_h, name) == [b"kill"]


async def test_cancel_prevents_delivery(
    scheduler_h: SchedulerHarness, unique: Callable[[str], str]
) -> None:
    name = unique("timers")
    handle = await scheduled(scheduler_h, name, 1)
    if not scheduler_h.scheduler.capabilities.can_cancel:
        # it says so, and the message still arrives: the generation check is the real guard
        assert await scheduler_h.scheduler.cancel(handle=handle) is False
        await scheduler_h.elapse(1.5)
        assert len(await visible(scheduler_h, name)) == 1
        return
    assert await scheduler_h.scheduler.cancel(handle=handle) is True
    await scheduler_h.elapse(1.5)
    assert await visible(scheduler_h, name) == []
    assert await scheduler_h.scheduler.cancel(handle=handle) is False


async def test_cancel_after_delivery_is_too_late(
    scheduler_h: SchedulerHarness, unique: Callable[[str], str]
) -> None:
    name = unique("timers")
    handle = await scheduled(scheduler_h, name, 0.5)
    await scheduler_h.elapse(0.7)
    assert await visible(scheduler_h, name) == [b"kill"]
    assert await scheduler_h.scheduler.cancel(handle=handle) is False


async def test_cancel_unknown_handle_is_false(scheduler_h: SchedulerHarness) -> None:
    assert await scheduler_h.scheduler.cancel(handle="no-such-timer") is False


async def test_a_delay_beyond_the_native_maximum_is_invalid(
    scheduler_h: SchedulerHarness, unique: Callable[[str], str]
) -> None:
    name = unique("timers")
    await scheduler_h.bus.ensure_queue(name=name)
    too_far = scheduler_h.scheduler.capabilities.max_delay_s + 3600
    with pytest.raises(InvalidRequest):
        await scheduler_h.scheduler.schedule(
            queue=name, message=OutboundMessage(body=b"x"), delay_s=too_far
        )


async def test_sqlite_refuses_delays_beyond_its_maximum(
    sqlite_scheduler_h: SchedulerHarness,
) -> None:
    h = sqlite_scheduler_h
    limit = h.scheduler.capabilities.max_delay_s
    with pytest.raises(InvalidRequest):
        await scheduled(h, "timers", limit + 60)
    await scheduled(h, "timers", limit - 60)
