"""``core.inbox.settle``: one decision for how an inbox message is settled, on every platform,
and ``apply_outcome`` carrying it out on a real (SQLite) bus."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from adapters.local.message_bus import SqliteMessageBus
from core.clock import FakeClock
from core.conductor import Conductor
from core.errors import Conflict, InvalidRequest, Retryable
from core.inbox import InboxOutcome, Settlement, apply_outcome, settle
from core.ports import OutboundMessage, Queue, dead_letter_queue
from core.ports.message_bus import DEAD_LETTER_REASON, DEAD_LETTER_SOURCE, MAX_REASON_BYTES


class _Handler:
    """Stands in for the conductor: raises what it is given (or handles the real decoder's
    way: garbage is ``InvalidRequest``)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.seen: list[bytes] = []

    async def handle_raw(self, body: bytes) -> None:
        self.seen.append(body)
        if self.error is not None:
            raise self.error


def conductor(error: Exception | None = None) -> Conductor:
    return cast(Conductor, _Handler(error))


async def test_a_handled_message_is_acked() -> None:
    assert await settle(conductor(), b"{}") == InboxOutcome.ack()


async def test_an_undecodable_message_is_dead_lettered_with_its_reason() -> None:
    outcome = await settle(conductor(InvalidRequest("undecodable inbox message: 2 errors")), b"x")
    assert outcome.settlement is Settlement.dead_letter
    assert outcome.reason == "undecodable inbox message: 2 errors"


async def test_the_reason_is_cut_to_what_every_broker_takes() -> None:
    outcome = await settle(conductor(InvalidRequest("é" * 2000)), b"x")
    assert len(outcome.reason.encode()) == MAX_REASON_BYTES


@pytest.mark.parametrize("error", [Retryable("store down"), Conflict("lost"), RuntimeError("x")])
async def test_any_other_failure_is_retried_with_the_core_back_off(error: Exception) -> None:
    for delivery, back_off in [(1, 1.0), (3, 4.0), (10, 60.0)]:
        outcome = await settle(conductor(error), b"{}", delivery_count=delivery)
        assert (outcome.settlement, outcome.retry_after_s) == (Settlement.retry, back_off)
        assert type(error).__name__ in outcome.reason


async def test_apply_outcome_settles_a_lease_on_the_bus(tmp_path: Path) -> None:
    clock = FakeClock()
    bus = SqliteMessageBus(tmp_path / "bus.sqlite3", clock=clock)
    try:
        await bus.ensure_queue(name="inbox")
        for body in (b"ok", b"bad", b"later"):
            await bus.send(queue="inbox", message=OutboundMessage(body))
        leases = {lease.body: lease for lease in await bus.receive(source=Queue("inbox"))}

        assert await apply_outcome(bus, leases[b"ok"], InboxOutcome.ack())
        assert not await apply_outcome(bus, leases[b"bad"], InboxOutcome.dead_letter("garbage"))
        retry = InboxOutcome.retry("down", delivery_count=2)
        assert not await apply_outcome(bus, leases[b"later"], retry)

        assert await bus.receive(source=Queue("inbox")) == []  # "later" waits its back-off
        clock.advance(2.1)
        [again] = await bus.receive(source=Queue("inbox"))
        assert (again.body, again.delivery_count) == (b"later", 2)
        [dead] = await bus.receive(source=Queue(dead_letter_queue("inbox")))
        attributes: dict[str, Any] = dict(dead.attributes)
        assert dead.body == b"bad"
        assert (attributes[DEAD_LETTER_REASON], attributes[DEAD_LETTER_SOURCE]) == (
            "garbage",
            "inbox",
        )
    finally:
        await bus.close()
