"""Google Cloud Functions (2nd gen) entry points, on functions-framework.

``api`` (HTTP, public)
    Every route of ``core.api`` (tenants authenticate with their API key), plus two internal
    routes for Google's schedulers, authenticated by an OIDC token (``functions.gcp.oidc``):

    * ``POST /internal/timers`` -- Cloud Tasks delivers a due timer (``scheduler.py``'s
      envelope); it is sent to its queue (kill timers: the inbox). 204, 4xx for a bad token or
      envelope, 5xx (Cloud Tasks retries) when the bus fails.
    * ``POST /internal/housekeeping`` -- Cloud Scheduler, every minute: reap, stop the idle,
      place backlogs. 200 with what was done.

``conductor`` (CloudEvent)
    The inbox subscription pushes each message here (a CloudEvent from Eventarc, or a raw
    Pub/Sub push that functions-framework converts into one): the base64
    ``data["message"]["data"]`` goes to ``core.inbox.settle``, and its outcome is mapped:
    ``ack`` returns (2xx: Pub/Sub acks), ``dead_letter`` (an undecodable message) is published
    to the dead-letter topic with the reason and then acked, ``retry`` raises (5xx: Pub/Sub
    nacks and redelivers with back-off until the subscription's dead-letter policy moves it).

Each handler is a few lines: build the core once (``bootstrap.get_stack``), turn the request
into a core call, map the result back. Deploy with ``--entry-point=api`` and
``--entry-point=conductor`` (see ``deploy/gcp/README.md``).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import flask
import functions_framework
from cloudevents.http import CloudEvent

from core.api import ApiRequest, ApiResponse
from core.api.problems import from_exception, problem_response, too_large
from core.errors import InvalidRequest, SkycrawlError
from functions.gcp.bootstrap import GcpStack, get_stack


def _reply(response: ApiResponse) -> flask.Response:
    return flask.Response(response.body, status=response.status, headers=response.headers)


def _problem(exc: Exception, path: str) -> flask.Response:
    return _reply(problem_response(from_exception(exc), instance=path))


def _internal(stack: GcpStack, request: flask.Request) -> flask.Response:
    path = request.path
    try:
        if request.method != "POST" or path not in ("/internal/timers", "/internal/housekeeping"):
            return _reply(ApiResponse.json(404, {"title": "Not Found", "status": 404}))
        stack.authorize(request.headers.get("Authorization"))
        if path == "/internal/timers":
            stack.run(stack.deliver_timer(request.get_data()))
            return _reply(ApiResponse.empty(204))
        report = stack.run(stack.housekeeping())
        payload = {
            "reaped": report.reaped,
            "stopped_idle": report.stopped_idle,
            "placed": report.placed,
        }
        return _reply(ApiResponse.json(200, payload))
    except SkycrawlError as exc:
        return _problem(exc, path)


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    """The public HTTP API and the internal endpoints."""
    stack = get_stack()
    if request.path.startswith("/internal/"):
        return _internal(stack, request)
    limit = stack.settings.max_request_bytes
    if (request.content_length or 0) > limit:
        return _reply(problem_response(too_large(limit), instance=request.path))
    body = request.stream.read(limit + 1)
    api_request = ApiRequest(
        method=request.method.upper(),
        path=request.path,
        query={key: request.args.get(key, "") for key in request.args},
        headers={name.lower(): value for name, value in request.headers.items()},
        body=body,
    )
    return _reply(stack.run(stack.api.handle(api_request)))


def pushed_body(data: Any) -> bytes:
    """The message bytes of a Pub/Sub CloudEvent's ``data``; ``InvalidRequest`` otherwise."""
    try:
        encoded = data["message"].get("data", "")
        return base64.b64decode(encoded, validate=True)
    except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise InvalidRequest(f"not a Pub/Sub message event: {exc}") from exc


def delivery_attempt(data: Any) -> int:
    """Pub/Sub's ``deliveryAttempt`` of a push (set with a dead-letter policy), else 1."""
    try:
        return max(1, int(data.get("deliveryAttempt") or 1))
    except (AttributeError, TypeError, ValueError):
        return 1


@functions_framework.cloud_event
def conductor(cloud_event: CloudEvent) -> None:
    """One inbox message, pushed by Pub/Sub."""
    stack = get_stack()
    try:
        body = pushed_body(cloud_event.data)
    except InvalidRequest:
        body = json.dumps(cloud_event.data, default=str).encode()
    stack.run(stack.handle_inbox(body, delivery_count=delivery_attempt(cloud_event.data)))
