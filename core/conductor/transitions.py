"""Crawl state transitions the conductor makes: dispatch (and its undo), finish, requeue.

Each is a compare-and-set on the crawl record that only applies from the state it expects, so
a duplicate or late message changes nothing; the container's slot is released alongside.
"""

from __future__ import annotations

import logging

from core.conductor.fleet import ContainerFleet
from core.messages import CrawlSubmitted, RunCrawl, WebhookDue, encode
from core.models import Container, ContainerState, Crawl, CrawlCounts, CrawlState
from core.ports import Ports
from core.records import Records
from core.settings import SkycrawlSettings

log = logging.getLogger("skycrawl.conductor")


class CrawlTransitions:
    def __init__(
        self, *, ports: Ports, records: Records, settings: SkycrawlSettings, fleet: ContainerFleet
    ) -> None:
        self.ports = ports
        self.records = records
        self.settings = settings
        self.fleet = fleet

    async def commit_dispatch(self, crawl: Crawl, container: Container) -> None:
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
                await self.send_run(updated)
            except Exception:  # undo, so that whichever retry or timer comes next places it
                await self.undispatch(updated, container.id)
                raise
        await self.fleet.schedule_kill(container)

    async def undispatch(self, crawl: Crawl, container_id: str) -> None:
        def back(c: Crawl) -> Crawl | None:
            if c.state is not CrawlState.dispatched or c.attempts != crawl.attempts:
                return None
            if c.container_id != container_id:
                return None
            update = {"state": CrawlState.pending, "container_id": None, "dispatched_at": None}
            return c.model_copy(update={**update, "attempts": c.attempts - 1})

        await self.records.crawls.mutate(crawl.tenant_id, crawl.id, back)
        await self.fleet.release(crawl.tenant_id, container_id, crawl.id)

    async def send_run(self, crawl: Crawl) -> None:
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

    async def finish(
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

    async def requeue(self, crawl: Crawl, container_id: str, *, reason: str) -> None:
        """Take a crawl back from a container: pending again, or dead-lettered when its
        attempts are used up."""
        if crawl.state is not CrawlState.dispatched or crawl.container_id != container_id:
            await self.fleet.release(crawl.tenant_id, container_id, crawl.id)
            return
        if crawl.attempts >= self.settings.max_attempts:
            await self.finish(
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
