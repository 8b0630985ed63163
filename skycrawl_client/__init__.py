"""A typed Python client of the skycrawl API, for tenants (and operators), sync and async.

::

    from skycrawl_client import AsyncSkycrawl, Skycrawl

    with Skycrawl("http://127.0.0.1:8787", api_key=KEY) as api:
        crawl = api.submit_crawl({"seeds": ["https://example.com/"], "max_pages": 50})
        status = api.get_crawl(crawl.id)
        for chunk in api.export_crawl(crawl.id, format="items.csv"):
            ...

    async with AsyncSkycrawl(url, api_key=KEY) as api:
        page = await api.list_pages(crawl_id, limit=100)

One method per operation of ``/openapi.json``, named by its ``operationId``; answers are the
API's own pydantic models (``core.api.schemas``); a problem answer raises ``ApiError`` with
its ``status``, ``detail`` and field ``errors``. ``transport=`` takes any httpx transport
(``httpx.ASGITransport(app)`` talks to an in-process API, as ``skycrawl`` the CLI does).
``verify_signature`` checks a webhook's ``Skycrawl-Signature`` on the receiving side.
"""

from __future__ import annotations

from core.webhook_signing import verify_signature
from skycrawl_client.client import ApiError, AsyncSkycrawl, Skycrawl

__all__ = ["ApiError", "AsyncSkycrawl", "Skycrawl", "verify_signature"]
