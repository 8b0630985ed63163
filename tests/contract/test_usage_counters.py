"""Metering over every StateStore backend: an event is counted once in its hour bucket, and
the hours read back in order across pages (``core.metering`` uses only the port)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from core.metering import Meter, MeterEvent, Usage

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.contract.harness import StateHarness

START = datetime(2030, 1, 1, tzinfo=UTC)


async def test_an_event_is_counted_once_and_hours_read_back_in_order(
    state_h: StateHarness, unique: Callable[[str], str]
) -> None:
    tenant, meter = unique("tn"), Meter(state_h.store)
    for hour in (5, 0, 26, 1):  # written out of order, across a day
        event = MeterEvent(
            tenant_id=tenant,
            hour=START + timedelta(hours=hour, minutes=30),
            event=f"crawl:{hour}",
            usage=Usage(pages=hour + 1, cost=0.25),
        )
        assert await meter.apply(event)
        assert not await meter.apply(event)  # relayed twice: counted once

    hours = await meter.hours(tenant, START, START + timedelta(hours=26))

    assert [b.hour for b in hours] == [START + timedelta(hours=h) for h in (0, 1, 5)]
    assert [b.usage.pages for b in hours] == [1, 2, 6]
    total = await meter.total(tenant, START, START + timedelta(days=2))
    assert (total.pages, total.cost) == (36, 1.0)
