"""A tenant's pages: sign-in (API key or invite), crawls, new crawl, usage, keys, users."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from core.api.http import ApiResponse
from core.errors import Unauthorized
from core.tenancy import minute_bucket
from core.webapp import forms, http
from core.webapp.routing import WebRequest, WebRoute

if TYPE_CHECKING:
    from core.webapp.app import WebApp

ROLES = ("viewer", "editor")


class TenantViews:
    def __init__(self, app: WebApp) -> None:
        self.app = app

    # ------------------------------------------------------------------ sign-in

    async def signin_form(self, wr: WebRequest) -> ApiResponse:
        return self.app.render(wr, "signin.html", error="")

    async def signin(self, wr: WebRequest) -> ApiResponse:
        key = http.field(wr.form, "key").strip()
        try:
            tenant = await self.app.tenants.authenticate(f"Bearer {key}")
        except Unauthorized:
            tenant = None
        if tenant is None or tenant.id != wr.owner.id:
            return self.app.render(wr, "signin.html", 401, error="That key is not valid here.")
        cookie = await self.app.sign_in(wr, tenant.id, f"{wr.base}/", role="admin")
        return http.redirect(f"{wr.base}/", {"set-cookie": cookie})

    async def join_form(self, wr: WebRequest) -> ApiResponse:
        token = wr.request.query.get("token", "")
        return self.app.render(wr, "join.html", token=token, error="")

    async def join(self, wr: WebRequest) -> ApiResponse:
        token = http.field(wr.form, "token")
        user = await self.app.sessions.redeem(wr.owner.id, token)
        if user is None:
            message = "This invite link is not valid (any more); ask for a new one."
            return self.app.render(wr, "join.html", 401, token="", error=message)
        cookie = await self.app.sign_in(wr, wr.owner.id, f"{wr.base}/", role=user.role, user=user)
        return http.redirect(f"{wr.base}/", {"set-cookie": cookie})

    async def logout(self, wr: WebRequest) -> ApiResponse:
        await self.app.sessions.end(wr.owner.id, wr.sid)
        cookie = self.app.sign_out_cookie(wr, f"{wr.base}/")
        return http.redirect(f"{wr.base}/signin", {"set-cookie": cookie})

    # ------------------------------------------------------------------ crawls

    async def crawls(self, wr: WebRequest) -> ApiResponse:
        answer = await self.app.api.call("GET", "/v1/crawls", tenant=wr.owner, query=_cursor(wr))
        specs = {v.value.id: v.value.spec for v in await self.app.records.crawls.query(wr.owner.id)}
        items = answer.data.get("items", []) if answer.ok else []
        rows = [{**item, "spec": specs.get(item["id"])} for item in items]
        return self.app.render(
            wr,
            "crawls.html",
            rows=rows,
            next_cursor=answer.data.get("next_cursor") if answer.ok else None,
            flash=wr.request.query.get("flash", ""),
        )

    async def crawls_json(self, wr: WebRequest) -> ApiResponse:
        """What the live progress polls: the API's crawl list, as the session's tenant."""
        answer = await self.app.api.call("GET", "/v1/crawls", tenant=wr.owner, query=_cursor(wr))
        response = answer.response
        response.headers.update({"cache-control": "no-store", "x-content-type-options": "nosniff"})
        return response

    async def new_crawl_form(self, wr: WebRequest) -> ApiResponse:
        return self._crawl_form(wr, forms.form_values({}), {}, [])

    def _crawl_form(
        self,
        wr: WebRequest,
        values: dict[str, str],
        errors: dict[str, list[str]],
        general: list[str],
        status: int = 200,
    ) -> ApiResponse:
        return crawl_form(self.app, wr, values, errors, general, status)

    async def submit_crawl(self, wr: WebRequest) -> ApiResponse:
        body, errors = forms.spec_body(wr.form)
        values = forms.posted_values(wr.form)
        if errors:
            return self._crawl_form(wr, values, errors, [], 422)
        key = http.field(wr.form, "idempotency_key")
        answer = await self.app.api.call(
            "POST",
            "/v1/crawls",
            tenant=wr.owner,
            body=body,
            headers={"idempotency-key": key} if key else None,
        )
        if not answer.ok:
            by_field, general = forms.field_errors(answer.problem)
            return self._crawl_form(wr, values, by_field, general, answer.status)
        return http.redirect(f"{wr.base}/crawls/{answer.data['id']}")

    # ------------------------------------------------------------------ usage

    async def usage(self, wr: WebRequest, budget_error: str = "") -> ApiResponse:
        tenant = wr.owner
        pending = await self.app.records.active.query(tenant.id)
        live = await self.app.records.live_containers(tenant.id)
        in_flight = sum(len(c.in_flight) for c in live)
        bucket, _ = minute_bucket(self.app.clock.now())
        counter = await self.app.records.rate.get(tenant.id, bucket)
        return self.app.render(
            wr,
            "usage.html",
            quotas=tenant.quotas,
            pending=len(pending),
            this_minute=counter.value.count if counter else 0,
            live=len(live),
            in_flight=in_flight,
            metering=await self._metering(wr),
            budget_error=budget_error,
            can_budget=wr.can("admin"),
        )

    async def budget_action(self, wr: WebRequest) -> ApiResponse:
        """Set (``PUT /v1/budget``) or remove (``DELETE``) the monthly budget; the API's
        problem details are shown beside the form."""
        if http.field(wr.form, "action") == "budget-clear":
            answer = await self.app.api.call("DELETE", "/v1/budget", tenant=wr.owner)
        else:
            body: dict[str, Any] = {
                "monthly_amount": _number(http.field(wr.form, "monthly_amount"), float)
            }
            thresholds = http.field(wr.form, "thresholds")
            if thresholds:
                body["thresholds"] = [
                    _number(t.strip().rstrip("%"), int) for t in thresholds.split(",") if t.strip()
                ]
            webhook = http.field(wr.form, "webhook_url")
            if webhook:
                body["webhook_url"] = webhook
            answer = await self.app.api.call("PUT", "/v1/budget", tenant=wr.owner, body=body)
        if answer.ok:
            return http.redirect(f"{wr.base}/usage")
        errors = answer.problem.get("errors") or []
        detail = "; ".join(
            f"{'.'.join(str(x) for x in e.get('loc', []))}: {e.get('msg', '')}"
            for e in errors
            if isinstance(e, dict)
        )
        return await self.usage(wr, budget_error=detail or str(answer.problem.get("detail", "")))

    async def _metering(self, wr: WebRequest) -> dict[str, Any] | None:
        """This UTC month's usage and cost per day (``GET /v1/usage``) and the budget
        (``GET /v1/budget``); None if the API does not answer."""
        answer = await self.app.api.call(
            "GET", "/v1/usage", tenant=wr.owner, query={"granularity": "day"}
        )
        budget = await self.app.api.call("GET", "/v1/budget", tenant=wr.owner)
        if not answer.ok or not isinstance(answer.data, dict) or not answer.data["tenants"]:
            return None
        usage: dict[str, Any] = answer.data["tenants"][0]
        return {**usage, "budget": budget.data if budget.ok else None}

    # ------------------------------------------------------------------ keys

    async def keys(
        self,
        wr: WebRequest,
        shown: dict[str, Any] | None = None,
        secret: dict[str, Any] | None = None,
    ) -> ApiResponse:
        """API keys and the webhook signing secrets (``shown``/``secret``: a new key or
        secret, shown this once)."""
        answer = await self.app.api.call("GET", "/v1/keys", tenant=wr.owner)
        hooks = await self.app.api.call("GET", "/v1/webhooks/secret", tenant=wr.owner)
        return self.app.render(
            wr,
            "keys.html",
            keys=answer.data.get("items", []) if answer.ok else [],
            shown=shown,
            webhook=hooks.data if hooks.ok else None,
            secret=secret,
            error="" if answer.ok else str(answer.problem.get("detail", "")),
        )

    async def key_action(self, wr: WebRequest) -> ApiResponse:
        action = http.field(wr.form, "action")
        prefix = http.field(wr.form, "prefix")
        if action == "create":
            answer = await self.app.api.call("POST", "/v1/keys", tenant=wr.owner)
        elif action == "rotate":
            answer = await self.app.api.call("POST", f"/v1/keys/{prefix}/rotate", tenant=wr.owner)
        elif action == "revoke":
            answer = await self.app.api.call("DELETE", f"/v1/keys/{prefix}", tenant=wr.owner)
        elif action == "webhook-rotate":
            grace = http.field(wr.form, "grace_h") or "24"
            try:
                body: dict[str, Any] = {"grace_s": round(float(grace) * 3600)}
            except ValueError:
                body = {"grace_s": grace}  # the API says what is wrong with it
            answer = await self.app.api.call(
                "POST", "/v1/webhooks/secret", tenant=wr.owner, body=body
            )
            if answer.ok:
                return await self.keys(wr, secret=answer.data)
        elif action == "webhook-revoke":
            answer = await self.app.api.call("DELETE", "/v1/webhooks/secret", tenant=wr.owner)
        else:
            return self.app.error(wr, 400, "Unknown action.")
        if not answer.ok:
            return self.app.error(wr, answer.status, str(answer.problem.get("detail", "")))
        return await self.keys(wr, shown=answer.data if answer.status == 201 else None)

    # ------------------------------------------------------------------ users

    async def users(self, wr: WebRequest, invite: dict[str, str] | None = None) -> ApiResponse:
        users = await self.app.sessions.users(wr.owner.id)
        return self.app.render(wr, "users.html", users=users, invite=invite, roles=ROLES)

    async def user_action(self, wr: WebRequest) -> ApiResponse:
        action = http.field(wr.form, "action")
        tenant_id = wr.owner.id
        if action == "invite":
            name = http.field(wr.form, "name").strip()[:100]
            role = http.field(wr.form, "role")
            if not name or role not in ROLES:
                return self.app.error(wr, 422, "A user needs a name and a role.")
            user, token = await self.app.sessions.invite(tenant_id, name, role)  # type: ignore[arg-type]
        elif action == "reissue":
            user, token = await self.app.sessions.reissue(tenant_id, http.field(wr.form, "user"))
        elif action == "remove":
            await self.app.sessions.remove_user(tenant_id, http.field(wr.form, "user"))
            return http.redirect(f"{wr.base}/users")
        else:
            return self.app.error(wr, 400, "Unknown action.")
        link = f"{self.app.origin(wr)}{wr.base}/join?token={token}"
        return await self.users(wr, invite={"name": user.name, "link": link})

    async def home(self, wr: WebRequest) -> ApiResponse:
        return http.redirect(f"{wr.base}/crawls")

    def routes(self) -> list[WebRoute]:
        t = "/t/{tenant}"
        return [
            WebRoute("GET", f"{t}/", self.home, "tenant"),
            WebRoute("GET", f"{t}/signin", self.signin_form, "public"),
            WebRoute("POST", f"{t}/signin", self.signin, "public"),
            WebRoute("GET", f"{t}/join", self.join_form, "public"),
            WebRoute("POST", f"{t}/join", self.join, "public"),
            WebRoute("POST", f"{t}/logout", self.logout, "tenant"),
            WebRoute("GET", f"{t}/crawls", self.crawls, "tenant"),
            WebRoute("GET", f"{t}/crawls.json", self.crawls_json, "tenant"),
            WebRoute("GET", f"{t}/new", self.new_crawl_form, "tenant", "editor"),
            WebRoute("POST", f"{t}/new", self.submit_crawl, "tenant", "editor"),
            WebRoute("GET", f"{t}/usage", self.usage, "tenant"),
            WebRoute("POST", f"{t}/usage", self.budget_action, "tenant", "admin"),
            WebRoute("GET", f"{t}/keys", self.keys, "tenant", "admin"),
            WebRoute("POST", f"{t}/keys", self.key_action, "tenant", "admin"),
            WebRoute("GET", f"{t}/users", self.users, "tenant", "admin"),
            WebRoute("POST", f"{t}/users", self.user_action, "tenant", "admin"),
        ]


def _number(text: str, kind: type[int] | type[float]) -> object:
    """A form field as the JSON number the API wants; the text itself when it is not one
    (the API's problem then names the field)."""
    try:
        return kind(text)
    except ValueError:
        return text


def _cursor(wr: WebRequest) -> dict[str, str]:
    cursor = wr.request.query.get("cursor", "")
    return {"limit": "50", **({"cursor": cursor} if cursor else {})}


def crawl_form(
    app: WebApp,
    wr: WebRequest,
    values: dict[str, str],
    errors: dict[str, list[str]],
    general: list[str],
    status: int = 200,
) -> ApiResponse:
    """The new-crawl form with ``values``, and errors next to their fields."""
    return app.render(
        wr,
        "new_crawl.html",
        status,
        values=values,
        errors=errors,
        general=general,
        extra_fields=forms.extra_fields(),
        egresses=app.settings.egresses,
        idempotency_key=uuid.uuid4().hex,
    )
