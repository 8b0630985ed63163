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
                ``"messageEncoding": "none"``, as the adapter writes JSON envelopes). A message
                is settled by the host: completed when the handler returns, retried when it
                raises, and dead-lettered (Service Bus) or moved to ``<queue>-poison``
                (Storage) after ``max delivery count`` / ``maxDequeueCount`` attempts --
                undecodable messages included.
``housekeeping`` timer trigger on ``%SKYCRAWL_AZURE_TIMER_SCHEDULE%`` (NCRONTAB with
                seconds, e.g. ``*/30 * * * * *``): reaper, lost kill timers, backlog.

Which queue trigger is registered is decided when the host indexes this file, from the
``SKYCRAWL_AZURE_BUS`` app setting. Nothing else happens at import: no clients, no network.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import unquote, urlsplit

import azure.functions as func

from adapters.azure.storage_queue_wire import decode_envelope
from core.api import ApiRequest, ApiResponse
from core.errors import InvalidRequest
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


async def handle_inbox(body: bytes) -> None:
    """Hand one inbox message to the conductor; raising makes the host retry it."""
    stack = await get_stack()
    try:
        await stack.conductor.handle_raw(body)
    except InvalidRequest as exc:  # retried until the host dead-letters it, reason logged
        log.error("undecodable inbox message: %s", exc.detail)
        raise


@app.route(route="{*path}", methods=HTTP_METHODS)
async def api(req: func.HttpRequest) -> func.HttpResponse:
    stack = await get_stack()
    return to_http_response(await stack.api.handle(to_api_request(req)))


if os.environ.get("SKYCRAWL_AZURE_BUS", "servicebus") == "storage-queue":

    @app.function_name(name="inbox")
    @app.queue_trigger(
        arg_name="msg", queue_name="%SKYCRAWL_INBOX_QUEUE%", connection="SKYCRAWL_STORAGE"
    )
    async def inbox_storage_queue(msg: func.QueueMessage) -> None:
        await handle_inbox(decode_envelope(msg.get_body(), fallback_id=msg.id or "").body)

else:

    @app.function_name(name="inbox")
    @app.service_bus_queue_trigger(
        arg_name="msg", queue_name="%SKYCRAWL_INBOX_QUEUE%", connection="SKYCRAWL_SERVICEBUS"
    )
    async def inbox_servicebus(msg: func.ServiceBusMessage) -> None:
        await handle_inbox(msg.get_body())


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
