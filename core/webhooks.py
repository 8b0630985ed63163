"""Webhooks: tell a tenant's URL that its crawl ended.

The URL is the tenant's, so it gets the crawler's SSRF rules: http(s) only, the host
resolved once, every address checked against the operator's policy, and the request sent to
the checked address (``Host`` and TLS SNI keep the name) — no DNS-rebinding window.
A 5xx or a network error raises ``Retryable``: the inbox redelivers with back-off until the
queue's ``max_deliveries`` dead-letters it; a 4xx is the receiver's answer and is final.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from urllib.parse import urlsplit, urlunsplit

import httpx

from core.errors import Retryable, UnsafeUrl
from core.models import Crawl
from core.netguard import AddressPolicy, check_url

log = logging.getLogger("skycrawl.webhooks")


def webhook_payload(crawl: Crawl) -> dict[str, object]:
    return {
        "event": f"crawl.{crawl.state.value}",
        "crawl": {
            "id": crawl.id,
            "status": crawl.state.value,
            "counts": crawl.counts.model_dump(),
            "reason": crawl.reason,
            "created_at": crawl.created_at.isoformat(),
            "finished_at": crawl.finished_at.isoformat() if crawl.finished_at else None,
        },
    }


class WebhookNotifier:
    def __init__(self, *, policy: AddressPolicy, timeout_s: float = 10.0) -> None:
        self._policy = policy
        self._timeout = timeout_s

    async def _pinned(self, url: str) -> tuple[str, str]:
        """Resolve and check the host; return the URL rewritten to the checked address."""
        check_url(url, self._policy)
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise UnsafeUrl(f"{host} does not resolve")
        for address in addresses:
            self._policy.check_address(address)
        ip = addresses[0]
        netloc = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), host

    async def __call__(self, crawl: Crawl) -> None:
        url = crawl.spec.webhook_url
        if not url:
            return
        try:
            target, host = await self._pinned(url)
        except (UnsafeUrl, OSError) as exc:
            log.warning("webhook of crawl %s not sent: %s", crawl.id, exc)
            return
        headers = {"host": host, "x-skycrawl-event": f"crawl.{crawl.state.value}"}
        async with httpx.AsyncClient(timeout=self._timeout, trust_env=False) as client:
            try:
                response = await client.post(
                    target,
                    json=webhook_payload(crawl),
                    headers=headers,
                    extensions={"sni_hostname": host},
                )
            except httpx.HTTPError as exc:
                raise Retryable(f"webhook {host}: {exc}") from exc
        if response.status_code >= 500:
            raise Retryable(f"webhook {host} answered {response.status_code}")
        if response.status_code >= 400:
            log.warning("webhook of crawl %s refused: HTTP %s", crawl.id, response.status_code)
