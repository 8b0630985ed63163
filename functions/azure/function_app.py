"""skycrawl on Azure Functions (Python v2 programming model).

Three functions, each a few lines that hand the event to the core built by
``functions.azure.bootstrap`` (once per worker, on first use):

``api``         HTTP trigger, route ``{*path}`` (``host.json`` sets the route prefix to
                ``""``, so ``/v1/crawls`` is served at the root), anonymous at the Functions
                level: the API authenticates every call with its bearer keys.
``inbox``       the conductor: a Service Bus queue trigger on ``%SKYCRAWL_INBOX_QUEUE%``
                (connection ``SKYCRAWL_SERVICEBUS``), or -- when ``SKYCRAWL_AZURE_BUS`` is
                ``storage-queue`` -- a Storage queue trigger on the same queue (connection
                ``SKYCRAWL_STORAGE``; ``host.json`` reads messages with
                ``"messageEncoding": "none"``, as the adapter writes JSON envelopes). The core
                decides how each message is settled (``core.inbox.settle``) and this file maps
                the outcome: ``ack`` returns (the host completes / deletes it); ``retry``
                raises (the host abandons it, and after ``max delivery count`` /
                ``maxDequeueCount`` attempts dead-letters it or moves it to
                ``<queue>-poison``); ``dead_letter`` (an undecodable message) is dead-lettered at
                once with the reason -- on Service Bus by the message's own settlement
                (``ServiceBusMessageActions.deadletter``, when the worker has
                ``azurefunctions-extensions-bindings-servicebus``; without it the message is
                retried until the host dead-letters it, the reason in the log), on Storage
                queues by moving it to ``<queue>-poison`` with ``dead_letter_reason``.
``housekeeping`` timer trigger on ``%SKYCRAWL_AZURE_TIMER_SCHEDULE%`` (NCRONTAB with
                seconds, e.g. ``*/30 * * * * *``): reaper, lost kill timers, backlog.

Which queue trigger is registered is decided when the host indexes this file, from the
``SKYCRAWL_AZURE_BUS`` app setting. Nothing else happens at import: no clients, no network.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import azure.functions as func

from adapters.azure.storage_queue_wire import decode_envelope
from core.api import ApiRequest, ApiResponse
from core.inbox import InboxOutcome, Settlement, settle
from core.ports import OutboundMessage, dead_letter_queue
from core.ports.message_bus import dead_letter_attributes
from functions.azure.bootstrap import get_stack

log = logging.getLogger("skycrawl.functions")

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

HTTP_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def to_api_request(req: func.HttpRequest) -> ApiRequest:
    """The core's request for a Functions HTTP request."""
    routed = req.route_params.get("path")
    path = "/" + routed.lstrip("/") if routed is not None else unquote(urlsplit(req.url).path)
    return ApiRequest(
        method=req.method.upper(),
        path=path or "/",
        query=dict(req.params),
        headers={name.lower(): value for name, value in req.headers.items()},
        body=req.get_body() or b"",
    )


def to_http_response(response: ApiResponse) -> func.HttpResponse:
    """The Functions HTTP response for the core's response."""
    content_type = response.headers.get("content-type")
    mimetype = content_type.split(";", 1)[0].strip() if content_type else None
    return func.HttpResponse(
        body=response.body,
        status_code=response.status,
        headers=dict(response.headers),
        mimetype=mimetype,
    )


class RetryLater(Exception):
    """Raised for a ``retry`` outcome: the host abandons the message and delivers it again."""


class DeadLetterActions(Protocol):
    """The settlement the Service Bus SDK-type binding gives a function
    (``azurefunctions.extensions.bindings.servicebus.ServiceBusMessageActions``)."""

    def deadletter(
        self,
        message: Any,
        deadletter_reason: str | None = None,
        deadletter_error_description: str | None = None,
    ) -> None: ...


async def handle_inbox(body: bytes, *, delivery_count: int = 1) -> InboxOutcome:
    """Hand one inbox message to the core; ``RetryLater`` for a ``retry`` outcome."""
    stack = await get_stack()
    outcome = await settle(stack.conductor, body, delivery_count=delivery_count)
    if outcome.settlement is Settlement.retry:
        raise RetryLater(outcome.reason)
    return outcome


async def settle_servicebus(
    message: Any, body: bytes, delivery_count: int, actions: DeadLetterActions | None
) -> InboxOutcome:
    """A Service Bus inbox message: ``dead_letter`` by the message's own settlement."""
    outcome = await handle_inbox(body, delivery_count=delivery_count)
    if outcome.settlement is Settlement.dead_letter:
        if actions is None:  # no settlement in this worker: the host dead-letters it later
            log.error("undecodable inbox message (retried until dead-lettered): %s", outcome.reason)
            raise RetryLater(outcome.reason)
        log.error("dead-lettering an inbox message: %s", outcome.reason)
        actions.deadletter(
            message, deadletter_reason=outcome.reason, deadletter_error_description=outcome.reason
        )
    return outcome


async def settle_storage_queue(body: bytes, delivery_count: int) -> InboxOutcome:
    """A Storage queue inbox message: ``dead_letter`` moves it to ``<queue>-poison``."""
    outcome = await handle_inbox(body, delivery_count=delivery_count)
    if outcome.settlement is Settlement.dead_letter:
        stack = await get_stack()
        inbox = stack.settings.inbox_queue
        attributes = dead_letter_attributes({}, reason=outcome.reason, source=inbox)
        await stack.ports.bus.send(
            queue=dead_letter_queue(inbox), message=OutboundMessage(body, attributes)
        )
    return outcome


@app.route(route="{*path}", methods=HTTP_METHODS)
async def api(req: func.HttpRequest) -> func.HttpResponse:
    stack = await get_stack()
    return to_http_response(await stack.api.handle(to_api_request(req)))


async def inbox_storage_queue_handler(msg: func.QueueMessage) -> None:
    """The Storage queue trigger's body."""
    envelope = decode_envelope(msg.get_body(), fallback_id=msg.id or "")
    await settle_storage_queue(envelope.body, msg.dequeue_count or 1)


async def inbox_servicebus_handler(msg: func.ServiceBusMessage) -> None:
    """The Service Bus trigger's body when the worker has no SDK-type binding."""
    await settle_servicebus(msg, msg.get_body(), msg.delivery_count or 1, None)


def _register_inbox() -> None:
    """Register the ``inbox`` function for the configured bus (at indexing time)."""
    inbox = app.function_name(name="inbox")
    if os.environ.get("SKYCRAWL_AZURE_BUS", "servicebus") == "storage-queue":
        trigger = app.queue_trigger(
            arg_name="msg", queue_name="%SKYCRAWL_INBOX_QUEUE%", connection="SKYCRAWL_STORAGE"
        )
        inbox(trigger(inbox_storage_queue_handler))
        return
    trigger = app.service_bus_queue_trigger(
        arg_name="msg", queue_name="%SKYCRAWL_INBOX_QUEUE%", connection="SKYCRAWL_SERVICEBUS"
    )
    try:
        import azurefunctions.extensions.bindings.servicebus as servicebus  # type: ignore[import-not-found]
    except ImportError:  # no SDK-type binding in this worker: no settlement from the function
        inbox(trigger(inbox_servicebus_handler))
        return

    async def inbox_servicebus_settled(
        msg: servicebus.ServiceBusReceivedMessage,
        message_actions: servicebus.ServiceBusMessageActions,
    ) -> None:
        body = b"".join(bytes(part) for part in msg.body)
        await settle_servicebus(msg, body, msg.delivery_count or 1, message_actions)

    inbox(trigger(inbox_servicebus_settled))


_register_inbox()


@app.timer_trigger(arg_name="timer", schedule="%SKYCRAWL_AZURE_TIMER_SCHEDULE%")
async def housekeeping(timer: func.TimerRequest) -> None:
    stack = await get_stack()
    report = await stack.housekeeper.run()
    if report.reaped or report.stopped_idle or report.placed:
        log.info(
            "housekeeping: reaped %s, stopped idle %s, placed %d",
            report.reaped,
            report.stopped_idle,
            report.placed,
        )
