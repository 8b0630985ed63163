"""What a contract suite needs from a backend: the port plus a few test-side handles.

A backend module (``tests/contract/backends_<name>.py``) provides factories: async context
managers taking a scratch directory and yielding one of these harnesses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.clock import Clock, FakeClock
from core.ports import ContainerRuntime, MessageBus, Provisioner, Scheduler, StateStore
from core.ports.tenant_stores import TenantStores


async def advance_or_sleep(clock: Clock, seconds: float) -> None:
    if isinstance(clock, FakeClock):
        clock.advance(seconds)
    else:
        await asyncio.sleep(seconds)


@dataclass
class BusHarness:
    bus: MessageBus
    clock: Clock  # the clock the bus reads "now" from
    reopen: Callable[[], MessageBus]  # another client on the same store, closed at teardown
    visibility_s: float = 0.5  # a short visibility timeout the backend honours

    async def elapse(self, seconds: float) -> None:
        await advance_or_sleep(self.clock, seconds)


@dataclass
class SchedulerHarness:
    scheduler: Scheduler
    bus: MessageBus  # the bus the scheduler delivers into
    clock: Clock

    async def elapse(self, seconds: float) -> None:
        await advance_or_sleep(self.clock, seconds)


@dataclass
class StateHarness:
    store: StateStore
    clock: Clock
    reopen: Callable[[], StateStore]

    async def elapse(self, seconds: float) -> None:
        await advance_or_sleep(self.clock, seconds)


@dataclass
class RuntimeHarness:
    """Builds runtimes whose containers run a given Python ``script`` (the test workload).

    Scripts report through files in ``out_dir`` (passed as ``SKYCRAWL_TEST_OUT``) and may read
    ``SKYCRAWL_TEST_*`` variables of ``spec.env``.
    """

    make: Callable[[str], ContainerRuntime]
    out_dir: Path
    opened: list[ContainerRuntime] = field(default_factory=list)

    def runtime(self, script: str) -> ContainerRuntime:
        runtime = self.make(script)
        self.opened.append(runtime)
        return runtime

    async def wait_for_file(self, name: str, timeout_s: float = 10) -> str:
        path = self.out_dir / name
        for _ in range(int(timeout_s / 0.02)):
            if path.exists() and path.read_text().endswith("\n"):
                return path.read_text()
            await asyncio.sleep(0.02)
        raise AssertionError(f"{name} was not written within {timeout_s} s")


@dataclass
class ProvisionerHarness:
    provisioner: Provisioner
    exists: Callable[[Mapping[str, str]], Awaitable[bool]]  # are all these resources there?
    #: Everything the cloud (or emulator) holds that a provisioner could have made, listed
    #: from the cloud's own APIs (topics, queues, subscriptions, roles, stacks, objects ...).
    inventory: Callable[[], Awaitable[set[str]]]


@dataclass
class TenantStoresHarness:
    """Dedicated tenant data on one backend: the tenant stores, the control plane's store
    beside them, and the backend's own listing of what exists."""

    stores: TenantStores
    control: StateStore
    #: The names of the stores the backend holds (tables, schemas, files ...), listed from
    #: the backend's own API -- what ``create_store`` adds and ``drop_store`` removes.
    listing: Callable[[], Awaitable[set[str]]]
