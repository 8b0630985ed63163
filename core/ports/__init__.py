"""Ports: the small interfaces every cloud adapter implements (see tests/contract/)."""

from dataclasses import dataclass

from core.clock import Clock
from core.ports.blob_store import BlobCapabilities, BlobStore
from core.ports.container_runtime import (
    ContainerRuntime,
    ContainerSpec,
    ContainerStatus,
    RunState,
    RuntimeCapabilities,
)
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
]


@dataclass
class Ports:
    """Everything the core needs from a provider, built once by a composition root."""

    bus: MessageBus
    scheduler: Scheduler
    state: StateStore
    blobs: BlobStore
    runtime: ContainerRuntime
    provisioner: Provisioner
    clock: Clock

    async def close(self) -> None:
        """Close every port -- runtime, scheduler, provisioner, bus, state and blobs --, each
        even if another fails (the first failure is raised after all were tried). Each port
        closes only the clients it opened itself, so shared clients are closed once."""
        closables = (
            self.runtime,
            self.scheduler,
            self.provisioner,
            self.bus,
            self.state,
            self.blobs,
        )
        failures: list[BaseException] = []
        for closable in closables:
            try:
                await closable.close()
            except Exception as exc:  # close the rest, then report
                failures.append(exc)
        if failures:
            raise failures[0]
