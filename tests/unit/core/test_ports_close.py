"""``Ports.close`` closes every port it holds -- scheduler and provisioner included -- and goes
on closing the others when one fails."""

from __future__ import annotations

from typing import Any

import pytest

from core.clock import FakeClock
from core.ports import Ports


class Closable:
    def __init__(self, name: str, closed: list[str], error: Exception | None = None) -> None:
        self.name, self.closed, self.error = name, closed, error

    async def close(self) -> None:
        self.closed.append(self.name)
        if self.error is not None:
            raise self.error


def ports_of(closed: list[str], failing: str = "") -> Ports:
    def port(name: str) -> Any:
        return Closable(name, closed, RuntimeError(f"{name} broke") if name == failing else None)

    names = ("bus", "scheduler", "state", "blobs", "provisioner")
    shared = port("runtime")  # one runtime serving two egresses is closed once
    runtimes = {"east": shared, "west": shared, "far": port("far-runtime")}
    return Ports(**{name: port(name) for name in names}, runtimes=runtimes, clock=FakeClock())


async def test_every_port_is_closed() -> None:
    closed: list[str] = []
    await ports_of(closed).close()
    assert sorted(closed) == [
        "blobs",
        "bus",
        "far-runtime",
        "provisioner",
        "runtime",
        "scheduler",
        "state",
    ]


async def test_a_failing_close_does_not_leave_the_others_open() -> None:
    closed: list[str] = []
    with pytest.raises(RuntimeError, match="scheduler broke"):
        await ports_of(closed, failing="scheduler").close()
    assert len(closed) == 7
