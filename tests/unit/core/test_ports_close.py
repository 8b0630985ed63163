"""``Ports.close`` closes every port it holds -- scheduler and provisioner included -- and goes
on closing the others when one fails."""

from __future__ import annotations

from typing import Any

import pytest

from core.clock import FakeClock
from core.models import Egress
from core.ports import Ports, deferred, deferred_ports


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


async def test_a_port_built_on_first_use_is_built_once_and_closed_only_if_used() -> None:
    closed: list[str] = []
    built: list[str] = []

    def later(name: str) -> Any:
        def build() -> Closable:
            built.append(name)
            return Closable(name, closed)

        return deferred(build)

    ports = ports_of(closed)
    ports.bus, ports.state = later("bus"), later("state")
    assert built == []  # nothing built (no SDK imported) until a port is used
    assert isinstance(ports.state, Closable)  # the stand-in is the adapter to its callers
    assert ports.state.name == "state"
    assert built == ["state"]
    await ports.close()
    assert "bus" not in closed  # never used: not built just to be closed
    assert "state" in closed
    assert built == ["state"]


def test_a_port_on_given_clients_is_built_at_once() -> None:
    made = deferred(lambda: Closable("bus", []), now=True)
    assert type(made) is Closable


async def test_ports_built_together_are_built_on_first_use_and_all_closed() -> None:
    closed: list[str] = []
    builds: list[int] = []

    def build() -> Ports:
        builds.append(1)
        return ports_of(closed)

    ports = deferred_ports(build, runtimes=["east", "west", "far"], clock=FakeClock())
    assert builds == []
    assert isinstance(ports.bus, Closable)  # one port used: all of them are built, once
    far = ports.runtime_for(Egress(name="far"))
    assert isinstance(far, Closable)
    assert far.name == "far-runtime"
    assert builds == [1]
    await ports.close()
    assert len(closed) == 7  # every port, used or not, as if built at once
