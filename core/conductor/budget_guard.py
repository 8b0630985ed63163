"""The conductor's side of budgets (``core.budgets``): evaluate, warn, stop at the limit.

Housekeeping calls ``check`` for every tenant each period: it stores where the month stands,
with a ``BudgetWarning`` for each newly crossed threshold in the same write (relayed after),
and at the limit cancels the tenant's pending and running crawls with reason ``budget
reached`` -- each cancel a compare-and-set on the crawl that carries its usage and a
``CancelRequested`` (the same path as the API's cancel: the slot is freed) and the
container's ``CancelCrawl``. ``on_warning`` posts the warning, signed, to the budget's webhook.
"""

from __future__ import annotations

import logging
from typing import Protocol

from core.budgets import Budget, BudgetMonth, Budgets, month_key
from core.conductor.outbox import Outbox, publish, send, with_entries
from core.layout import tenant_topic
from core.messages import BudgetWarning, CancelCrawl, CancelRequested
from core.metering import crawl_done
from core.models import Crawl, CrawlState, OutboxEntry
from core.ports import Ports
from core.records import Records
from core.settings import SkycrawlSettings

log = logging.getLogger("skycrawl.budgets")

BUDGET_REASON = "budget reached"


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
        if month is None:
            return None
        if month.outbox:  # this evaluation's warnings, and any a crashed instance left
            month = (
                await self._outbox.relay(self.budgets.months, tenant_id, month.month, month)
                or month
            )
        if month.reached:
            stopped = await self.stop_crawls(tenant_id)
            if stopped:
                log.info("tenant %s: budget reached, %d crawls stopped", tenant_id, stopped)
        return month

    async def stop_crawls(self, tenant_id: str) -> int:
        """Cancel every pending or running crawl of the tenant (reason ``budget reached``)."""
        stopped = 0
        for entry in await self._records.active.query(tenant_id):
            _, changed = await self._outbox.mutate(
                self._records.crawls, tenant_id, entry.value.crawl_id, self._stop
            )
            stopped += changed
        return stopped

    def _stop(self, crawl: Crawl) -> Crawl | None:
        if crawl.state.terminal:
            return None
        now = self._ports.clock.now()
        new = crawl.model_copy(
            update={
                "state": CrawlState.cancelled,
                "reason": BUDGET_REASON,
                "finished_at": now,
                "updated_at": now,
            }
        )
        told = CancelRequested(
            tenant_id=crawl.tenant_id, crawl_id=crawl.id, container_id=crawl.container_id
        )
        entries = [crawl_done(new, now), send(self._settings.inbox_queue, told)]
        if crawl.container_id is not None:  # told in this write: housekeeping may free the
            stop = CancelCrawl(  # slot before ``CancelRequested`` is handled
                container_id=crawl.container_id, tenant_id=crawl.tenant_id, crawl_id=crawl.id
            )
            topic = tenant_topic(self._settings.dispatch_topic, crawl.tenant_id)
            entries.append(publish(topic, stop))
        return with_entries(new, *entries)

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
