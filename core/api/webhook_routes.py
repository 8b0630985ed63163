"""Tenant routes for webhook signing secrets (``core.webhooks``).

``POST /v1/webhooks/secret`` makes the tenant's first secret, or rotates it: the answer shows
the new secret once; the one it replaces keeps signing for ``grace_s`` (a retire message is
sent to the conductor, which waits it out with relative timers). ``GET`` shows the ids and
dates of the secrets that sign deliveries now — never a secret. ``DELETE`` revokes them all at
once (a leaked secret): deliveries go out unsigned until a new one is made.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from core.api.http import ApiResponse
from core.api.routing import JSON_BODY_ERRORS, Context, Reply, Route
from core.api.schemas import Out
from core.api.validation import parse_json_body
from core.clock import Clock
from core.delivery_models import WebhookSecretRotate, WebhookSecrets
from core.errors import NotFound
from core.messages import WebhookSecretRetire, encode
from core.ports.message_bus import MessageBus
from core.records import Records
from core.webhooks import SECRETS_KEY, revoke_secrets, rotate_secret, secrets_table


class WebhookSecretInfo(Out):
    id: str
    created_at: datetime


class WebhookSecretView(Out):
    """The secrets that sign deliveries now: the current one, and any still in their grace."""

    current: WebhookSecretInfo
    retiring: list[WebhookSecretInfo]

    @classmethod
    def of(cls, record: WebhookSecrets) -> WebhookSecretView:
        def info(s: object) -> WebhookSecretInfo:
            return WebhookSecretInfo.model_validate(s, from_attributes=True)

        return cls(current=info(record.current), retiring=[info(s) for s in record.retiring])


class WebhookSecretCreated(WebhookSecretView):
    secret: str = Field(description="The new signing secret. Shown once.")
    retiring_for_s: int = Field(description="How long the replaced secret still signs.")


class WebhookRoutes:
    def __init__(self, *, records: Records, bus: MessageBus, clock: Clock, inbox: str) -> None:
        self._records = records
        self._bus = bus
        self._clock = clock
        self._inbox = inbox

    async def rotate_webhook_secret(self, ctx: Context) -> ApiResponse:
        body = parse_json_body(ctx.request, WebhookSecretRotate)
        tenant_id = ctx.tenant_id
        record, retiring = await rotate_secret(
            self._records, tenant_id, self._clock.now(), keep_old=body.grace_s > 0
        )
        if retiring is not None:
            retire = WebhookSecretRetire(
                tenant_id=tenant_id, secret_id=retiring.id, remaining_s=float(body.grace_s)
            )
            await self._bus.send(queue=self._inbox, message=encode(retire))
        view = WebhookSecretView.of(record)
        created = WebhookSecretCreated(
            current=view.current,
            retiring=view.retiring,
            secret=record.current.secret,
            retiring_for_s=body.grace_s if retiring is not None else 0,
        )
        return ApiResponse.json(201, created)

    async def get_webhook_secret(self, ctx: Context) -> ApiResponse:
        found = await secrets_table(self._records).get(ctx.tenant_id, SECRETS_KEY)
        if found is None:
            raise NotFound("no webhook secret yet: POST /v1/webhooks/secret makes one")
        return ApiResponse.json(200, WebhookSecretView.of(found.value))

    async def revoke_webhook_secrets(self, ctx: Context) -> ApiResponse:
        if not await revoke_secrets(self._records, ctx.tenant_id):
            raise NotFound("no webhook secret to revoke")
        return ApiResponse.empty(204)

    def routes(self) -> list[Route]:
        return [
            Route(
                "POST",
                "/v1/webhooks/secret",
                self.rotate_webhook_secret,
                "Make or rotate the webhook signing secret",
                body=WebhookSecretRotate,
                replies=(
                    Reply(201, "The new secret, shown once.", WebhookSecretCreated),
                    *JSON_BODY_ERRORS,
                ),
            ),
            Route(
                "GET",
                "/v1/webhooks/secret",
                self.get_webhook_secret,
                "The webhook signing secrets in use (ids only)",
                replies=(
                    Reply(200, "Ids and dates.", WebhookSecretView),
                    Reply(404, "No secret yet."),
                ),
            ),
            Route(
                "DELETE",
                "/v1/webhooks/secret",
                self.revoke_webhook_secrets,
                "Revoke every webhook signing secret at once (deliveries go unsigned)",
                replies=(Reply(204, "Revoked."), Reply(404, "No secret to revoke.")),
            ),
        ]
