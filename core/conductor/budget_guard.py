"""The conductor's side of budgets (``core.budgets``): evaluate, warn, pause at the limit.

Housekeeping calls ``check`` for every tenant each period: it stores where the month stands,
with a ``BudgetWarning`` for each newly crossed threshold in the same write (relayed after),
and at the limit pauses the tenant's crawls with reason ``budget reached`` (``core.paused``):

* a pending one becomes ``paused`` at once (out of the backlog; a slot reserved for it is
  freed by the reconcile that follows in the same housekeeping run);
* a dispatched one gets ``pause_requested`` and, in the same compare-and-set, a
  ``PauseCrawl`` to its container: the engine finishes the pages in flight, stores them,
  checkpoints the frontier and answers ``CrawlPaused`` (``Conductor``), which makes the crawl
  ``paused`` and frees the slot; the container then idles and drains as usual. Until it
  answers, each period sends ``PauseCrawl`` again (the engine ignores what it does not run).

Below the limit (a raised amount, a removed budget, a new month) the crawls the budget
paused are resumed. ``on_warning`` posts the warning, signed, to the budget's webhook.
"""

from __future__ import annotations

import logging
from typing import Protocol

from core.budgets import Budget, BudgetMonth, Budgets, month_key
from core.conductor.outbox import Outbox, publish, send, with_entries
from core.layout import tenant_topic
from core.messages import BudgetWarning, PauseCrawl
from core.models import Crawl, CrawlState, OutboxEntry
from core.paused import BUDGET_REASON, resume_paused_by_budget
from core.ports import Ports
from core.records import Records
from core.settings import SkycrawlSettings

log = logging.getLogger("skycrawl.budgets")

__all__ = ["BUDGET_REASON", "BudgetGuard", "EventSender"]


class EventSender(Protocol):
    """Posts a signed tenant event (``core.webhooks.WebhookNotifier.send_event``)."""

    async def send_event(
        self, *, tenant_id: str, url: str, event: str, delivery: str, payload: dict[str, object]
    ) -> bool: ...


class BudgetGuard:
    def __init__(
        self,
        *,
        ports: Ports,
        records: Records,
        settings: SkycrawlSettings,
        outbox: Outbox,
        events: EventSender | None = None,
    ) -> None:
        self._ports = ports
        self._records = records
        self._settings = settings
        self._outbox = outbox
        self._events = events
        self.budgets = Budgets(records)

    async def check(self, tenant_id: str) -> BudgetMonth | None:
        """Evaluate the tenant's budget; at the limit, stop its crawls. None: no budget."""
        now = self._ports.clock.now()
        key = month_key(now)

        def warn(threshold: int, spent: float, budget: Budget) -> OutboxEntry:
            message = BudgetWarning(
                tenant_id=tenant_id,
                month=key,
                threshold=threshold,
                spent=spent,
                amount=budget.monthly_amount,
            )
            return send(self._settings.inbox_queue, message)

        month = await self.budgets.evaluate(tenant_id, now, entry=warn)
        if month is None:  # no budget (any more): nothing holds a crawl back
            await self.resume_crawls(tenant_id)
            return None
        if month.outbox:  # this evaluation's warnings, and any a crashed instance left
            month = (
                await self._outbox.relay(self.budgets.months, tenant_id, month.month, month)
                or month
            )
        if month.reached:
            stopped = await self.stop_crawls(tenant_id)
            if stopped:
                log.info("tenant %s: budget reached, %d crawls paused", tenant_id, stopped)
        else:
            resumed = await self.resume_crawls(tenant_id)
            if resumed:
                log.info("tenant %s: budget lifted, %d crawls resumed", tenant_id, resumed)
        return month

    async def stop_crawls(self, tenant_id: str) -> int:
        """Pause every pending or running crawl of the tenant (reason ``budget reached``);
        returns how many this call paused or told to pause."""
        stopped = 0
        topic = tenant_topic(self._settings.dispatch_topic, tenant_id)
        for entry in await self._records.active.query(tenant_id):
            crawl, changed = await self._outbox.mutate(
                self._records.crawls, tenant_id, entry.value.crawl_id, self._pause
            )
            stopped += changed
            if crawl is None:
                continue
            if changed and crawl.state is CrawlState.paused:
                await self._records.unindex_pending(crawl)  # a reserved slot: reconcile frees it
            elif not changed and crawl.pause_requested and crawl.container_id is not None:
                # told already; told again each period until it answers (a ``PauseCrawl``
                # that overtook its ``RunCrawl`` finds nothing to pause)
                await self._outbox.deliver(publish(topic, self._pause_message(crawl)))
        return stopped

    def _pause(self, crawl: Crawl) -> Crawl | None:
        now = self._ports.clock.now()
        if crawl.state is CrawlState.pending:
            update = {"state": CrawlState.paused, "reason": BUDGET_REASON, "updated_at": now}
            return crawl.model_copy(update=update)
        if crawl.state is not CrawlState.dispatched or crawl.pause_requested is not None:
            return None
        new = crawl.model_copy(update={"pause_requested": BUDGET_REASON, "updated_at": now})
        if crawl.container_id is None:
            return new
        topic = tenant_topic(self._settings.dispatch_topic, crawl.tenant_id)
        return with_entries(new, publish(topic, self._pause_message(new)))

    @staticmethod
    def _pause_message(crawl: Crawl) -> PauseCrawl:
        assert crawl.container_id is not None
        return PauseCrawl(
            container_id=crawl.container_id,
            tenant_id=crawl.tenant_id,
            crawl_id=crawl.id,
            reason=crawl.pause_requested or BUDGET_REASON,
        )

    async def resume_crawls(self, tenant_id: str) -> int:
        """The limit is lifted (a raised amount, a new month): resume the crawls it paused."""
        now = self._ports.clock.now()
        resumed = await resume_paused_by_budget(
            self._records, tenant_id, now, self._settings.inbox_queue
        )
        for crawl in resumed:
            await self._outbox.relay(self._records.crawls, tenant_id, crawl.id, crawl)
        return len(resumed)

    async def on_warning(self, msg: BudgetWarning) -> None:
        budget = await self.budgets.budget(msg.tenant_id)
        if budget is None or not budget.webhook_url or self._events is None:
            return
        event = "budget.reached" if msg.threshold >= 100 else "budget.warning"
        payload: dict[str, object] = {
            "event": event,
            "budget": {
                "month": msg.month,
                "threshold": msg.threshold,
                "spent": msg.spent,
                "amount": msg.amount,
            },
        }
        await self._events.send_event(
            tenant_id=msg.tenant_id,
            url=budget.webhook_url,
            event=event,
            delivery=f"whb_{msg.month}_{msg.threshold}",
            payload=payload,
        )
