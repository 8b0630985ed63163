"""Paused crawls and how they resume: one rule for the API, the conductor and housekeeping.

A crawl is paused when its tenant's budget is spent (``core.conductor.budget_guard``): a
pending one at once, a dispatched one once its engine has finished the pages in flight and
checkpointed its frontier (``CrawlPaused``). A paused crawl is not terminal: it stays in
the ``active`` index (it counts against ``max_pending``), out of the backlog, and keeps its
pages and checkpoint.

Resuming is one compare-and-set on the crawl: ``paused`` → ``pending``, with a
``CrawlSubmitted`` in the same write (an outbox entry) and the crawl back in the backlog. The
conductor places it like any pending crawl; its next ``RunCrawl`` (a new attempt) starts from
the checkpoint, so no page stored before the pause is fetched again. A crawl still being
paused (dispatched, ``pause_requested``) only forgets the request: if the engine pauses it
anyway, the conductor resumes it as soon as its ``CrawlPaused`` arrives.

Who resumes: ``PUT /v1/budget`` and ``DELETE /v1/budget`` (every crawl paused by the budget,
once the limit is lifted), housekeeping (the same, e.g. when a new month starts), and
``POST /v1/crawls/{id}/resume`` (one crawl, refused while the budget is spent).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from core.errors import SkycrawlError
from core.messages import CrawlSubmitted, encode
from core.models import Crawl, CrawlState, OutboxEntry
from core.ports.message_bus import MessageBus
from core.records import Records

log = logging.getLogger("skycrawl.paused")

#: The reason of a crawl paused because its tenant's monthly budget is spent.
BUDGET_REASON = "budget reached"


def submitted_entry(crawl: Crawl, inbox_queue: str) -> OutboxEntry:
    """The ``CrawlSubmitted`` a resume implies, as an outbox entry of the crawl."""
    message = encode(CrawlSubmitted(tenant_id=crawl.tenant_id, crawl_id=crawl.id))
    return OutboxEntry(
        id=f"resume-{crawl.id}-{crawl.attempts}",
        kind="send",
        target=inbox_queue,
        body=message.body.decode(),
        attributes=dict(message.attributes),
    )


def resumed(crawl: Crawl, now: datetime, inbox_queue: str) -> Crawl | None:
    """The crawl resumed: pending again (with its ``CrawlSubmitted``), or a pause request
    withdrawn; None when there is nothing to resume."""
    if crawl.state is CrawlState.dispatched and crawl.pause_requested is not None:
        return crawl.model_copy(update={"pause_requested": None, "updated_at": now})
    if crawl.state is not CrawlState.paused:
        return None
    new = crawl.model_copy(
        update={
            "state": CrawlState.pending,
            "container_id": None,
            "reason": f"resumed after: {crawl.reason}" if crawl.reason else "resumed",
            "updated_at": now,
        }
    )
    return new.model_copy(update={"outbox": (*new.outbox, submitted_entry(new, inbox_queue))})


async def resume(
    records: Records, tenant_id: str, crawl_id: str, now: datetime, inbox_queue: str
) -> Crawl | None:
    """Resume one crawl (see ``resumed``); the stored crawl if this call changed it. A crawl
    made pending is in the backlog when this returns; its ``CrawlSubmitted`` is on its
    outbox, for the caller to send (or for the conductor's housekeeping to relay)."""
    crawl, changed = await records.crawls.mutate(
        tenant_id, crawl_id, lambda c: resumed(c, now, inbox_queue)
    )
    if not changed or crawl is None:
        return None
    if crawl.state is CrawlState.pending:
        await records.index_pending(crawl)
    return crawl


async def resume_paused_by_budget(
    records: Records, tenant_id: str, now: datetime, inbox_queue: str
) -> list[Crawl]:
    """Resume every crawl of the tenant paused (or being paused) by its budget."""
    done: list[Crawl] = []
    for entry in await records.active.query(tenant_id):
        found = await records.crawls.get(tenant_id, entry.value.crawl_id)
        if found is None:
            continue
        crawl = found.value
        why = crawl.pause_requested if crawl.state is CrawlState.dispatched else crawl.reason
        if crawl.state not in (CrawlState.paused, CrawlState.dispatched) or why != BUDGET_REASON:
            continue
        changed = await resume(records, tenant_id, crawl.id, now, inbox_queue)
        if changed is not None:
            done.append(changed)
    return done


async def announce(bus: MessageBus, inbox_queue: str, crawls: Iterable[Crawl]) -> None:
    """Tell the conductor of resumed crawls now (the API's side). A send that fails is only
    logged: the crawl is pending, in the backlog, with its ``CrawlSubmitted`` on its outbox,
    and housekeeping places it within a period."""
    for crawl in crawls:
        if crawl.state is not CrawlState.pending:
            continue
        message = encode(CrawlSubmitted(tenant_id=crawl.tenant_id, crawl_id=crawl.id))
        try:
            await bus.send(queue=inbox_queue, message=message)
        except (SkycrawlError, OSError) as exc:
            log.warning("crawl %s resumed; the conductor learns it later (%s)", crawl.id, exc)
