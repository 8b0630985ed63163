"""The conductor: routes crawl requests to crawler containers and keeps the fleet honest.

Stateless between invocations: every fact lives in the StateStore and every decision that
must not happen twice is a compare-and-set, so any number of instances may handle inbox
messages at once and any message may arrive twice. Each handler checks the stored state
first and does nothing when the change it describes has already happened.

Decisions (the brief's story, steps 3-6):

* a crawl with a ``session`` goes to the container bound to that session (sticky egress);
* otherwise to the least-loaded ready/starting container of its egress with a free slot;
* otherwise a new container is started (a GUID + connection settings) and the crawl waits,
  reserved on it, until ``ContainerReady``;
* at the tenant's container limit the crawl stays ``pending`` in the tenant's backlog and is
  placed when a slot frees (completion, stop, housekeeping);
* every change of a container's work arms a kill timer at its new generation;
* a container that dies takes its work back to ``pending`` (bounded attempts, resumed from
  the checkpoint), and past ``max_attempts`` the crawl is dead-lettered with a reason.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping

from pydantic import ValidationError

from core.conductor.fleet import ContainerFleet
from core.conductor.placement import choose_egress, pick_container
from core.errors import Conflict, InvalidRequest
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
    RunCrawl,
    WebhookDue,
    decode_inbox,
    encode,
)
from core.models import (
    Container,
    ContainerState,
    Crawl,
    CrawlCounts,
    CrawlState,
    Egress,
    SessionBinding,
    Tenant,
    TenantState,
)
from core.ports import Ports
from core.records import Records
from core.settings import SkycrawlSettings

log = logging.getLogger("skycrawl.conductor")

Notifier = Callable[[Crawl], Awaitable[None]]
BACKLOG_BATCH = 50


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
                await self._on_finished(
                    message.tenant_id,
                    message.container_id,
                    message.crawl_id,
                    CrawlState.completed,
                    message.counts,
                    None,
                )
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
                await self._send_run(crawl.value)  # containers drop runs they already have

    async def place(self, tenant: Tenant, crawl: Crawl) -> bool:
        """Put a pending crawl on a container. False when it stays in the backlog."""
        if tenant.state is not TenantState.active:  # being torn down: start nothing for it
            await self._finish(crawl, CrawlState.cancelled, reason="tenant deleted")
            return True
        try:
            egress = choose_egress(crawl.spec, self.settings.egresses)
        except InvalidRequest as exc:
            await self._finish(crawl, CrawlState.failed, reason=exc.detail)
            return True
        for _ in range(10):
            containers = await self._candidates(tenant.id)
            holder = next((c for c in containers if crawl.id in c.in_flight), None)
            if holder is not None:  # reserved before a crash or a duplicate: finish the job
                await self._commit_dispatch(crawl, holder)
                return True
            target, sticky = await self._session_target(tenant, crawl, containers)
            if target is None:
                target = pick_container(containers, egress)
            if target is None:
                try:
                    target, bound = await self._start(tenant, crawl, egress)
                except Conflict:
                    continue  # the session was bound elsewhere meanwhile: follow it
                sticky = sticky or bound
            if target is None:  # the limit may be full of containers started meanwhile, with room
                target = pick_container(await self._candidates(tenant.id), egress)
            if target is None:
                log.info("tenant %s at its container limit; crawl %s waits", tenant.id, crawl.id)
                return False
            reserved = await self.fleet.reserve(tenant.id, target.id, crawl.id, force=sticky)
            if reserved is None:
                continue  # it filled up or began draining meanwhile: decide again
            if crawl.spec.session and not sticky and not await self._bind(crawl, reserved):
                await self.fleet.release(tenant.id, reserved.id, crawl.id)
                continue  # another instance bound this session elsewhere: follow it
            await self._commit_dispatch(crawl, reserved)
            return True
        raise Conflict(f"could not place crawl {crawl.id}: too much contention")

    async def _start(
        self, tenant: Tenant, crawl: Crawl, egress: Egress
    ) -> tuple[Container | None, bool]:
        """Start a container for ``crawl`` -> (container or None at the limit, session bound).
        A session is bound to the new container before it runs, so that two instances never
        start one each for the same session (``Conflict`` if it went elsewhere meanwhile)."""
        if not crawl.spec.session:
            return await self.fleet.start(tenant, egress), False
        claimed: list[bool] = []

        async def bind_first(new: Container) -> bool:
            claimed.append(await self._bind(crawl, new))
            return claimed[-1]

        container = await self.fleet.start(tenant, egress, claim=bind_first)
        if claimed and not claimed[-1]:  # started anyway, for work it got meanwhile
            raise Conflict(f"session {crawl.spec.session!r} was bound elsewhere meanwhile")
        return container, bool(claimed)

    async def _candidates(self, tenant_id: str) -> list[Container]:
        """Live containers that hold a fleet slot. A container whose start lost the race for
        the last slot has a record for a moment, and must take no work before it is gone."""
        containers = await self.records.live_containers(tenant_id)
        fleet = await self.records.fleets.get(tenant_id, "fleet")
        slots = set() if fleet is None else set(fleet.value.containers)
        return [c for c in containers if c.id in slots]

    async def _session_target(
        self, tenant: Tenant, crawl: Crawl, containers: list[Container]
    ) -> tuple[Container | None, bool]:
        if not crawl.spec.session:
            return None, False
        binding = await self.records.sessions.get(tenant.id, crawl.spec.session)
        if binding is None:
            return None, False
        bound = next((c for c in containers if c.id == binding.value.container_id), None)
        if bound is None:  # maybe started after ``containers`` was read: ask its record
            fresh = await self.records.containers.get(tenant.id, binding.value.container_id)
            bound = None if fresh is None else fresh.value
        if bound is not None and bound.state in (ContainerState.ready, ContainerState.starting):
            return bound, True
        with contextlib.suppress(Conflict):  # its container is gone: the session starts afresh
            await self.records.sessions.delete(binding)
        return None, False

    async def _bind(self, crawl: Crawl, container: Container) -> bool:
        assert crawl.spec.session is not None
        binding = SessionBinding(
            tenant_id=crawl.tenant_id,
            session=crawl.spec.session,
            container_id=container.id,
            egress=container.egress.name,
            bound_at=self.ports.clock.now(),
        )
        try:
            await self.records.sessions.create(crawl.tenant_id, crawl.spec.session, binding)
        except Conflict:
            existing = await self.records.sessions.get(crawl.tenant_id, crawl.spec.session)
            return existing is not None and existing.value.container_id == container.id
        return True

    async def _commit_dispatch(self, crawl: Crawl, container: Container) -> None:
        now = self.ports.clock.now()

        def dispatch(c: Crawl) -> Crawl | None:
            if c.state is not CrawlState.pending:
                return None
            return c.model_copy(
                update={
                    "state": CrawlState.dispatched,
                    "container_id": container.id,
                    "attempts": c.attempts + 1,
                    "dispatched_at": now,
                    "updated_at": now,
                }
            )

        updated, _ = await self.records.crawls.mutate(crawl.tenant_id, crawl.id, dispatch)
        if updated is None or updated.state is not CrawlState.dispatched:
            # cancelled (or finished) meanwhile: give the slot back
            await self.fleet.release(crawl.tenant_id, container.id, crawl.id)
            return
        if updated.container_id != container.id:
            await self.fleet.release(crawl.tenant_id, container.id, crawl.id)
            return
        if container.state is ContainerState.ready:
            try:
                await self._send_run(updated)
            except Exception:  # undo, so that whichever retry or timer comes next places it
                await self._undispatch(updated, container.id)
                raise
        await self.fleet.schedule_kill(container)

    async def _undispatch(self, crawl: Crawl, container_id: str) -> None:
        def back(c: Crawl) -> Crawl | None:
            if c.state is not CrawlState.dispatched or c.attempts != crawl.attempts:
                return None
            if c.container_id != container_id:
                return None
            update = {"state": CrawlState.pending, "container_id": None, "dispatched_at": None}
            return c.model_copy(update={**update, "attempts": c.attempts - 1})

        await self.records.crawls.mutate(crawl.tenant_id, crawl.id, back)
        await self.fleet.release(crawl.tenant_id, container_id, crawl.id)

    async def _send_run(self, crawl: Crawl) -> None:
        assert crawl.container_id is not None
        run = RunCrawl(
            container_id=crawl.container_id,
            tenant_id=crawl.tenant_id,
            crawl_id=crawl.id,
            attempt=crawl.attempts,
            spec=crawl.spec,
            session=crawl.spec.session,
        )
        await self.ports.bus.publish(topic=self.settings.dispatch_topic, message=encode(run))

    async def place_backlog(self, tenant_id: str) -> int:
        """Place the tenant's oldest pending crawls while there is room. Returns how many."""
        tenant = await self.records.tenants.get("tenants", tenant_id)
        if tenant is None:
            return 0
        entries = sorted(
            (v.value for v in await self.records.active.query(tenant_id)),
            key=lambda a: (a.created_at, a.crawl_id),
        )
        placed = 0
        for entry in entries[:BACKLOG_BATCH]:
            crawl = await self.records.crawls.get(tenant_id, entry.crawl_id)
            if crawl is None:
                await self.records.active.discard(tenant_id, entry.crawl_id)
                continue
            if crawl.value.state is not CrawlState.pending:
                continue
            if not await self.place(tenant.value, crawl.value):
                if not crawl.value.spec.session:
                    break
                continue
            placed += 1
        return placed

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
                await self._commit_dispatch(crawl.value, container)
            elif (
                crawl.value.state is CrawlState.dispatched
                and crawl.value.container_id == container.id
            ):
                await self._send_run(crawl.value)
        await self.fleet.schedule_kill(container)

    async def _on_heartbeat(self, msg: Heartbeat) -> None:
        now = self.ports.clock.now()

        def beat(c: Container) -> Container | None:
            if not c.state.live:
                return None
            return c.model_copy(update={"last_heartbeat": now})

        await self.records.containers.mutate(msg.tenant_id, msg.container_id, beat)

    async def _on_progress(self, msg: Progress) -> None:
        now = self.ports.clock.now()

        def advance(c: Crawl) -> Crawl | None:
            if c.state is not CrawlState.dispatched or c.container_id != msg.container_id:
                return None
            return c.model_copy(update={"counts": msg.counts, "updated_at": now})

        await self.records.crawls.mutate(msg.tenant_id, msg.crawl_id, advance)
        await self._on_heartbeat(Heartbeat(tenant_id=msg.tenant_id, container_id=msg.container_id))

    async def _on_failed(self, msg: CrawlFailed) -> None:
        crawl = await self.records.crawls.get(msg.tenant_id, msg.crawl_id)
        if crawl is None or crawl.value.container_id != msg.container_id:
            return
        if msg.retryable and crawl.value.attempts < self.settings.max_attempts:
            await self._requeue(crawl.value, msg.container_id, reason=msg.error)
            return
        await self._on_finished(
            msg.tenant_id, msg.container_id, msg.crawl_id, CrawlState.failed, msg.counts, msg.error
        )

    async def _on_finished(
        self,
        tenant_id: str,
        container_id: str,
        crawl_id: str,
        state: CrawlState,
        counts: CrawlCounts,
        reason: str | None,
    ) -> None:
        crawl = await self.records.crawls.get(tenant_id, crawl_id)
        if crawl is not None and crawl.value.container_id == container_id:
            await self._finish(crawl.value, state, reason=reason, counts=counts)
        await self.fleet.release(tenant_id, container_id, crawl_id)
        await self.place_backlog(tenant_id)

    async def _finish(
        self,
        crawl: Crawl,
        state: CrawlState,
        *,
        reason: str | None = None,
        counts: CrawlCounts | None = None,
    ) -> None:
        """Move a non-terminal crawl to terminal ``state`` (once), then drop it from the index."""
        now = self.ports.clock.now()

        def end(c: Crawl) -> Crawl | None:
            if c.state.terminal:
                return None
            update: dict[str, object] = {
                "state": state,
                "reason": reason,
                "finished_at": now,
                "updated_at": now,
            }
            if counts is not None:
                update["counts"] = counts
            return c.model_copy(update=update)

        final, changed = await self.records.crawls.mutate(crawl.tenant_id, crawl.id, end)
        await self.records.active.discard(crawl.tenant_id, crawl.id)
        if changed and final is not None and final.spec.webhook_url:
            await self.ports.bus.send(
                queue=self.settings.inbox_queue,
                message=encode(WebhookDue(tenant_id=crawl.tenant_id, crawl_id=crawl.id)),
            )

    async def _requeue(self, crawl: Crawl, container_id: str, *, reason: str) -> None:
        """Take a crawl back from a container: pending again, or dead-lettered when its
        attempts are used up."""
        if crawl.state is not CrawlState.dispatched or crawl.container_id != container_id:
            await self.fleet.release(crawl.tenant_id, container_id, crawl.id)
            return
        if crawl.attempts >= self.settings.max_attempts:
            await self._finish(
                crawl,
                CrawlState.dead_lettered,
                reason=f"{reason}; gave up after {crawl.attempts} attempts",
            )
        else:
            now = self.ports.clock.now()

            def back(c: Crawl) -> Crawl | None:
                if c.state is not CrawlState.dispatched or c.container_id != container_id:
                    return None
                return c.model_copy(
                    update={
                        "state": CrawlState.pending,
                        "container_id": None,
                        "updated_at": now,
                        "reason": reason,
                    }
                )

            _, changed = await self.records.crawls.mutate(crawl.tenant_id, crawl.id, back)
            if changed:
                submitted = CrawlSubmitted(tenant_id=crawl.tenant_id, crawl_id=crawl.id)
                await self.ports.bus.send(
                    queue=self.settings.inbox_queue, message=encode(submitted)
                )
        await self.fleet.release(crawl.tenant_id, container_id, crawl.id)

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
            await self._requeue(crawl, crawl.container_id, reason=f"container {gone}")
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
                await self._requeue(crawl.value, container.id, reason=f"container {reason}")
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
