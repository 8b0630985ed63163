"""Webhooks (issue 12): signed with the tenant's secret, a proper User-Agent and Host, every
attempt recorded, retries with back-off through the Scheduler port (relative delays), and a
rotated secret that keeps signing through its grace period only.

The receiver is a real HTTP server on 127.0.0.1 run by the test; the conductor runs over the
real local ports with a FakeClock, so a retry's delay passes when the test advances it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conductor_harness import Harness, start_ready

from core.conductor import Conductor
from core.conductor.outbox import Outbox
from core.delivery_models import webhook_deliveries_table, webhook_secrets_table
from core.messages import WebhookDue, WebhookSecretRetire, decode_inbox
from core.netguard import AddressPolicy
from core.webhook_signing import verify_signature
from core.webhooks import BACKOFF_S, MAX_ATTEMPTS, SECRETS_KEY, WebhookNotifier, rotate_secret


@dataclass
class Receiver:
    url: str
    answers: list[int]  # status per request, in order; the last one repeats
    seen: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@contextlib.contextmanager
def receiver(*answers: int) -> Iterator[Receiver]:
    box = Receiver("", list(answers))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            box.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = box.answers[min(len(box.seen), len(box.answers)) - 1]
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    box.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/skycrawl"
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()


def notifying(harness: Harness) -> Conductor:
    notifier = WebhookNotifier(
        policy=AddressPolicy.from_cidrs(["127.0.0.0/8"]),
        records=harness.records,
        outbox=Outbox(harness.ports),
        clock=harness.clock,
        inbox_queue=harness.settings.inbox_queue,
    )
    return Conductor(
        ports=harness.ports,
        settings=harness.settings,
        engine_env={},
        records=harness.records,
        notifier=notifier,
        events=notifier,  # tenant events (budget warnings, ``test_budgets``)
    )


async def finish_with_webhook(harness: Harness, conductor: Conductor, url: str) -> str:
    await harness.add_tenant("t1")
    crawl_id, engine = await start_ready(harness, webhook_url=url)
    await engine.complete(crawl_id)
    await harness.pump(conductor)
    return crawl_id


def scheduled_webhooks(harness: Harness) -> list[WebhookDue]:
    due = [decode_inbox(m.body) for _, m in harness.scheduler.scheduled]
    return [m for m in due if isinstance(m, WebhookDue)]


async def test_a_delivery_is_signed_with_the_tenants_secret(harness: Harness) -> None:
    conductor = notifying(harness)
    secrets, _ = await rotate_secret(harness.records, "t1", harness.clock.now(), keep_old=False)
    with receiver(200) as hook:
        crawl_id = await finish_with_webhook(harness, conductor, hook.url)
    assert len(hook.seen) == 1
    headers, body = hook.seen[0]
    port = hook.url.split(":")[2].split("/")[0]
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["user-agent"].startswith("skycrawl-webhooks/")
    assert headers["skycrawl-event"] == "crawl.completed"
    assert headers["skycrawl-delivery"] == f"whd_{crawl_id}"
    signature = headers["skycrawl-signature"]
    assert verify_signature(secrets.current.secret, signature, body, now=time.time())
    assert not verify_signature("whsec_wrong", signature, body, now=time.time())
    assert not verify_signature(secrets.current.secret, signature, body + b" ", now=time.time())
    assert not verify_signature(secrets.current.secret, signature, body, now=time.time() + 3600), (
        "a replay an hour later is refused"
    )
    payload = json.loads(body)
    assert payload["crawl"]["id"] == crawl_id
    record = await webhook_deliveries_table(harness.records).get("t1", crawl_id)
    assert record is not None
    assert record.value.state == "delivered"
    assert [(a.attempt, a.status, a.signed) for a in record.value.attempts] == [(1, 200, True)]


async def test_a_failed_delivery_is_retried_with_backoff_through_the_scheduler(
    harness: Harness,
) -> None:
    conductor = notifying(harness)
    with receiver(503, 200) as hook:
        crawl_id = await finish_with_webhook(harness, conductor, hook.url)
        assert len(hook.seen) == 1
        assert scheduled_webhooks(harness) == [
            WebhookDue(tenant_id="t1", crawl_id=crawl_id, attempt=2)
        ]
        delays = [
            (at - harness.clock.now()).total_seconds()
            for at, m in harness.scheduler.scheduled
            if isinstance(decode_inbox(m.body), WebhookDue)
        ]
        assert delays == [BACKOFF_S[0]], "a relative delay, measured by the scheduler"
        harness.clock.advance(BACKOFF_S[0] - 1)
        await harness.pump(conductor)
        assert len(hook.seen) == 1, "not before the back-off"
        harness.clock.advance(1)
        await harness.pump(conductor)
        assert len(hook.seen) == 2
    record = await webhook_deliveries_table(harness.records).get("t1", crawl_id)
    assert record is not None
    attempts = [(a.attempt, a.status, a.retry_in_s, a.signed) for a in record.value.attempts]
    assert attempts == [(1, 503, BACKOFF_S[0], False), (2, 200, None, False)]
    assert record.value.state == "delivered"
    assert record.value.outbox == ()
    assert hook.seen[0][1] == hook.seen[1][1], "the same body on every attempt"


async def test_delivery_gives_up_after_the_last_attempt_and_a_4xx_is_final(
    harness: Harness,
) -> None:
    conductor = notifying(harness)
    with receiver(500) as hook:
        crawl_id = await finish_with_webhook(harness, conductor, hook.url)
        for delay in BACKOFF_S:
            harness.clock.advance(delay)
            await harness.pump(conductor)
        harness.clock.advance(3600)
        await harness.pump(conductor)
    assert len(hook.seen) == MAX_ATTEMPTS
    record = await webhook_deliveries_table(harness.records).get("t1", crawl_id)
    assert record is not None
    assert record.value.state == "failed"
    assert [a.retry_in_s for a in record.value.attempts][-1] is None

    with receiver(410) as gone:
        await harness.send(WebhookDue(tenant_id="t1", crawl_id=crawl_id, attempt=1))
        await harness.pump(conductor)  # already failed: a duplicate changes nothing
        assert gone.seen == []


async def test_a_duplicate_attempt_is_not_sent_or_scheduled_twice(harness: Harness) -> None:
    conductor = notifying(harness)
    with receiver(503) as hook:
        crawl_id = await finish_with_webhook(harness, conductor, hook.url)
        await harness.send(WebhookDue(tenant_id="t1", crawl_id=crawl_id, attempt=1))
        await harness.pump(conductor)
    assert len(hook.seen) == 1
    assert len(scheduled_webhooks(harness)) == 1


async def test_a_rotated_secret_signs_until_its_grace_is_over(harness: Harness) -> None:
    conductor = notifying(harness)
    first, _ = await rotate_secret(harness.records, "t1", harness.clock.now(), keep_old=False)
    second, retiring = await rotate_secret(
        harness.records, "t1", harness.clock.now(), keep_old=True
    )
    assert retiring == first.current
    grace = 3600.0
    await harness.send(
        WebhookSecretRetire(tenant_id="t1", secret_id=first.current.id, remaining_s=grace)
    )
    with receiver(200) as hook:
        await finish_with_webhook(harness, conductor, hook.url)
        headers, body = hook.seen[0]
    for secret in (first.current.secret, second.current.secret):
        assert verify_signature(secret, headers["skycrawl-signature"], body, now=time.time())

    harness.clock.advance(grace - 5)
    await harness.pump(conductor)
    stored = await webhook_secrets_table(harness.records).get("t1", SECRETS_KEY)
    assert stored is not None
    assert [s.id for s in stored.value.retiring] == [first.current.id], "still in its grace"
    harness.clock.advance(5)
    await harness.pump(conductor)
    stored = await webhook_secrets_table(harness.records).get("t1", SECRETS_KEY)
    assert stored is not None
    assert stored.value.retiring == ()
    assert stored.value.current == second.current
