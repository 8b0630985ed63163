"""Ports: the small interfaces every cloud adapter implements (see tests/contract/)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.clock import Clock
from core.errors import ConfigurationError
from core.models import Egress
from core.ports.blob_store import BlobCapabilities, BlobStore
from core.ports.container_runtime import (
    ContainerRuntime,
    ContainerSpec,
    ContainerStatus,
    RunState,
    RuntimeCapabilities,
)
from core.ports.deferred import deferred, deferred_ports, identity, is_built
from core.ports.message_bus import (
    BusCapabilities,
    Lease,
    MessageBus,
    OutboundMessage,
    Queue,
    Source,
    Subscription,
    dead_letter_queue,
)
from core.ports.provisioner import Provisioner
from core.ports.scheduler import Scheduler, SchedulerCapabilities
from core.ports.state_store import Item, StateCapabilities, StateStore

__all__ = [
    "BlobCapabilities",
    "BlobStore",
    "BusCapabilities",
    "Clock",
    "ContainerRuntime",
    "ContainerSpec",
    "ContainerStatus",
    "Item",
    "Lease",
    "MessageBus",
    "OutboundMessage",
    "Ports",
    "Provisioner",
    "Queue",
    "RunState",
    "RuntimeCapabilities",
    "Scheduler",
    "SchedulerCapabilities",
    "Source",
    "StateCapabilities",
    "StateStore",
    "Subscription",
    "dead_letter_queue",
    "deferred",
    "deferred_ports",
]


class _Closable(Protocol):
    async def close(self) -> None: ...


@dataclass
class Ports:
    """Everything the core needs from a provider, built once by a composition root."""

    bus: MessageBus
    scheduler: Scheduler
    state: StateStore
    blobs: BlobStore
    #: One runtime per egress of the pool, by egress name (one object may serve several).
    runtimes: Mapping[str, ContainerRuntime]
    provisioner: Provisioner
    clock: Clock
    #: The egress pool the runtimes were built for (to serve records of a former entry).
    pool: Sequence[Egress] = ()

    def runtime_for(self, egress: Egress) -> ContainerRuntime:
        """The runtime that starts, stops and describes the containers of ``egress`` (the
        container record's copy of it). An egress no longer in the pool (renamed, removed)
        is served by the runtime of a pool entry of the same runtime kind -- the same region
        first -- so its containers can still be stopped; ``ConfigurationError`` if none."""
        runtime = self.runtimes.get(egress.name)
        if runtime is not None:
            return runtime
        kinds = [e for e in self.pool if e.name in self.runtimes]
        if egress.runtime:
            kinds = [e for e in kinds if e.runtime == egress.runtime]
        kinds.sort(key=lambda e: e.region != egress.region)
        if kinds:
            return self.runtimes[kinds[0].name]
        known = ", ".join(sorted(self.runtimes)) or "none"
        raise ConfigurationError(
            f"no container runtime for egress {egress.name!r} (configured: {known})"
        )

    async def list_running(self, egresses: Sequence[Egress]) -> list[ContainerStatus]:
        """The running containers of every egress in ``egresses``, each asked of its runtime."""
        found: list[ContainerStatus] = []
        for egress in egresses:
            found.extend(await self.runtime_for(egress).list_running(egress=egress))
        return found

    async def close(self) -> None:
        """Close every port -- runtimes, scheduler, provisioner, bus, state and blobs --, each
        even if another fails (the first failure is raised after all were tried). Each port
        closes only the clients it opened itself, so shared clients are closed once. A port
        built on first use (``deferred``) and never used is left alone."""
        runtimes = list({identity(r): r for r in self.runtimes.values()}.values())
        closables: tuple[_Closable, ...] = (
            *runtimes,
            self.scheduler,
            self.provisioner,
            self.bus,
            self.state,
            self.blobs,
        )
        failures: list[BaseException] = []
        for closable in closables:
            if not is_built(closable):
                continue
            try:
                await closable.close()
            except Exception as exc:  # close the rest, then report
                failures.append(exc)
        if failures:
            raise failures[0]
