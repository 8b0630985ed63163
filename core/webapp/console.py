"""The operator console (``/console/``): fleet, dead letters (with requeue), tenants.

Signed in with the operator key (``SKYCRAWL_OPERATOR_KEY``); sessions live in the
``operator`` realm, which no tenant key or tenant session can open. The fleet view groups the
container records by egress (runtime, region) and state, with each container's work, age, last
heartbeat and — for an idle ready container — when its kill timer is due (the last change of
its work plus ``SKYCRAWL_IDLE_TTL_S``; an estimate, the timer itself lives in the scheduler),
and counts the cold starts (containers started) in the last hour.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from core.api.fleet_views import ProxyView, container_view
from core.api.http import ApiResponse
from core.egress_scoring import HEALTH_PARTITION, HEALTH_TABLE, EgressHealthRecord
from core.errors import Unauthorized
from core.models import Container, ContainerState
from core.records import Table
from core.webapp import http
from core.webapp.routing import WebRequest, WebRoute
from core.webapp.sessions import OPERATOR_REALM

if TYPE_CHECKING:
    from core.webapp.app import WebApp

PATH = "/console/"


def seconds_since(then: datetime | None, now: datetime) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


class ConsoleViews:
    def __init__(self, app: WebApp) -> None:
        self.app = app

    async def signin_form(self, wr: WebRequest) -> ApiResponse:
        return self.app.render(wr, "console_signin.html", error="")

    async def signin(self, wr: WebRequest) -> ApiResponse:
        key = http.field(wr.form, "key").strip()
        try:
            self.app.tenants.authenticate_operator(f"Bearer {key}")
        except Unauthorized:
            message = "That is not the operator key."
            return self.app.render(wr, "console_signin.html", 401, error=message)
        cookie = await self.app.sign_in(wr, OPERATOR_REALM, PATH, role="operator")
        return http.redirect(PATH, {"set-cookie": cookie})

    async def logout(self, wr: WebRequest) -> ApiResponse:
        await self.app.sessions.end(OPERATOR_REALM, wr.sid)
        return http.redirect(f"{PATH}signin", {"set-cookie": self.app.sign_out_cookie(wr, PATH)})

    async def fleet(self, wr: WebRequest) -> ApiResponse:
        now = self.app.clock.now()
        containers = [v.value for v in await self.app.records.containers.scan()]
        live = [c for c in containers if c.state.live]
        hour_ago = now - timedelta(hours=1)
        groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for container in sorted(live, key=lambda c: (c.egress.name, c.state, c.started_at)):
            key = (container.egress.name, container.egress.runtime, container.egress.region)
            groups.setdefault(key, []).append(self._row(container, now))
        states = Counter(c.state.value for c in containers)
        recent = [c for c in containers if not c.state.live and c.started_at >= hour_ago]
        return self.app.render(
            wr,
            "console_fleet.html",
            proxies=await self._proxies(live),
            groups=sorted(groups.items()),
            states=sorted(states.items()),
            cold_starts=sum(1 for c in containers if c.started_at >= hour_ago),
            recent=[self._row(c, now) for c in sorted(recent, key=lambda c: c.started_at)],
            live_count=len(live),
        )

    async def _proxies(self, live: list[Container]) -> dict[str, list[ProxyView]]:
        """Each live egress's proxies (redacted, with their health), by egress name."""
        table = Table(self.app.records.state, HEALTH_TABLE, EgressHealthRecord)
        health = {v.value.egress: v.value for v in await table.query(HEALTH_PARTITION)}
        views: dict[str, list[ProxyView]] = {}
        for container in live:
            if container.egress.proxy_pool and container.egress.name not in views:
                views[container.egress.name] = container_view(container, health).proxies
        return views

    def _row(self, container: Container, now: datetime) -> dict[str, Any]:
        kill_in = None
        if container.state is ContainerState.ready and not container.in_flight:
            idle_since = container.idle_since or container.ready_at or container.started_at
            keep = container.keep_alive_s
            due = idle_since + timedelta(
                seconds=self.app.settings.idle_ttl_s if keep is None else keep
            )
            kill_in = (due - now).total_seconds()
        return {
            "c": container,
            "age_s": seconds_since(container.started_at, now),
            "heartbeat_s": seconds_since(container.last_heartbeat, now),
            "kill_in_s": kill_in,
        }

    async def dead_letters(self, wr: WebRequest, flash: str = "") -> ApiResponse:
        letters = await self.app.dead_letters.peek()
        dead_crawls = []
        for found in await self.app.records.crawls.scan():
            if found.value.state.value == "dead-lettered":
                dead_crawls.append(found.value)
        return self.app.render(
            wr, "console_dead.html", letters=letters, dead_crawls=dead_crawls, flash=flash
        )

    async def requeue(self, wr: WebRequest) -> ApiResponse:
        message_id = http.field(wr.form, "message_id")
        done = await self.app.dead_letters.requeue(message_id)
        flash = f"Requeued {message_id}." if done else f"{message_id} is no longer there."
        return await self.dead_letters(wr, flash=flash)

    async def tenants(
        self, wr: WebRequest, created: dict[str, Any] | None = None, error: str = ""
    ) -> ApiResponse:
        answer = await self.app.api.call("GET", "/v1/tenants", tenant=None, operator=True)
        items = answer.data.get("items", []) if answer.ok else []
        live: Counter[str] = Counter()
        for found in await self.app.records.containers.scan():
            if found.value.state.live:
                live[found.value.tenant_id] += 1
        # this UTC month's usage of every tenant (``GET /v1/usage``, the operator's view)
        metered = await self.app.api.call(
            "GET", "/v1/usage", tenant=None, operator=True, query={"granularity": "month"}
        )
        usage = (
            {t["tenant_id"]: t for t in metered.data.get("tenants", [])}
            if metered.ok and isinstance(metered.data, dict)
            else {}
        )
        return self.app.render(
            wr,
            "console_tenants.html",
            items=items,
            live=live,
            usage=usage,
            created=created,
            error=error,
        )

    async def tenant_action(self, wr: WebRequest) -> ApiResponse:
        """Create a tenant (its key shown once) or tear one down, through the API's routes."""
        if http.field(wr.form, "action") == "delete":
            if http.field(wr.form, "confirm") != "on":
                return await self.tenants(wr, error="Tick the box to confirm the teardown.")
            tenant_id = http.field(wr.form, "tenant")
            answer = await self.app.api.call(
                "DELETE", f"/v1/tenants/{tenant_id}", tenant=None, operator=True
            )
            error = "" if answer.ok else str(answer.problem.get("detail", ""))
            return await self.tenants(wr, error=error)
        quotas = {  # a form sends text: whole numbers go as JSON numbers (the API is strict)
            name: int(value) if value.isdigit() else value
            for name in ("max_containers", "parallel_per_container")
            if (value := http.field(wr.form, name).strip())
        }
        body = {"name": http.field(wr.form, "name").strip(), "quotas": quotas}
        answer = await self.app.api.call(
            "POST", "/v1/tenants", tenant=None, operator=True, body=body
        )
        if not answer.ok:
            errors = answer.problem.get("errors") or []
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
            return await self.tenants(wr, error=detail or str(answer.problem.get("detail", "")))
        return await self.tenants(wr, created=answer.data)

    def routes(self) -> list[WebRoute]:
        return [
            WebRoute("GET", "/console/signin", self.signin_form, "public"),
            WebRoute("POST", "/console/signin", self.signin, "public"),
            WebRoute("POST", "/console/logout", self.logout, "operator", "operator"),
            WebRoute("GET", "/console/", self.fleet, "operator", "operator"),
            WebRoute("GET", "/console/dead-letters", self.dead_letters, "operator", "operator"),
            WebRoute("POST", "/console/dead-letters", self.requeue, "operator", "operator"),
            WebRoute("GET", "/console/tenants", self.tenants, "operator", "operator"),
            WebRoute("POST", "/console/tenants", self.tenant_action, "operator", "operator"),
        ]
