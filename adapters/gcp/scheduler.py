"""Cloud Tasks Scheduler: kill timers (any delayed message) as HTTP tasks due at a time.

Pub/Sub has no delayed delivery, so ``schedule`` creates a Cloud Tasks task whose
``schedule_time`` is ``deliver_at`` and whose HTTP target is the control plane's timer endpoint
(``POST <api function>/internal/timers``, see ``functions/gcp/main.py``), authenticated with an
OIDC token Cloud Tasks mints for ``SKYCRAWL_GCP_TIMER_SERVICE_ACCOUNT`` with the audience
``SKYCRAWL_GCP_OIDC_AUDIENCE``. The task body is a small JSON envelope (``encode_timer``):
the target queue, the message attributes and the base64 body. The endpoint verifies the
token and hands the envelope to ``deliver_timer``, which sends the message to its queue --
for kill timers the conductor's inbox, which pushes it to the conductor. A failing endpoint
(5xx) is retried by Cloud Tasks with the queue's back-off, so delivery is at-least-once (the
conductor's kill-timer handling is idempotent).

A ``deliver_at`` that is not in the future skips Cloud Tasks: the message is sent to its
queue at once (the handle is then the message id, and ``cancel`` says False).

The handle of a task is its full name; ``cancel`` deletes the task: True if it was still
pending, False if it was dispatched already or never existed (Cloud Tasks forgets a task once
its endpoint answered 2xx). Cancel is best effort and the core never relies on it.

Limits
    ``deliver_at`` at most 30 days ahead (Cloud Tasks' limit; ``capabilities.max_delay_s``,
    the core chains longer waits) and timezone-aware, else ``core.errors.InvalidRequest``.
    Timing is to about a second. Task bodies are
    limited to 100 KB -- kill timers are a few hundred bytes. ``deliver_at`` is compared with
    the injected clock.

Cost
    $0.40 per million operations after the first million a month (free): each timer is a
    create, a dispatch and sometimes a delete. Nothing while idle.

Settings
    ``SKYCRAWL_GCP_PROJECT``, ``SKYCRAWL_GCP_TASKS_QUEUE``, ``SKYCRAWL_GCP_TASKS_LOCATION`` (or
    ``SKYCRAWL_GCP_REGION``), ``SKYCRAWL_GCP_TIMER_URL``, ``SKYCRAWL_GCP_TIMER_SERVICE_ACCOUNT``,
    ``SKYCRAWL_GCP_OIDC_AUDIENCE``.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import timedelta

from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from adapters.gcp.errors import translate
from core.clock import Clock, SystemClock
from core.errors import InvalidRequest
from core.ports.message_bus import MessageBus, OutboundMessage
from core.ports.scheduler import SchedulerCapabilities

MAX_DELAY_S = 30 * 86400.0
MAX_TASK_BYTES = 100_000


def encode_timer(queue: str, message: OutboundMessage) -> bytes:
    """The task body: where the message goes, and the message."""
    envelope = {
        "queue": queue,
        "attributes": dict(message.attributes),
        "body": base64.b64encode(message.body).decode(),
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def decode_timer(payload: bytes) -> tuple[str, OutboundMessage]:
    """Parse a task body; ``InvalidRequest`` for anything that is not an envelope."""
    try:
        envelope = json.loads(payload)
        queue, attributes = envelope["queue"], envelope["attributes"]
        body = base64.b64decode(envelope["body"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise InvalidRequest(f"not a timer envelope: {exc}") from exc
    if not isinstance(queue, str) or not isinstance(attributes, dict):
        raise InvalidRequest("not a timer envelope: bad queue or attributes")
    attributes = {str(k): str(v) for k, v in attributes.items()}
    return queue, OutboundMessage(body=body, attributes=attributes)


async def deliver_timer(bus: MessageBus, payload: bytes) -> str:
    """What the timer endpoint does with a task body: send the message to its queue."""
    queue, message = decode_timer(payload)
    return await bus.send(queue=queue, message=message)


class CloudTasksScheduler:
    """Scheduler whose timers are Cloud Tasks HTTP tasks aimed at the timer endpoint."""

    capabilities = SchedulerCapabilities(max_delay_s=MAX_DELAY_S, can_cancel=True)

    def __init__(
        self,
        *,
        client: tasks_v2.CloudTasksAsyncClient,
        queue_path: str,
        timer_url: str,
        service_account: str,
        bus: MessageBus,
        audience: str = "",
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._bus = bus
        self._queue_path = queue_path
        self._url = timer_url
        self._service_account = service_account
        self._audience = audience or timer_url
        self._clock: Clock = clock or SystemClock()

    async def close(self) -> None:
        """Close the Cloud Tasks client (the bus is closed by its owner)."""
        await self._client.transport.close()  # type: ignore[no-untyped-call]

    async def schedule(self, *, queue: str, message: OutboundMessage, delay_s: float) -> str:
        if delay_s > MAX_DELAY_S:
            raise InvalidRequest(f"delay of {delay_s:.0f} s is more than {MAX_DELAY_S:.0f} s")
        if delay_s <= 0:
            return await self._bus.send(queue=queue, message=message)
        # Cloud Tasks takes an absolute schedule_time: converted here, with this instance's clock
        deliver_at = self._clock.now() + timedelta(seconds=delay_s)
        body = encode_timer(queue, message)
        if len(body) > MAX_TASK_BYTES:
            raise InvalidRequest(f"timer message larger than {MAX_TASK_BYTES} bytes")
        task = tasks_v2.Task(
            http_request=tasks_v2.HttpRequest(
                url=self._url,
                http_method=tasks_v2.HttpMethod.POST,
                headers={"Content-Type": "application/json"},
                body=body,
                oidc_token=tasks_v2.OidcToken(
                    service_account_email=self._service_account, audience=self._audience
                ),
            ),
            schedule_time=deliver_at,
        )
        try:
            created = await self._client.create_task(parent=self._queue_path, task=task)
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, "Cloud Tasks refused a timer") from exc
        return str(created.name)

    async def cancel(self, *, handle: str) -> bool:
        if not handle.startswith(f"{self._queue_path}/tasks/"):
            return False  # not one of ours: nothing to cancel
        try:
            await self._client.delete_task(name=handle)
        except (gexc.NotFound, gexc.InvalidArgument, gexc.FailedPrecondition):
            return False
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"Cloud Tasks could not cancel {handle}") from exc
        return True
