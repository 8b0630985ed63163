"""The HTTP API on AWS: API Gateway HTTP API (payload format 2.0) → ``core.api.Api``.

``handler(event, context)`` turns the event into an ``ApiRequest`` -- method from
``requestContext.http``, the percent-decoded ``rawPath`` (without the stage, for a named
stage), the query from ``rawQueryString`` (first value of a repeated name wins), lower-case
headers plus the ``cookies`` field as one ``cookie`` header, and the body (base64-decoded when
``isBase64Encoded``) -- and the ``ApiResponse`` back into a 2.0 response: text bodies as
text, anything else (a WARC export) base64-encoded with ``isBase64Encoded: true``.

Limits: a Lambda response carries at most 6 MB (base64 counts). Exports larger than
``SKYCRAWL_EXPORT_URL_BYTES`` (4 MiB) never come this way: they are answered ``303`` with a
presigned S3 URL (``core.api.export_urls``). Any other response over the cap (an export with
``delivery=stream``) is answered ``413`` with a problem body that says what to do instead. Requests are at most 10 MB at API Gateway and ``SKYCRAWL_MAX_REQUEST_BYTES`` at
the API.

Observability: Powertools Logger (JSON; correlation id = the crawl id for ``/v1/crawls/{id}``
routes, else API Gateway's request id), Tracer (X-Ray; off outside Lambda and with
``POWERTOOLS_TRACE_DISABLED=true``), Metrics in namespace ``skycrawl``: ``ApiRequests``,
``ApiServerErrors``, ``CrawlsSubmitted``.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import parse_qsl, unquote

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext

from core.api import ApiRequest, ApiResponse
from core.api.problems import HttpProblem, problem_response
from functions.aws import bootstrap, tracing

SERVICE = "skycrawl-api"
#: Lambda's response limit (6 MB) with room for the status, headers and JSON framing.
MAX_RESPONSE_BODY = 6 * 1000 * 1000 - 16 * 1024
_TEXT = re.compile(r"^(text/|application/([\w.+-]*\+)?(json|xml|x-ndjson|javascript)\b)")
_CRAWL_PATH = re.compile(r"^/v1/crawls/([^/]+)")

logger = Logger(service=SERVICE)
tracer = tracing.tracer(SERVICE)
metrics = Metrics(namespace="skycrawl", service=SERVICE)
bootstrap.route_core_logs(logger)


def to_request(event: APIGatewayProxyEventV2) -> ApiRequest:
    """The ``ApiRequest`` an HTTP API (payload 2.0) event describes."""
    context = event.request_context
    path = event.raw_path or "/"
    stage = context.stage
    if stage and stage != "$default" and (path == f"/{stage}" or path.startswith(f"/{stage}/")):
        path = path[len(stage) + 1 :] or "/"
    query: dict[str, str] = {}
    for name, value in parse_qsl(event.raw_query_string or "", keep_blank_values=True):
        query.setdefault(name, value)
    headers = {str(k).lower(): str(v) for k, v in (event.headers or {}).items()}
    if event.cookies:
        headers["cookie"] = "; ".join(event.cookies)
    raw = event.body or ""
    body = base64.b64decode(raw) if event.is_base64_encoded else raw.encode("utf-8")
    return ApiRequest(
        method=context.http.method.upper(),
        path=unquote(path),
        query=query,
        headers=headers,
        body=body,
    )


def to_result(response: ApiResponse) -> dict[str, Any]:
    """The HTTP API (payload 2.0) result of an ``ApiResponse``."""
    headers = {name.lower(): value for name, value in response.headers.items()}
    text = None
    if _TEXT.match(headers.get("content-type", "")) or not response.body:
        try:
            text = response.body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    if text is not None:
        return {
            "statusCode": response.status,
            "headers": headers,
            "body": text,
            "isBase64Encoded": False,
        }
    return {
        "statusCode": response.status,
        "headers": headers,
        "body": base64.b64encode(response.body).decode("ascii"),
        "isBase64Encoded": True,
    }


def _fit(response: ApiResponse, path: str) -> ApiResponse:
    encoded = len(response.body) * 4 // 3 + 4
    if encoded <= MAX_RESPONSE_BODY:
        return response
    problem = HttpProblem(
        413,
        f"the response ({len(response.body)} bytes) is larger than an AWS Lambda response may "
        "be (6 MB); export it without delivery=stream (a signed URL), or read the crawl "
        "page by page with /pages",
        slug="response-too-large",
        title="Response too large",
    )
    logger.warning("response too large for Lambda", extra={"bytes": len(response.body)})
    return problem_response(problem, instance=path)


@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = to_request(APIGatewayProxyEventV2(event))
    crawl = _CRAWL_PATH.match(request.path)
    if crawl:
        logger.set_correlation_id(crawl.group(1))
    response = _fit(bootstrap.run(bootstrap.stack().api.handle(request)), request.path)
    metrics.add_metric(name="ApiRequests", unit=MetricUnit.Count, value=1)
    if response.status >= 500:
        metrics.add_metric(name="ApiServerErrors", unit=MetricUnit.Count, value=1)
    if request.method == "POST" and request.path == "/v1/crawls" and response.status == 202:
        crawl_id = json.loads(response.body).get("id")
        logger.set_correlation_id(crawl_id)
        logger.info("crawl submitted", extra={"crawl_id": crawl_id})
        metrics.add_metric(name="CrawlsSubmitted", unit=MetricUnit.Count, value=1)
    logger.info("answered", extra={"method": request.method, "status": response.status})
    return to_result(response)
