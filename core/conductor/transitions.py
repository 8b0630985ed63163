"""Crawl state transitions the conductor makes: dispatch, finish, requeue.

Each is a compare-and-set on the crawl record that applies only from the state, container and
attempt it expects, so a duplicate or late message changes nothing — in particular a report
about attempt 1 can neither end nor requeue attempt 2 that was dispatched in between. The
message a transition implies (``RunCrawl``, ``CrawlSubmitted``, ``WebhookDue``) is stored in
the same write (the outbox) and relayed after; the container's slot is released alongside.
"""

from __future__ import annotations

import contextlib
import logging

from core import metering, telemetry
from core.conductor.fleet import ContainerFleet
from core.conductor.outbox import Outbox, publish, send, with_entries
from core.errors import Conflict
from core.layout import tenant_topic
from core.messages import CrawlSubmitted, RunCrawl, WebhookDue
from core.models import Container, ContainerState, Crawl, CrawlCounts, CrawlState, OutboxEntry
from core.ports import Ports
from core.records import ActiveCrawl, Records, Versioned, finished_key
from core.settings import SkycrawlSettings

log = logging.getLogger("skycrawl.conductor")


class CrawlTransitions:
    def __init__(
        self,
        *,
        ports: Ports,
        records: Records,
        settings: SkycrawlSettings,
        fleet: ContainerFleet,
        outbox: Outbox,
    ) -> None:
        self.ports = ports
        self.records = records
        self.settings = settings
        self.fleet = fleet
        self._outbox = outbox

    def run_entry(self, crawl: Crawl) -> OutboxEntry:
        assert crawl.container_id is not None
        run = RunCrawl(
            container_id=crawl.container_id,
            tenant_id=crawl.tenant_id,
            crawl_id=crawl.id,
            attempt=crawl.attempts,
            spec=crawl.spec,
            session=crawl.spec.session,
            proxy=crawl.proxy,
            traceparent=telemetry.current_traceparent(crawl.traceparent),
        )
        return publish(tenant_topic(self.settings.dispatch_topic, crawl.tenant_id), run)

    async def commit_dispatch(
        self, crawl: Crawl, container: Container, *, current: Versioned[Crawl] | None = None
    ) -> None:
        """pending → dispatched on ``container`` (reserved there already); a ready container
        gets its ``RunCrawl`` in the same write, a starting one when it says ready.
        ``current``: the crawl record as last read (tried first, without a read)."""
        now = self.ports.clock.now()

        def dispatch(c: Crawl) -> Crawl | None:
            if c.state is not CrawlState.pending:
                return None
            new = c.model_copy(
                update={
                    "state": CrawlState.dispatched,
                    "container_id": container.id,
                    "attempts": c.attempts + 1,
                    "dispatched_at": now,
                    "updated_at": now,
                    # why it waited is over; why it was requeued stays, for the tenant
                    "reason": None if (c.reason or "").startswith("waiting") else c.reason,
                    "proxy": crawl.proxy or c.proxy,  # the route's proxy (egress scoring)
                }
            )
            if container.state is ContainerState.ready:
                return with_entries(new, self.run_entry(new))
            return new

        updated, _ = await self._outbox.mutate(
            self.records.crawls, crawl.tenant_id, crawl.id, dispatch, current=current
        )
        if updated is None or updated.state is not CrawlState.dispatched:
            # cancelled (or finished) meanwhile: give the slot back
            await self.fleet.release(crawl.tenant_id, container.id, crawl.id)
            if updated is not None and updated.state.terminal:
                await self._drop_indexes(updated)
            return
        if updated.container_id != container.id:
            await self.fleet.release(crawl.tenant_id, container.id, crawl.id)
            return
        await self.records.unindex_pending(updated)

    async def relay(self, crawl: Crawl) -> Crawl | None:
        """Deliver what a crawl record's outbox holds (left by a failed or cut-off relay)."""
        return await self._outbox.relay(self.records.crawls, crawl.tenant_id, crawl.id, crawl)

    async def send_run(self, crawl: Crawl) -> None:
        """Publish the crawl's current run again (containers drop runs they already have)."""
        await self._outbox.deliver(self.run_entry(crawl))

    async def finish(
        self,
        crawl: Crawl,
        state: CrawlState,
        *,
        reason: str | None = None,
        counts: CrawlCounts | None = None,
        expect: tuple[str, int] | None = None,
    ) -> bool:
        """Move a non-terminal crawl to terminal ``state`` (once), then drop it from the
        indexes. ``expect``: only if it is still dispatched to that (container, attempt).
        True if this call made the change."""
        now = self.ports.clock.now()

        def end(c: Crawl) -> Crawl | None:
            if c.state.terminal:
                return None
            if expect is not None and (
                c.state is not CrawlState.dispatched or (c.container_id, c.attempts) != expect
            ):
                return None
            update: dict[str, object] = {
                "state": state,
                "reason": reason,
                "finished_at": now,
                "updated_at": now,
            }
            if counts is not None:
                update["counts"] = counts
            new = c.model_copy(update=update)
            new = with_entries(new, metering.crawl_done(new, now))  # its usage, counted once
            if c.spec.webhook_url:
                due = WebhookDue(tenant_id=c.tenant_id, crawl_id=c.id)
                return with_entries(new, send(self.settings.inbox_queue, due))
            return new

        final, changed = await self._outbox.mutate(
            self.records.crawls, crawl.tenant_id, crawl.id, end
        )
        if not changed and final is not None and final.state.terminal and final.outbox:
            final = await self.relay(final)  # left by an instance that died after the change
        if final is not None and final.state.terminal:
            await self._drop_indexes(final)
        return changed

    async def _drop_indexes(self, crawl: Crawl) -> None:
        """A terminal crawl leaves the active index and the backlog, and enters ``finished``
        (which retention reads)."""
        if crawl.finished_at is not None:
            entry = ActiveCrawl(crawl_id=crawl.id, created_at=crawl.finished_at)
            key = finished_key(crawl.finished_at, crawl.id)
            with contextlib.suppress(Conflict):  # there already: a duplicate got here first
                await self.records.finished.create(crawl.tenant_id, key, entry)
        await self.records.unindex_pending(crawl)
        await self.records.active.discard(crawl.tenant_id, crawl.id)

    async def requeue(self, crawl: Crawl, container_id: str, *, reason: str) -> None:
        """Take a crawl back from a container: pending again (and resubmitted), or
        dead-lettered when its attempts are used up. Applies only while the crawl is still
        dispatched to ``container_id`` at the attempt ``crawl`` was read at."""
        expect = (container_id, crawl.attempts)
        if crawl.state is CrawlState.dispatched and crawl.pause_requested is not None:
            await self._paused_without_engine(crawl, expect, reason)
        elif crawl.state is CrawlState.dispatched and crawl.attempts >= self.settings.max_attempts:
            await self.finish(
                crawl,
                CrawlState.dead_lettered,
                reason=f"{reason}; gave up after {crawl.attempts} attempts",
                expect=expect,
            )
        elif crawl.state is CrawlState.dispatched:
            now = self.ports.clock.now()

            def back(c: Crawl) -> Crawl | None:
                if c.state is not CrawlState.dispatched or (c.container_id, c.attempts) != expect:
                    return None
                new = c.model_copy(
                    update={
                        "state": CrawlState.pending,
                        "container_id": None,
                        "updated_at": now,
                        "reason": reason,
                    }
                )
                again = CrawlSubmitted(
                    tenant_id=c.tenant_id, crawl_id=c.id, traceparent=c.traceparent
                )
                return with_entries(new, send(self.settings.inbox_queue, again))

            back_crawl, changed = await self._outbox.mutate(
                self.records.crawls, crawl.tenant_id, crawl.id, back
            )
            if changed and back_crawl is not None:
                await self.records.index_pending(back_crawl)
        await self.fleet.release(crawl.tenant_id, container_id, crawl.id)

    async def _paused_without_engine(
        self, crawl: Crawl, expect: tuple[str, int], reason: str
    ) -> None:
        """A crawl told to pause whose container is gone before it answered: paused, from
        its last checkpoint (the pages after it are fetched again when it resumes)."""
        now = self.ports.clock.now()

        def pause(c: Crawl) -> Crawl | None:
            if c.state is not CrawlState.dispatched or (c.container_id, c.attempts) != expect:
                return None
            update: dict[str, object] = {
                "state": CrawlState.paused,
                "container_id": None,
                "reason": c.pause_requested or reason,
                "pause_requested": None,
                "updated_at": now,
            }
            return c.model_copy(update=update)

        await self.records.crawls.mutate(crawl.tenant_id, crawl.id, pause)
