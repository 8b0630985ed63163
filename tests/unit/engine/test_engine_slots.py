"""Politeness slots, Retry-After parsing and engine settings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from engine_container.politeness import Politeness, parse_retry_after
from engine_container.settings import EngineSettings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("Wed, 01 Jan 2030 00:01:00 GMT", 60.0),
        ("Tue, 31 Dec 2029 23:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_seconds_or_http_date(value: str | None, expected: float | None) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == expected


async def test_per_host_concurrency_is_a_ceiling_per_host() -> None:
    politeness = Politeness(per_host_concurrency=2)
    active: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}

    async def request(host: str) -> None:
        async with politeness.slot(host):
            active[host] += 1
            peak[host] = max(peak[host], active[host])
            await asyncio.sleep(0.01)
            active[host] -= 1

    await asyncio.gather(*(request(h) for h in "ab" * 10))
    assert peak == {"a": 2, "b": 2}
    assert politeness.tracked_hosts == 0  # idle hosts are forgotten


class FakeTime:
    """A clock that only moves when a task sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def test_delay_spaces_request_starts() -> None:
    time = FakeTime()
    politeness = Politeness(
        per_host_concurrency=4, min_delay_s=0.05, clock=time.clock, sleep=time.sleep
    )
    starts: list[float] = []
    for _ in range(4):
        async with politeness.slot("h", crawl_delay=0.1):  # Crawl-delay wins when larger
            starts.append(time.now)
    for _ in range(2):
        async with politeness.slot("h"):  # without Crawl-delay, the configured minimum
            starts.append(time.now)
    assert [round(t - starts[0], 6) for t in starts] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.45]


async def test_defer_holds_a_host_and_is_capped() -> None:
    time = FakeTime()
    politeness = Politeness(
        per_host_concurrency=1, max_retry_after_s=300, clock=time.clock, sleep=time.sleep
    )
    assert politeness.defer("h", 3600) == 300
    async with politeness.slot("other"):
        assert time.now == 1000.0  # other hosts are not held
    async with politeness.slot("h"):
        assert time.now >= 1300.0


async def test_memory_stays_bounded_with_many_hosts() -> None:
    politeness = Politeness(per_host_concurrency=1, min_delay_s=60, max_hosts=100)
    for i in range(1000):
        async with politeness.slot(f"host-{i}"):
            pass
    assert politeness.tracked_hosts <= 100


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYCRAWL_ALLOW_CIDRS", "127.0.0.0/8, 10.0.0.0/8")
    monkeypatch.setenv("SKYCRAWL_CONCURRENCY", "32")
    settings = EngineSettings()
    assert settings.allow_cidrs == ["127.0.0.0/8", "10.0.0.0/8"]
    assert settings.concurrency == 32
    assert settings.per_host_concurrency == 8
    assert settings.max_redirects == 10
    assert settings.max_body_bytes == 10 * 1024 * 1024
    assert len(settings.address_policy().allow) == 2


def test_settings_refuse_a_bad_cidr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYCRAWL_ALLOW_CIDRS", "127.0.0.0/8,nonsense")
    with pytest.raises(ValidationError, match="invalid CIDR 'nonsense'"):
        EngineSettings()
