"""CloudTasksScheduler against the Cloud Tasks fake: the task it creates (target, OIDC token,
schedule time, envelope) and the edges of scheduling and cancelling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.gcp.scheduler import CloudTasksScheduler, decode_timer, encode_timer
from core.clock import FakeClock
from core.errors import InvalidRequest
from core.ports import OutboundMessage
from tests.integration.gcp.fake_cloud_tasks import FakeCloudTasks

QUEUE = "projects/p/locations/europe-west1/queues/skycrawl-timers"
URL = "https://api.example.test/internal/timers"


async def never(url: str, headers: dict[str, str], body: bytes) -> int:
    raise AssertionError("nothing is dispatched in these tests")


def scheduler(clock: FakeClock) -> tuple[CloudTasksScheduler, FakeCloudTasks]:
    tasks = FakeCloudTasks(never)
    sched = CloudTasksScheduler(
        client=tasks,  # type: ignore[arg-type]
        queue_path=QUEUE,
        timer_url=URL,
        service_account="timers@p.iam.gserviceaccount.com",
        audience="https://api.example.test",
        bus=None,  # type: ignore[arg-type]  # only a delay of 0 uses the bus
        clock=clock,
    )
    return sched, tasks


async def test_a_timer_is_an_authenticated_http_task_due_after_its_delay() -> None:
    clock = FakeClock(datetime(2030, 5, 1, tzinfo=UTC))
    sched, tasks = scheduler(clock)
    message = OutboundMessage(b'{"type":"container.kill-timer"}', {"type": "container.kill-timer"})
    due = clock.now() + timedelta(seconds=90, microseconds=5)
    handle = await sched.schedule(queue="skycrawl-inbox", message=message, delay_s=90.000005)

    [task] = tasks.pending()
    assert handle == task.name
    assert handle.startswith(f"{QUEUE}/tasks/")
    assert task.schedule_time == due
    request = task.http_request
    assert (request.url, request.http_method.name) == (URL, "POST")
    assert request.oidc_token.service_account_email == "timers@p.iam.gserviceaccount.com"
    assert request.oidc_token.audience == "https://api.example.test"
    assert decode_timer(request.body) == ("skycrawl-inbox", message)

    assert await sched.cancel(handle=handle) is True
    assert tasks.pending() == []
    assert await sched.cancel(handle=handle) is False
    assert await sched.cancel(handle="projects/other/queues/q/tasks/x") is False


async def test_more_than_30_days_ahead_is_invalid() -> None:
    clock = FakeClock()
    sched, _ = scheduler(clock)
    with pytest.raises(InvalidRequest):
        await sched.schedule(queue="q", message=OutboundMessage(b"x"), delay_s=31 * 86400)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[]",
        b'{"queue": "q"}',
        b'{"queue": 1, "attributes": {}, "body": ""}',
        b'{"queue": "q", "attributes": {}, "body": "***"}',
    ],
)
def test_garbage_is_not_a_timer(payload: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode_timer(payload)


def test_envelope_round_trip() -> None:
    message = OutboundMessage(bytes(range(256)), {"a": "1", "ü": "ß"})
    assert decode_timer(encode_timer("inbox", message)) == ("inbox", message)
