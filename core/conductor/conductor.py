"""The conductor: routes crawl requests to crawler containers and keeps the fleet honest.

Stateless between invocations: every fact lives in the StateStore and every decision that
must not happen twice is a compare-and-set, so any number of instances may handle inbox
messages at once and any message may arrive twice. Each handler checks the stored state
first and does nothing when the change it describes has already happened.

Where the pieces live:

* ``router.py`` — which container a pending crawl goes to (sticky sessions, least-loaded,
  start a new one, backlog at the tenant's limit);
* ``placement.py`` — the pure decision (commit, dispatch, start, wait) over a snapshot;
* ``fleet.py`` — container lifecycle: start, slots, kill timers (generation-stamped,
  chained past the scheduler's native delay), watchdogs, drain-before-stop, confirmed stops;
* ``transitions.py`` — the crawl's own state changes (dispatch, finish, requeue with bounded
  attempts, then dead-letter with a reason);
* ``outbox.py`` — messages stored with the state change that implies them, relayed after;
* this module — the inbox: one handler per message type. Reports from containers carry the
  attempt they speak for; a late report about an earlier attempt changes nothing.

Heartbeats also reconcile: a crawl the conductor dispatched to a container that the
container's heartbeats keep not listing is sent again (a lost publish), committed (a crash
between reserving and dispatching) or released (cancelled or finished meanwhile). A
heartbeat from a container still ``starting`` stands in for its late ``ready`` (engines
beat only after they subscribed and said ready; the egress IP then comes with no report).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Protocol

from pydantic import ValidationError

from core import telemetry
from core.conductor.budget_guard import BudgetGuard, EventSender
from core.conductor.egress_health import EgressHealthKeeper
from core.conductor.fleet import ContainerFleet
from core.conductor.outbox import Outbox, publish, send, with_entries
from core.conductor.router import Router
from core.conductor.transitions import CrawlTransitions
from core.errors import InvalidRequest
from core.layout import subscription_name, tenant_topic
from core.messages import (
    BudgetWarning,
    CancelCrawl,
    CancelRequested,
    ContainerExited,
    ContainerReady,
    CrawlCompleted,
    CrawlFailed,
    CrawlPaused,
    CrawlSubmitted,
    Heartbeat,
    InboxMessage,
    KillTimer,
    Progress,
    ProxyCooldown,
    ScheduleFire,
    StopDue,
    Watchdog,
    WebhookDue,
    WebhookSecretRetire,
    decode_inbox,
)
from core.models import (
    Container,
    ContainerState,
    Crawl,
    CrawlState,
    Tenant,
)
from core.paused import resumed
from core.ports import Ports
from core.records import Records, Versioned
from core.settings import SkycrawlSettings

log = logging.getLogger("skycrawl.conductor")


class Notifier(Protocol):
    """Sends a crawl's webhook (``core.webhooks.WebhookNotifier``); ``attempt`` counts from 1."""

    async def __call__(self, crawl: Crawl, *, attempt: int) -> None: ...


#: A crawl dispatched to a container whose heartbeats have not listed it this many times is
#: reconciled (sent again, committed or released); then again every as many heartbeats.
RESEND_AFTER_BEATS = 3


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
        events: EventSender | None = None,
    ) -> None:
        self.ports = ports
        self.settings = settings
        self.records = records or Records(ports.state)
        self.outbox = Outbox(ports)
        self.fleet = ContainerFleet(
            ports=ports,
            records=self.records,
            settings=settings,
            engine_env=engine_env,
            new_id=new_id or (lambda: str(uuid.uuid4())),
            outbox=self.outbox,
        )
        self._notifier = notifier
        self.health = EgressHealthKeeper(state=ports.state, settings=settings, outbox=self.outbox)
        self.transitions = CrawlTransitions(
            ports=ports,
            records=self.records,
            settings=settings,
            fleet=self.fleet,
            outbox=self.outbox,
        )
        self.budget = BudgetGuard(
            ports=ports, records=self.records, settings=settings, outbox=self.outbox, events=events
        )
        self.router = Router(
            ports=ports,
            records=self.records,
            settings=settings,
            fleet=self.fleet,
            transitions=self.transitions,
            health=self.health,
        )

    async def place(
        self, tenant: Tenant, crawl: Crawl, *, current: Versioned[Crawl] | None = None
    ) -> bool:
        """Put a pending crawl on a container; False when it stays in the backlog.
        ``current``: the crawl's record as read (saves a read when it is unchanged)."""
        return await self.router.place(tenant, crawl, current=current)

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
            case CrawlPaused():
                await self._on_paused(message)
            case CrawlFailed():
                await self._on_failed(message)
            case Heartbeat():
                await self._on_heartbeat(message)
            case KillTimer():
                await self.fleet.on_kill_timer(message)
            case Watchdog():
                await self._on_watchdog(message)
            case StopDue():
                await self._on_stop_due(message)
            case ContainerExited():
                await self._on_exited(message)
            case CancelRequested():
                await self._on_cancel(message)
            case WebhookDue():
                await self._on_webhook(message)
            case ScheduleFire():
                from core.schedules import on_fire  # core.schedules uses the outbox

                await on_fire(
                    message,
                    records=self.records,
                    outbox=self.outbox,
                    inbox_queue=self.settings.inbox_queue,
                    now=self.ports.clock.now(),
                )
            case WebhookSecretRetire():
                from core.webhooks import on_secret_retire  # core.webhooks uses the outbox

                await on_secret_retire(
                    message, self.records, self.outbox, self.settings.inbox_queue
                )
            case ProxyCooldown():
                await self.health.on_cooldown(message)
            case BudgetWarning():
                await self.budget.on_warning(message)

    # ------------------------------------------------------------------ placement

    async def _on_submitted(self, msg: CrawlSubmitted) -> None:
        with telemetry.span(
            "conductor crawl.submitted",
            msg.traceparent,
            kind="consumer",
            tenant_id=msg.tenant_id,
            crawl_id=msg.crawl_id,
        ):
            await self._submitted(msg)

    async def _submitted(self, msg: CrawlSubmitted) -> None:
        crawl = await self.records.crawls.get(msg.tenant_id, msg.crawl_id)
        tenant = await self.records.tenants.get("tenants", msg.tenant_id)
        if crawl is None or tenant is None:
            log.warning("submitted crawl %s/%s is unknown; dropped", msg.tenant_id, msg.crawl_id)
            return
        value = await self.outbox.relay(
            self.records.crawls, msg.tenant_id, msg.crawl_id, crawl.value
        )  # what a crashed instance left
        if value is not None and value.state is CrawlState.pending:
            await self.place(tenant.value, value, current=crawl if value is crawl.value else None)

    # ------------------------------------------------------------------ container events

    async def _on_ready(self, msg: ContainerReady) -> None:
        parent = None  # the container's start span: its record says (read only when on)
        if telemetry.enabled():
            found = await self.records.containers.get(msg.tenant_id, msg.container_id)
            parent = None if found is None else found.value.traceparent
        with telemetry.span(
            "container.ready",
            parent,
            kind="consumer",
            tenant_id=msg.tenant_id,
            container_id=msg.container_id,
            egress_ip=msg.egress_ip,
        ):
            await self._ready(msg)

    async def _ready(self, msg: ContainerReady) -> None:
        now = self.ports.clock.now()
        stats = await self.fleet.idle.stats(msg.tenant_id)

        def ready(c: Container) -> Container | None:
            if c.state is not ContainerState.starting:
                return None
            new = c.model_copy(
                update={
                    "state": ContainerState.ready,
                    "ready_at": now,
                    "last_heartbeat": now,
                    "egress_ip": msg.egress_ip,
                    "browser": msg.browser,
                    "beats": c.beats + 1,
                }
            )
            new = self.fleet.arm_liveness(new)
            if new.in_flight:
                return new
            new = self.fleet.idle.went_idle(new, stats)
            return with_entries(new, self.fleet.kill_timer(new))

        container, _ = await self.outbox.mutate(
            self.records.containers, msg.tenant_id, msg.container_id, ready
        )
        if container is None or container.state in (ContainerState.stopped, ContainerState.failed):
            # unknown, or reaped before it became ready: it must not run
            log.warning("ready from %s which is not live; stopping it", msg.container_id)
            await self.ports.bus.delete_subscription(  # it subscribed after it was reaped:
                topic=tenant_topic(self.settings.dispatch_topic, msg.tenant_id),  # first: no work
                name=subscription_name(msg.container_id),
            )
            # an unknown GUID may be on any egress: ask each (stopping a gone one is a no-op)
            for egress in self.settings.egresses if container is None else [container.egress]:
                await self.ports.runtime_for(egress).stop_container(
                    container_id=msg.container_id,
                    egress=egress,
                    grace_s=self.settings.stop_grace_s,
                )
            return
        if container.state is not ContainerState.ready:
            return  # draining: its stop is under way
        # Publish for every reserved crawl, also on a duplicate ``ready``: a crash may have
        # come between the state change and the sends; containers ignore runs they have.
        for crawl_id in container.in_flight:
            await self.reconcile(container, crawl_id)

    async def reconcile(self, container: Container, crawl_id: str) -> None:
        """Make one crawl in ``container.in_flight`` agree with its crawl record."""
        found = await self.records.crawls.get(container.tenant_id, crawl_id)
        crawl = None if found is None else found.value
        if crawl is not None and crawl.state is CrawlState.pending:
            if container.state is ContainerState.ready:
                crawl = await self.router.recover_proxy(crawl, container)
                await self.transitions.commit_dispatch(crawl, container)
            return  # reserved on a starting container: ``ready`` commits it
        if (
            crawl is not None
            and crawl.state is CrawlState.dispatched
            and crawl.container_id == container.id
        ):
            if container.state is ContainerState.ready:
                await self.transitions.send_run(crawl)
            return
        # cancelled, finished, or placed elsewhere meanwhile: the slot is free
        await self.fleet.release(container.tenant_id, container.id, crawl_id)

    async def _on_heartbeat(self, msg: Heartbeat) -> None:
        reported = set(msg.in_flight)
        fresh: list[bool] = []
        container = await self._touch(msg.tenant_id, msg.container_id, msg, reported, fresh)
        if container is not None and fresh and fresh[-1] and msg.proxies:
            await self.health.observe(container.egress, msg.proxies)  # once per heartbeat
        if container is not None and container.state is ContainerState.starting:
            # an engine heartbeats only once it subscribed and said ready: its ``ready`` is
            # late (held by an instance that died, until the lease runs out) -- take this
            # heartbeat for it, rather than reap a container that is up as "not ready"
            ready = ContainerReady(
                tenant_id=msg.tenant_id, container_id=msg.container_id, browser=msg.browser
            )
            await self._on_ready(ready)
            return
        if container is None or container.state is not ContainerState.ready:
            return
        for crawl_id, beats in container.unconfirmed.items():
            if beats and beats % RESEND_AFTER_BEATS == 0:
                await self.reconcile(container, crawl_id)

    async def _touch(
        self,
        tenant_id: str,
        container_id: str,
        beat_msg: Heartbeat | None = None,
        reported: set[str] | None = None,
        fresh: list[bool] | None = None,
    ) -> Container | None:
        """Record a sign of life from a live container (and its egress numbers); ``fresh``
        gets True appended when this call stored a new heartbeat."""
        now = self.ports.clock.now()
        accepted = fresh if fresh is not None else []

        def beat(c: Container) -> Container | None:
            accepted.append(False)
            if not c.state.live:
                return None
            seq = 0 if beat_msg is None else beat_msg.seq
            if beat_msg is None or (seq and seq <= c.heartbeat_seq):
                return None  # progress (not a heartbeat), or a duplicate or late heartbeat
            accepted[-1] = True
            update: dict[str, object] = {
                "last_heartbeat": now,
                "beats": c.beats + 1,
                "heartbeat_seq": max(seq, c.heartbeat_seq),
            }
            if beat_msg is not None and beat_msg.proxy.requests:
                p = beat_msg.proxy
                update["health"] = c.health.add(p.requests, p.errors, p.mean_latency_ms)
            if reported is not None:
                update["unconfirmed"] = {
                    cid: c.unconfirmed.get(cid, 0) + 1 for cid in c.in_flight if cid not in reported
                }
            return c.model_copy(update=update)

        container, _ = await self.outbox.mutate(
            self.records.containers, tenant_id, container_id, beat
        )
        return container

    @staticmethod
    def _expect(crawl: Crawl, container_id: str, attempt: int) -> tuple[str, int]:
        """The (container, attempt) a report speaks for (attempt 0: an engine that does not
        say, taken as the current one)."""
        return container_id, attempt or crawl.attempts

    def _current(self, crawl: Crawl, container_id: str, attempt: int) -> bool:
        """Does a report from ``container_id`` about ``attempt`` speak for the crawl as it is?"""
        return (crawl.container_id, crawl.attempts) == self._expect(crawl, container_id, attempt)

    async def _on_progress(self, msg: Progress) -> None:
        now = self.ports.clock.now()

        def advance(c: Crawl) -> Crawl | None:
            if c.state is not CrawlState.dispatched or not self._current(
                c, msg.container_id, msg.attempt
            ):
                return None
            return c.model_copy(update={"counts": msg.counts, "updated_at": now})

        await self.records.crawls.mutate(msg.tenant_id, msg.crawl_id, advance)

    async def _on_paused(self, msg: CrawlPaused) -> None:
        """The engine paused a crawl as told: ``paused`` (with the pause's reason), its slot
        free; pending again at once if the request was withdrawn (the limit lifted) while
        the engine finished its pages."""
        now = self.ports.clock.now()
        inbox = self.settings.inbox_queue

        def pause(c: Crawl) -> Crawl | None:
            if c.state is not CrawlState.dispatched or not self._current(
                c, msg.container_id, msg.attempt
            ):
                return None
            update: dict[str, object] = {
                "state": CrawlState.paused,
                "container_id": None,
                "counts": msg.counts,
                "reason": c.pause_requested or "paused",
                "pause_requested": None,
                "updated_at": now,
            }
            paused = c.model_copy(update=update)
            return paused if c.pause_requested else resumed(paused, now, inbox)

        crawl, changed = await self.outbox.mutate(
            self.records.crawls, msg.tenant_id, msg.crawl_id, pause
        )
        await self.fleet.release(msg.tenant_id, msg.container_id, msg.crawl_id)
        if changed and crawl is not None:
            log.info("crawl %s: %s (%s)", crawl.id, crawl.state.value, crawl.reason)
            if crawl.state is CrawlState.pending:
                await self.records.index_pending(crawl)
        await self.place_backlog(msg.tenant_id)

    async def _on_failed(self, msg: CrawlFailed) -> None:
        found = await self.records.crawls.get(msg.tenant_id, msg.crawl_id)
        if found is None or not self._current(found.value, msg.container_id, msg.attempt):
            await self._on_finished(msg, CrawlState.failed, msg.error)  # settles the slot
            return
        if msg.retryable:  # pending again, or dead-lettered once attempts are used up
            await self.transitions.requeue(found.value, msg.container_id, reason=msg.error)
            await self.place_backlog(msg.tenant_id)
            return
        await self._on_finished(msg, CrawlState.failed, msg.error)

    async def _on_finished(
        self, msg: CrawlCompleted | CrawlFailed, state: CrawlState, reason: str | None
    ) -> None:
        found = await self.records.crawls.get(msg.tenant_id, msg.crawl_id)
        if found is not None and self._current(found.value, msg.container_id, msg.attempt):
            expect = self._expect(found.value, msg.container_id, msg.attempt)
            await self.transitions.finish(
                found.value, state, reason=reason, counts=msg.counts, expect=expect
            )
        elif (
            found is not None
            and found.value.container_id == msg.container_id
            and not found.value.state.terminal
        ):
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
            if crawl is not None:
                crawl = await self.outbox.relay(self.records.crawls, tenant_id, crawl.id, crawl)
            if crawl is None:
                continue
            if crawl.state.terminal:  # finished, but a crash kept it in the index
                await self.transitions.finish(crawl, crawl.state)
                continue
            if crawl.state is CrawlState.pending:
                await self.records.index_pending(crawl)
                continue
            if not crawl.container_id:
                continue
            holder = await self.records.containers.get(tenant_id, crawl.container_id)
            if holder is not None and holder.value.state.live:
                continue
            gone = "lost" if holder is None else holder.value.reason or holder.value.state.value
            await self.transitions.requeue(crawl, crawl.container_id, reason=f"container {gone}")
            requeued += 1
        return requeued

    async def _on_exited(self, msg: ContainerExited) -> None:
        found = await self.records.containers.get(msg.tenant_id, msg.container_id)
        if found is None or not found.value.state.live:
            return
        container = found.value
        if container.state is ContainerState.draining:  # drained as told, or being stopped
            if not container.stop_requested:
                await self.fleet.request_stop(container, ContainerState.stopped, "idle")
            await self.complete_stop(container)
            return
        await self.reap(container, msg.reason or f"exited with code {msg.exit_code}")

    async def _on_stop_due(self, msg: StopDue) -> None:
        found = await self.records.containers.get(msg.tenant_id, msg.container_id)
        c = None if found is None else found.value
        if c is None or c.state is not ContainerState.draining:
            return
        if not c.stop_requested:
            if c.generation != msg.generation:
                return
            await self.fleet.request_stop(c, ContainerState.stopped, c.reason or "idle")
        await self.complete_stop(c)

    async def _on_watchdog(self, msg: Watchdog) -> None:
        reason = await self.fleet.on_watchdog(msg)
        if reason is None:
            return
        found = await self.records.containers.get(msg.tenant_id, msg.container_id)
        if found is not None:
            await self.reap(found.value, reason)

    async def reap(self, container: Container, reason: str) -> None:
        """A container died or hung: stop it, mark it failed and take its work back."""
        await self.fleet.request_stop(container, ContainerState.failed, reason)
        await self.complete_stop(container)

    async def complete_stop(self, container: Container) -> None:
        """Stop a container marked for stopping, then take back the work it held. Raises
        ``Retryable`` if the runtime could not stop it (the work stays until it can)."""
        final = await self.fleet.finalize(container)
        if final is None:
            return
        for crawl_id in final.in_flight:
            found = await self.records.crawls.get(container.tenant_id, crawl_id)
            if found is None:
                continue
            crawl = found.value
            if crawl.state is CrawlState.pending:  # reserved, never committed: resubmit
                await self.outbox.deliver(
                    send(
                        self.settings.inbox_queue,
                        CrawlSubmitted(
                            tenant_id=container.tenant_id,
                            crawl_id=crawl_id,
                            traceparent=crawl.traceparent,
                        ),
                    )
                )
            elif crawl.state is CrawlState.dispatched and crawl.container_id == container.id:
                await self.transitions.requeue(
                    crawl, container.id, reason=f"container {final.reason or final.state.value}"
                )
        await self.place_backlog(container.tenant_id)

    # ------------------------------------------------------------------ cancel, webhooks

    async def _on_cancel(self, msg: CancelRequested) -> None:
        crawl = await self.records.crawls.get(msg.tenant_id, msg.crawl_id)
        if crawl is None or crawl.value.state is not CrawlState.cancelled:
            return  # the API could not finish the cancel and reverted it
        await self.transitions.relay(crawl.value)  # its usage, stored with the cancel
        await self.transitions.finish(crawl.value, CrawlState.cancelled)  # indexes
        if msg.container_id is None:  # cancelled while pending — perhaps reserved already
            for holder in await self.records.live_containers(msg.tenant_id):
                if msg.crawl_id in holder.in_flight:
                    await self.fleet.release(msg.tenant_id, holder.id, msg.crawl_id)
            return
        cancel = CancelCrawl(
            container_id=msg.container_id, tenant_id=msg.tenant_id, crawl_id=msg.crawl_id
        )
        told = publish(tenant_topic(self.settings.dispatch_topic, msg.tenant_id), cancel)
        await self.fleet.release(msg.tenant_id, msg.container_id, msg.crawl_id, also=(told,))
        await self.place_backlog(msg.tenant_id)

    async def _on_webhook(self, msg: WebhookDue) -> None:
        crawl = await self.records.crawls.get(msg.tenant_id, msg.crawl_id)
        if crawl is None or self._notifier is None or not crawl.value.spec.webhook_url:
            return
        await self._notifier(crawl.value, attempt=msg.attempt)
