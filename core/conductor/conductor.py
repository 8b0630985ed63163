"""The conductor: routes crawl requests to crawler containers and keeps the fleet honest.

Stateless between invocations: every fact lives in the StateStore and every decision that
must not happen twice is a compare-and-set, so any number of instances may handle inbox
messages at once and any message may arrive twice. Each handler checks the stored state
first and does nothing when the change it describes has already happened.

Where the pieces live:

* ``router.py`` — which container a pending crawl goes to (sticky sessions, least-loaded,
  start a new one, backlog at the tenant's limit);
* ``fleet.py`` — container lifecycle: start, slots, kill timers (generation-stamped,
  chained past the scheduler's native delay), drain-before-kill, stop and reap;
* ``transitions.py`` — the crawl's own state changes (dispatch, finish, requeue with bounded
  attempts, then dead-letter with a reason);
* this module — the inbox: one handler per message type. Reports from containers carry the
  attempt they speak for; a late report about an earlier attempt changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping

from pydantic import ValidationError

from core.conductor.fleet import ContainerFleet
from core.conductor.router import Router
from core.conductor.transitions import CrawlTransitions
from core.errors import InvalidRequest
from core.layout import subscription_name
from core.messages import (
    CancelCrawl,
    CancelRequested,
    ContainerExited,
    ContainerReady,
    CrawlCompleted,
    CrawlFailed,
    CrawlSubmitted,
    Heartbeat,
    InboxMessage,
    KillTimer,
    Progress,
    WebhookDue,
    decode_inbox,
    encode,
)
from core.models import (
    Container,
    ContainerState,
    Crawl,
    CrawlState,
    Tenant,
)
from core.ports import Ports
from core.records import Records
from core.settings import SkycrawlSettings

log = logging.getLogger("skycrawl.conductor")

Notifier = Callable[[Crawl], Awaitable[None]]


class Conductor:
    def __init__(
        self,
        *,
        ports: Ports,
        settings: SkycrawlSettings,
        engine_env: Mapping[str, str],
        records: Records | None = None,
        new_id: Callable[[], str] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.ports = ports
        self.settings = settings
        self.records = records or Records(ports.state)
        self.fleet = ContainerFleet(
            ports=ports,
            records=self.records,
            settings=settings,
            engine_env=engine_env,
            new_id=new_id or (lambda: str(uuid.uuid4())),
        )
        self._notifier = notifier
        self.transitions = CrawlTransitions(
            ports=ports, records=self.records, settings=settings, fleet=self.fleet
        )
        self.router = Router(
            ports=ports,
            records=self.records,
            settings=settings,
            fleet=self.fleet,
            transitions=self.transitions,
        )

    async def place(self, tenant: Tenant, crawl: Crawl) -> bool:
        """Put a pending crawl on a container; False when it stays in the backlog."""
        return await self.router.place(tenant, crawl)

    async def place_backlog(self, tenant_id: str) -> int:
        """Place the tenant's oldest pending crawls while there is room; returns how many."""
        return await self.router.place_backlog(tenant_id)

    # ------------------------------------------------------------------ entry points

    async def handle_raw(self, body: bytes) -> None:
        """Decode and handle one inbox message; ``InvalidRequest`` for garbage (dead-letter it)."""
        try:
            message = decode_inbox(body)
        except ValidationError as exc:
            raise InvalidRequest(f"undecodable inbox message: {exc.error_count()} errors") from exc
        await self.handle(message)

    async def handle(self, message: InboxMessage) -> None:
        match message:
            case CrawlSubmitted():
                await self._on_submitted(message)
            case ContainerReady():
                await self._on_ready(message)
            case Progress():
                await self._on_progress(message)
            case CrawlCompleted():
                await self._on_finished(message, CrawlState.completed, None)
            case CrawlFailed():
                await self._on_failed(message)
            case Heartbeat():
                await self._on_heartbeat(message)
            case KillTimer():
                if await self.fleet.on_kill_timer(message):  # a fleet slot is free: use it
                    await self.place_backlog(message.tenant_id)
            case ContainerExited():
                await self._on_exited(message)
            case CancelRequested():
                await self._on_cancel(message)
            case WebhookDue():
                await self._on_webhook(message)

    # ------------------------------------------------------------------ placement

    async def _on_submitted(self, msg: CrawlSubmitted) -> None:
        crawl = await self.records.crawls.get(msg.tenant_id, msg.crawl_id)
        tenant = await self.records.tenants.get("tenants", msg.tenant_id)
        if crawl is None or tenant is None:
            log.warning("submitted crawl %s/%s is unknown; dropped", msg.tenant_id, msg.crawl_id)
            return
        if crawl.value.state is CrawlState.pending:
            await self.place(tenant.value, crawl.value)
        elif crawl.value.state is CrawlState.dispatched and crawl.value.container_id:
            # redelivered: the send after the stored dispatch may never have happened
            holder = await self.records.containers.get(msg.tenant_id, crawl.value.container_id)
            if (
                holder is not None
                and holder.value.state is ContainerState.ready
                and crawl.value.id in holder.value.in_flight
            ):
                await self.transitions.send_run(
                    crawl.value
                )  # containers drop runs they already have

    # ------------------------------------------------------------------ container events

    async def _on_ready(self, msg: ContainerReady) -> None:
        now = self.ports.clock.now()

        def ready(c: Container) -> Container | None:
            if c.state is not ContainerState.starting:
                return None
            return c.model_copy(
                update={
                    "state": ContainerState.ready,
                    "ready_at": now,
                    "last_heartbeat": now,
                    "egress_ip": msg.egress_ip,
                }
            )

        container, _ = await self.records.containers.mutate(msg.tenant_id, msg.container_id, ready)
        if container is None or not container.state.live:
            # unknown, or reaped before it became ready: it must not run
            log.warning("ready from %s which is not live; stopping it", msg.container_id)
            await self.ports.runtime.stop_container(
                container_id=msg.container_id, grace_s=self.settings.stop_grace_s
            )
            await self.ports.bus.delete_subscription(  # it subscribed after it was reaped
                topic=self.settings.dispatch_topic, name=subscription_name(msg.container_id)
            )
            return
        # Publish for every reserved crawl, also on a duplicate ``ready``: a crash may have
        # come between the state change and the sends; containers ignore runs they have.
        for crawl_id in container.in_flight:
            crawl = await self.records.crawls.get(msg.tenant_id, crawl_id)
            if crawl is None:
                continue
            if crawl.value.state is CrawlState.pending:
                await self.transitions.commit_dispatch(crawl.value, container)
            elif (
                crawl.value.state is CrawlState.dispatched
                and crawl.value.container_id == container.id
            ):
                await self.transitions.send_run(crawl.value)
        await self.fleet.schedule_kill(container)

    async def _on_heartbeat(self, msg: Heartbeat) -> None:
        await self._touch(msg.tenant_id, msg.container_id, msg)

    async def _touch(
        self, tenant_id: str, container_id: str, beat_msg: Heartbeat | None = None
    ) -> Container | None:
        """Record a sign of life from a live container (and its egress numbers)."""
        now = self.ports.clock.now()

        def beat(c: Container) -> Container | None:
            if not c.state.live:
                return None
            update: dict[str, object] = {"last_heartbeat": now}
            if beat_msg is not None and beat_msg.proxy.requests:
                p = beat_msg.proxy
                update["health"] = c.health.add(p.requests, p.errors, p.mean_latency_ms)
            return c.model_copy(update=update)

        container, _ = await self.records.containers.mutate(tenant_id, container_id, beat)
        return container

    def _current(self, crawl: Crawl, container_id: str, attempt: int) -> bool:
        """Does a report from ``container_id`` about ``attempt`` speak for the crawl as it is?"""
        if crawl.container_id != container_id:
            return False
        return attempt == 0 or attempt == crawl.attempts

    async def _on_progress(self, msg: Progress) -> None:
        now = self.ports.clock.now()

        def advance(c: Crawl) -> Crawl | None:
            if c.state is not CrawlState.dispatched or not self._current(
                c, msg.container_id, msg.attempt
            ):
                return None
            return c.model_copy(update={"counts": msg.counts, "updated_at": now})

        await self.records.crawls.mutate(msg.tenant_id, msg.crawl_id, advance)
        await self._touch(msg.tenant_id, msg.container_id)

    async def _on_failed(self, msg: CrawlFailed) -> None:
        found = await self.records.crawls.get(msg.tenant_id, msg.crawl_id)
        if found is None or not self._current(found.value, msg.container_id, msg.attempt):
            return  # about an earlier attempt, or another container's: not ours to judge
        if msg.retryable:  # pending again, or dead-lettered once attempts are used up
            await self.transitions.requeue(found.value, msg.container_id, reason=msg.error)
            return
        await self._on_finished(msg, CrawlState.failed, msg.error)

    async def _on_finished(
        self, msg: CrawlCompleted | CrawlFailed, state: CrawlState, reason: str | None
    ) -> None:
        found = await self.records.crawls.get(msg.tenant_id, msg.crawl_id)
        if found is not None and self._current(found.value, msg.container_id, msg.attempt):
            await self.transitions.finish(found.value, state, reason=reason, counts=msg.counts)
        elif found is not None and found.value.container_id == msg.container_id:
            return  # a late report of an earlier attempt: the slot belongs to the current one
        await self.fleet.release(msg.tenant_id, msg.container_id, msg.crawl_id)
        await self.place_backlog(msg.tenant_id)

    async def requeue_orphans(self, tenant_id: str) -> int:
        """Requeue crawls dispatched to a container that is no longer live: its reap (or its
        start) was cut short by a fault after the container was marked. Returns how many."""
        requeued = 0
        for entry in await self.records.active.query(tenant_id):
            found = await self.records.crawls.get(tenant_id, entry.value.crawl_id)
            crawl = None if found is None else found.value
            if crawl is None or crawl.state is not CrawlState.dispatched or not crawl.container_id:
                continue
            holder = await self.records.containers.get(tenant_id, crawl.container_id)
            if holder is not None and holder.value.state.live:
                continue
            gone = "lost" if holder is None else holder.value.reason or holder.value.state.value
            await self.transitions.requeue(crawl, crawl.container_id, reason=f"container {gone}")
            requeued += 1
        return requeued

    async def _on_exited(self, msg: ContainerExited) -> None:
        container = await self.records.containers.get(msg.tenant_id, msg.container_id)
        if container is None or not container.value.state.live:
            return
        reason = msg.reason or f"exited with code {msg.exit_code}"
        await self.reap(container.value, reason)

    async def reap(self, container: Container, reason: str) -> None:
        """A container died or hung: mark it failed and take its work back."""
        final = await self.fleet.retire(container, ContainerState.failed, reason)
        for crawl_id in final.in_flight:
            crawl = await self.records.crawls.get(container.tenant_id, crawl_id)
            if crawl is None:
                continue
            if crawl.value.state is CrawlState.pending:  # reserved, never committed
                await self.fleet.release(container.tenant_id, container.id, crawl_id)
                submitted = CrawlSubmitted(tenant_id=container.tenant_id, crawl_id=crawl_id)
                await self.ports.bus.send(
                    queue=self.settings.inbox_queue, message=encode(submitted)
                )
            else:
                await self.transitions.requeue(
                    crawl.value, container.id, reason=f"container {reason}"
                )
        await self.place_backlog(container.tenant_id)

    # ------------------------------------------------------------------ cancel, webhooks

    async def _on_cancel(self, msg: CancelRequested) -> None:
        if msg.container_id is None:
            return
        holder = await self.records.containers.get(msg.tenant_id, msg.container_id)
        if holder is None or msg.crawl_id not in holder.value.in_flight:
            return  # handled already: a duplicate tells the container nothing twice
        crawl = await self.records.crawls.get(msg.tenant_id, msg.crawl_id)
        if crawl is None or crawl.value.state is not CrawlState.cancelled:
            return  # the API could not finish the cancel and reverted it
        cancel = CancelCrawl(
            container_id=msg.container_id, tenant_id=msg.tenant_id, crawl_id=msg.crawl_id
        )
        await self.ports.bus.publish(topic=self.settings.dispatch_topic, message=encode(cancel))
        await self.fleet.release(msg.tenant_id, msg.container_id, msg.crawl_id)
        await self.place_backlog(msg.tenant_id)

    async def _on_webhook(self, msg: WebhookDue) -> None:
        crawl = await self.records.crawls.get(msg.tenant_id, msg.crawl_id)
        if crawl is None or self._notifier is None or not crawl.value.spec.webhook_url:
            return
        await self._notifier(crawl.value)
