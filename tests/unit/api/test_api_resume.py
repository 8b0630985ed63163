"""Resuming paused crawls through the API (issue 14): ``POST /v1/crawls/{id}/resume`` (402
while the budget is spent, 409 for a crawl that is not paused), and ``PUT`` / ``DELETE
/v1/budget``, which resume every crawl the budget paused. A resumed crawl is pending again,
back in the backlog, and the conductor is told (``CrawlSubmitted``)."""

from __future__ import annotations

from api_harness import START, Harness, assert_problem

from core.budgets import BUDGET_KEY, Budget, Budgets, budgets_table
from core.messages import CrawlSubmitted
from core.metering import Meter, MeterEvent, Usage
from core.models import Crawl, CrawlState
from core.paused import BUDGET_REASON


async def _paused_crawl(h: Harness, key: str, tenant_id: str, reason: str) -> str:
    """A submitted crawl the conductor has paused (as ``BudgetGuard`` does at the limit)."""
    submitted = await h.submit(key)
    assert submitted.status == 202, submitted.body
    crawl_id: str = submitted.parsed()["id"]

    def pause(c: Crawl) -> Crawl:
        return c.model_copy(update={"state": CrawlState.paused, "reason": reason})

    await h.records.crawls.mutate(tenant_id, crawl_id, pause)
    found = await h.records.crawls.get(tenant_id, crawl_id)
    assert found is not None
    await h.records.unindex_pending(found.value)
    await h.inbox()  # the submission's message, handled
    return crawl_id


async def _spend(h: Harness, tenant_id: str, amount: float, cost: float) -> None:
    """A budget set earlier, and more than its amount spent (housekeeping then saw it)."""
    await budgets_table(h.records).create(tenant_id, BUDGET_KEY, Budget(monthly_amount=amount))
    usage = Usage(container_seconds=100.0, billed_seconds=100.0, cost=cost)
    event = MeterEvent(tenant_id=tenant_id, hour=START, event="run:1", usage=usage)
    await Meter(h.state).apply(event)
    h.clock.advance(3600)
    await Budgets(h.records).evaluate(tenant_id, h.clock.now())  # housekeeping's


async def _state(h: Harness, tenant_id: str, crawl_id: str) -> CrawlState:
    found = await h.records.crawls.get(tenant_id, crawl_id)
    assert found is not None
    return found.value.state


async def test_resume_puts_a_paused_crawl_back_in_the_backlog_and_tells_the_conductor(
    harness: Harness, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    crawl_id = await _paused_crawl(harness, key, tenant_id, "paused")

    answer = await harness.call("POST", f"/v1/crawls/{crawl_id}/resume", key=key)

    assert answer.status == 202, answer.body
    assert answer.parsed()["status"] == "pending"
    assert await _state(harness, tenant_id, crawl_id) is CrawlState.pending
    backlog = await harness.records.backlog.query(tenant_id)
    assert [b.value.crawl_id for b in backlog] == [crawl_id]
    assert await harness.inbox() == [CrawlSubmitted(tenant_id=tenant_id, crawl_id=crawl_id)]
    again = await harness.call("POST", f"/v1/crawls/{crawl_id}/resume", key=key)
    problem = assert_problem(again, 409)
    assert problem["type"].endswith("crawl-not-paused")


async def test_resume_is_refused_with_402_while_the_budget_is_spent(
    harness: Harness, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    crawl_id = await _paused_crawl(harness, key, tenant_id, BUDGET_REASON)
    await _spend(harness, tenant_id, amount=5, cost=6.0)

    refused = await harness.call("POST", f"/v1/crawls/{crawl_id}/resume", key=key)

    problem = assert_problem(refused, 402)
    assert problem["type"].endswith("budget-reached")
    assert await _state(harness, tenant_id, crawl_id) is CrawlState.paused
    assert await harness.inbox() == []


async def test_raising_the_budget_resumes_the_crawls_it_paused_and_no_others(
    harness: Harness, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    by_budget = await _paused_crawl(harness, key, tenant_id, BUDGET_REASON)
    otherwise = await _paused_crawl(harness, key, tenant_id, "paused by the operator")
    await _spend(harness, tenant_id, amount=5, cost=6.0)

    still = await harness.call("PUT", "/v1/budget", key=key, json_body={"monthly_amount": 5.5})
    assert still.parsed()["reached"] is True
    assert await _state(harness, tenant_id, by_budget) is CrawlState.paused, "not yet"
    raised = await harness.call("PUT", "/v1/budget", key=key, json_body={"monthly_amount": 50})

    assert raised.parsed()["reached"] is False
    assert await _state(harness, tenant_id, by_budget) is CrawlState.pending
    assert await _state(harness, tenant_id, otherwise) is CrawlState.paused
    assert await harness.inbox() == [CrawlSubmitted(tenant_id=tenant_id, crawl_id=by_budget)]


async def test_removing_the_budget_resumes_the_crawls_it_paused(
    harness: Harness, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    crawl_id = await _paused_crawl(harness, key, tenant_id, BUDGET_REASON)
    await _spend(harness, tenant_id, amount=5, cost=6.0)

    removed = await harness.call("DELETE", "/v1/budget", key=key)

    assert removed.status == 204
    assert await _state(harness, tenant_id, crawl_id) is CrawlState.pending
    assert await harness.inbox() == [CrawlSubmitted(tenant_id=tenant_id, crawl_id=crawl_id)]


async def test_resume_of_an_unknown_or_running_crawl(
    harness: Harness, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    submitted = await harness.submit(key)
    pending = submitted.parsed()["id"]

    unknown = await harness.call("POST", f"/v1/crawls/cr_{'0' * 32}/resume", key=key)
    not_paused = await harness.call("POST", f"/v1/crawls/{pending}/resume", key=key)

    assert_problem(unknown, 404)
    assert "pending, not paused" in assert_problem(not_paused, 409)["detail"]
    assert await _state(harness, tenant_id, pending) is CrawlState.pending
