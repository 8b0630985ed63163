"""Composition root of the Google Cloud functions: ports, conductor, housekeeping and API,
built once per function instance from typed settings, on one event loop of its own.

functions-framework serves each request on a (Flask/gunicorn) worker thread; the core is async
and its gRPC clients belong to one event loop. So the stack owns a ``LoopThread`` -- an event
loop running forever on a daemon thread -- builds everything on it, and every handler submits
its coroutine there and waits (``GcpStack.run``): the thin sync shim the platform requires.
Concurrent requests of one instance share the loop and the clients.

``get_stack()`` builds the stack from the environment on first use (``SkycrawlSettings``,
``GcpSettings``); ``install_stack`` lets another host or a test provide its own, built with
``build_gcp_stack`` (injected clients, runtime, token verifier). Nothing is created at import.
The inbox queue is created by Terraform; ``GcpStack.prepare`` creates it too, idempotently,
for emulators and first deployments. Each tenant's dispatch topic comes with the tenant.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from adapters.gcp.provider import GcpClients, build_ports, engine_env
from adapters.gcp.settings import GcpSettings
from core import telemetry
from core.api import Api
from core.conductor import Conductor, Housekeeper, HousekeepingReport
from core.control_plane import build_control_plane
from core.inbox import InboxOutcome, Settlement, settle
from core.ports import ContainerRuntime, OutboundMessage, Ports, dead_letter_queue
from core.ports.message_bus import dead_letter_attributes
from core.records import Records
from core.settings import SkycrawlSettings
from core.tenancy import TenantService
from functions.gcp.oidc import GoogleTokenVerifier, TokenVerifier, authorize

log = logging.getLogger("skycrawl.gcp")
T = TypeVar("T")


class RetryLater(Exception):
    """An inbox message to deliver again later: the push is answered 5xx (Pub/Sub nacks)."""


class LoopThread:
    """An event loop running on its own daemon thread; ``run`` executes a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="skycrawl-loop")
        self._thread.daemon = True
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class GcpStack:
    settings: SkycrawlSettings
    gcp: GcpSettings
    ports: Ports
    records: Records
    conductor: Conductor
    housekeeper: Housekeeper
    tenants: TenantService
    api: Api
    verifier: TokenVerifier
    loop: LoopThread

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the stack's loop and wait for it (from any other thread), then
        export the request's telemetry (if on): Cloud Run may throttle the CPU after it."""
        try:
            return self.loop.run(coro)
        finally:
            telemetry.flush()

    async def prepare(self) -> None:
        """Create the inbox queue (idempotent); each tenant's dispatch topic comes with the
        tenant (``GcpProvisioner``)."""
        await self.ports.bus.ensure_queue(
            name=self.settings.inbox_queue, max_deliveries=self.settings.max_deliveries
        )

    async def handle_inbox(self, body: bytes, *, delivery_count: int = 1) -> InboxOutcome:
        """One pushed inbox message, settled as the core decides (``core.inbox.settle``):
        ``dead_letter`` publishes it to the dead-letter topic with the reason (and the push is
        then acknowledged); ``retry`` raises ``RetryLater`` so that the push is answered 5xx
        and Pub/Sub redelivers it with back-off until its dead-letter policy moves it."""
        outcome = await settle(self.conductor, body, delivery_count=delivery_count)
        if outcome.settlement is Settlement.dead_letter:
            inbox = self.settings.inbox_queue
            attributes = dead_letter_attributes({}, reason=outcome.reason, source=inbox)
            dead = OutboundMessage(body=body, attributes=attributes)
            await self.ports.bus.send(queue=dead_letter_queue(inbox), message=dead)
        elif outcome.settlement is Settlement.retry:
            raise RetryLater(outcome.reason)
        return outcome

    async def deliver_timer(self, payload: bytes) -> str:
        from adapters.gcp.scheduler import deliver_timer  # with Cloud Tasks' SDK: on first use

        return await deliver_timer(self.ports.bus, payload)

    async def housekeeping(self) -> HousekeepingReport:
        return await self.housekeeper.run()

    def authorize(self, authorization_header: str | None) -> str:
        """The caller of an internal endpoint; ``Unauthorized``/``Forbidden`` otherwise."""
        return authorize(
            authorization_header,
            verifier=self.verifier,
            audience=self.gcp.audience,
            callers=self.gcp.callers,
        )

    def close(self) -> None:
        self.run(self.ports.close())
        self.loop.close()


def build_gcp_stack(
    settings: SkycrawlSettings,
    gcp: GcpSettings,
    *,
    clients: Callable[[], GcpClients] | None = None,
    runtime: Callable[[], ContainerRuntime] | None = None,
    verifier: TokenVerifier | None = None,
) -> GcpStack:
    """Build the stack on a new loop; ``clients`` and ``runtime`` run on that loop."""
    loop = LoopThread()

    async def build() -> GcpStack:
        ports = build_ports(
            settings,
            gcp,
            clients=clients() if clients else None,
            runtime=runtime() if runtime else None,
        )
        plane = build_control_plane(ports, settings, engine_env=engine_env(gcp))
        return GcpStack(
            settings=settings,
            gcp=gcp,
            ports=ports,
            records=plane.records,
            conductor=plane.conductor,
            housekeeper=plane.housekeeper,
            tenants=plane.tenants,
            api=plane.api,
            verifier=verifier or GoogleTokenVerifier(),
            loop=loop,
        )

    try:
        return loop.run(build())
    except BaseException:
        loop.close()
        raise


_stack: GcpStack | None = None
_lock = threading.Lock()


def get_stack() -> GcpStack:
    """The instance's stack, built from the environment on first use."""
    global _stack
    with _lock:
        if _stack is None:
            _stack = build_gcp_stack(SkycrawlSettings(), GcpSettings())
        return _stack


def install_stack(stack: GcpStack | None) -> GcpStack | None:
    """Use ``stack`` from now on (None: build from the environment again); returns the old."""
    global _stack
    with _lock:
        previous, _stack = _stack, stack
        return previous
