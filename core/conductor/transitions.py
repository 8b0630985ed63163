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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from core import metering, telemetry
from core.conductor.fleet import ContainerFleet
from core.conductor.outbox import Outbox, added_entries, publish, send, with_entries, without
from core.errors import Conflict
from core.layout import tenant_topic
from core.messages import CrawlSubmitted, RunCrawl, WebhookDue
from core.models import Container, ContainerState, Crawl, CrawlCounts, CrawlState, OutboxEntry
from core.ports import Ports
from core.ports.state_store import Delete, Item, Write, Written
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
        (failed,) = await self.commit_dispatches([(crawl, container, current)])
        if failed is not None:
            raise failed

    async def commit_dispatches(
        self, dispatches: Sequence[tuple[Crawl, Container, Versioned[Crawl] | None]]
    ) -> list[Exception | None]:
        """``commit_dispatch`` for each (crawl, container, current), their writes made
        together (``Records.write_chains``: one commit where the store can, instead of one
        each): every dispatch tried on its ``current``, then each ``RunCrawl`` published,
        then each outbox cleared with its backlog entry deleted after it. What each write
        checks, and what follows a lost compare-and-set, are ``commit_dispatch``'s one by
        one. Returns each one's error (None: done); an instance dying stops them all."""
        now = self.ports.clock.now()
        steps = [
            _Step(crawl, container, current, self._dispatching(crawl, container, now))
            for crawl, container, current in dispatches
        ]
        await self._dispatch_all(steps)
        # the RunCrawl of each (the relay of ``Outbox.mutate``)
        sending = [s for s in steps if s.error is None and s.changed and s.added]
        errors = await self._outbox.deliver_each([s.added for s in sending])
        for step, error in zip(sending, errors, strict=True):
            step.error = error
        await self._clear_and_unindex(steps)
        return [step.error for step in steps]

    def _dispatching(
        self, crawl: Crawl, container: Container, now: datetime
    ) -> Callable[[Crawl], Crawl | None]:
        """The change a dispatch of ``crawl`` on ``container`` makes to the stored crawl."""

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

        return dispatch

    async def _dispatch_all(self, steps: list[_Step]) -> None:
        """The dispatch write of each step: first on its ``current``, all in one group; a
        lost compare-and-set (or "no change" on a hint) then reads afresh, one by one, as
        ``Table.mutate_versioned`` does. If the group fails as a whole (it stored nothing),
        each step goes ``commit_dispatch``'s way on its own."""
        tried = [
            (step, step.current, new)
            for step in steps
            if step.current is not None
            and (new := step.change(step.current.value)) is not None
            and new != step.current.value
        ]
        crawls = self.records.crawls
        alone: set[int] = set()  # steps to try from the start, one by one
        if tried:
            try:
                written = await self.records.write_chains(
                    [[crawls.replacing(current, new)] for _, current, new in tried]
                )
            except Exception:
                alone = {id(step) for step, _, _ in tried}
                tried, written = [], []
            for (step, current, new), (result,) in zip(tried, written, strict=True):
                if isinstance(result, Item):
                    step.found, step.changed = Versioned(new, result), True
                    step.added = added_entries(current.value, new)
                elif not isinstance(result, Conflict) and result is not None:
                    step.error = result  # that write failed (a store without groups)
        for step in steps:
            if step.error is not None or step.changed:
                continue
            again = id(step) in alone or step.current is None
            try:
                step.found, step.changed = await crawls.mutate_versioned(
                    step.crawl.tenant_id,
                    step.crawl.id,
                    step.tracked,
                    current=step.current if again else None,
                    attempts=20 if again else 19,  # else the first was the group's
                )
            except Exception as exc:
                step.error = exc

    async def _clear_and_unindex(self, steps: list[_Step]) -> None:
        """Each dispatched step's outbox cleared of what was sent, and then its backlog
        entry deleted (in that order, a chain: no delete if the clear lost its
        compare-and-set). Whatever the group could not do goes ``commit_dispatch``'s way:
        a fresh read, then the slot released if the crawl was cancelled meanwhile."""
        chains: list[tuple[_Step, list[Write]]] = []
        for step in steps:
            if step.error is not None or step.found is None:
                continue
            chain: list[Write] = []
            if step.changed and step.added:
                step.cleared = without(step.found.value, sent={e.id for e in step.added})
                assert step.cleared is not None  # the entries were just added
                chain.append(self.records.crawls.replacing(step.found, step.cleared))
            if _dispatched_on(step.found.value, step.container):
                chain.append(Delete(self.records.pending_entry(step.found.value)))
            if chain:
                chains.append((step, chain))
        done: dict[int, list[Written] | None] = {}
        try:
            results = await self.records.write_chains([chain for _, chain in chains])
        except Exception:  # it stored nothing: each step on its own, as before
            done = {id(step): None for step, _ in chains}
        else:
            done = {id(step): result for (step, _), result in zip(chains, results, strict=True)}
        for step in steps:
            if step.error is None:
                try:
                    await self._after_group(step, done.get(id(step), []))
                except Exception as exc:
                    step.error = exc

    async def _after_group(self, step: _Step, done: list[Written] | None) -> None:
        """The rest of ``commit_dispatch`` for ``step`` once its group was tried: ``done``,
        what each write of its chain came to (None: the group failed and stored nothing)."""
        tenant_id, crawl_id = step.crawl.tenant_id, step.crawl.id
        if step.found is None:
            updated = None
        elif step.changed and step.added:
            sent = {e.id for e in step.added}
            if done and isinstance(done[0], Item):
                updated = step.cleared
                done = done[1:]
            elif done is None:  # the clear on the record as written, as ``relay``
                updated, _ = await self.records.crawls.mutate(
                    tenant_id, crawl_id, partial(without, sent=sent), current=step.found
                )
            else:  # lost the compare-and-set: clear whatever is stored now, as ``relay``
                _raise_failure(done[0])
                updated, _ = await self.records.crawls.mutate(
                    tenant_id, crawl_id, partial(without, sent=sent), attempts=19
                )
                done = []
        else:
            updated = step.found.value
        if updated is None or updated.state is not CrawlState.dispatched:
            # cancelled (or finished) meanwhile: give the slot back
            await self.fleet.release(tenant_id, step.container.id, crawl_id)
            if updated is not None and updated.state.terminal:
                await self._drop_indexes(updated)
            return
        if updated.container_id != step.container.id:
            await self.fleet.release(tenant_id, step.container.id, crawl_id)
            return
        if done:
            if done[0] is None:
                return  # its backlog entry is gone with the group
            _raise_failure(done[0])
            # the guess was refused: read, as ``unindex_pending`` does after it
            key = self.records.pending_entry(updated).key
            await self.records.backlog.discard(updated.tenant_id, key, attempts=19)
        else:
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


@dataclass(slots=True)
class _Step:
    """One dispatch of ``CrawlTransitions.commit_dispatches`` and how far it got."""

    crawl: Crawl
    container: Container
    current: Versioned[Crawl] | None
    change: Callable[[Crawl], Crawl | None]
    found: Versioned[Crawl] | None = None  # the crawl as stored after its dispatch write
    changed: bool = False
    added: tuple[OutboxEntry, ...] = ()  # the entries that write added (to relay)
    cleared: Crawl | None = None  # ``found`` without them, as the group writes it
    error: Exception | None = None

    def tracked(self, c: Crawl) -> Crawl | None:
        """``change``, noting the outbox entries it adds (``Outbox.mutate``)."""
        new = self.change(c)
        self.added = () if new is None else added_entries(c, new)
        return new


def _dispatched_on(crawl: Crawl, container: Container) -> bool:
    return crawl.state is CrawlState.dispatched and crawl.container_id == container.id


def _raise_failure(result: Written) -> None:
    """Raise what a write of a group failed with, unless a lost compare-and-set."""
    if isinstance(result, Exception) and not isinstance(result, Conflict):
        raise result
