"""Schedulers of the Azure provider: kill timers and other delayed messages.

``ServiceBusScheduler``
    Service Bus scheduled messages: ``schedule`` calls ``ServiceBusSender.schedule_messages``
    on the target queue (the message is enqueued by the service at ``deliver_at``, durable,
    nothing of ours runs meanwhile); the handle is ``<queue>:<sequence number>``. ``cancel``
    is ``cancel_scheduled_messages`` -- best effort, as the port says: False once the message
    was enqueued (the service answers "not found") or for an unknown handle. Delays up to 30
    days natively (``capabilities.max_delay_s``; the core chains longer ones). Costs one
    operation per timer (Standard tier: $0.80 per million after the first 13 M).

``StorageQueueScheduler``
    Storage queues' initial visibility timeout: ``schedule`` sends the message invisible for
    the whole seconds until ``deliver_at`` (rounded up; under a second it waits in-process and
    sends it visible). The handle is the message's id and pop receipt, so ``cancel`` deletes
    it while nobody has received it yet (True), and is False after (the pop receipt changed).
    Delays up to 7 days. Costs one transaction per timer.

Both refuse a naive ``deliver_at`` (``core.errors.InvalidRequest``) and deliver a past one at
once. "Now" is the bus's clock.
"""

from __future__ import annotations

from datetime import timedelta

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from adapters.azure.errors import translated_errors
from adapters.azure.message_bus import ServiceBusMessageBus
from adapters.azure.message_bus_storage_queue import StorageQueueMessageBus
from adapters.azure.storage_queue_wire import MAX_DELAY_S as STORAGE_MAX_DELAY_S
from adapters.azure.storage_queue_wire import parse_receipt
from core.errors import InvalidRequest
from core.ports.message_bus import OutboundMessage
from core.ports.scheduler import SchedulerCapabilities

SERVICEBUS_MAX_DELAY_S = 30 * 86400.0


@translated_errors("Service Bus")
class ServiceBusScheduler:
    """Scheduler on Service Bus scheduled messages."""

    capabilities = SchedulerCapabilities(max_delay_s=SERVICEBUS_MAX_DELAY_S, can_cancel=True)

    def __init__(self, bus: ServiceBusMessageBus) -> None:
        self._bus = bus

    async def close(self) -> None:
        """Nothing of its own: scheduled messages go through the bus, closed by its owner."""

    async def schedule(self, *, queue: str, message: OutboundMessage, delay_s: float) -> str:
        if delay_s > SERVICEBUS_MAX_DELAY_S:
            raise InvalidRequest(
                f"delay of {delay_s:.0f} s is more than {SERVICEBUS_MAX_DELAY_S:.0f} s"
            )
        # Service Bus takes an absolute enqueue time: converted here, with this instance's clock
        deliver_at = self._bus.clock.now() + timedelta(seconds=max(0.0, delay_s))
        sequence = await self._bus.schedule_at(queue=queue, message=message, deliver_at=deliver_at)
        return f"{queue}:{sequence}"

    async def cancel(self, *, handle: str) -> bool:
        queue, _, sequence = handle.rpartition(":")
        if not queue or not sequence.isdigit():
            return False
        return await self._bus.cancel_scheduled(queue=queue, sequence_number=int(sequence))


@translated_errors("Queue storage")
class StorageQueueScheduler:
    """Scheduler on Storage queue visibility timeouts."""

    capabilities = SchedulerCapabilities(max_delay_s=STORAGE_MAX_DELAY_S, can_cancel=True)

    def __init__(self, bus: StorageQueueMessageBus) -> None:
        self._bus = bus

    async def close(self) -> None:
        """Nothing of its own: timers are queue messages of the bus, closed by its owner."""

    async def schedule(self, *, queue: str, message: OutboundMessage, delay_s: float) -> str:
        delay_s = max(delay_s, 0.0)  # a visibility timeout: relative, measured by the service
        if delay_s > STORAGE_MAX_DELAY_S:
            raise InvalidRequest(
                f"delay of {delay_s:.0f} s is more than {STORAGE_MAX_DELAY_S:.0f} s"
            )
        _, handle = await self._bus.send_at_delay(queue=queue, message=message, delay_s=delay_s)
        return handle

    async def cancel(self, *, handle: str) -> bool:
        parsed = parse_receipt(handle)
        if parsed is None:
            return False
        queue, message_id, pop_receipt = parsed
        try:
            await self._bus.queue(queue).delete_message(message_id, pop_receipt)
        except (ResourceNotFoundError, HttpResponseError):
            return False
        return True
