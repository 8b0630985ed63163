"""Records of what a tenant gets delivered: webhook secrets and delivery attempts (issue 12).

=================  ==========  =========  ==================================================
table              partition   key        holds
=================  ==========  =========  ==================================================
webhook_secrets    tenant id   "secrets"  ``WebhookSecrets``: the signing secret, and those
                                          still valid while a rotation's grace runs
webhook_deliveries tenant id   crawl id   ``WebhookDeliveries``: every attempt and its result
=================  ==========  =========  ==================================================

The secrets are kept in plaintext in the tenant's partition (an HMAC needs the secret itself);
the API shows a secret once, when it is made.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from core.models import JSON_NUMBER, Frozen, OutboxEntry
from core.records import Records, Table


class WebhookSecret(Frozen):
    id: str  # "whk_<8 hex>", shown with the secret and in listings
    secret: str  # "whsec_<43 url-safe characters>"
    created_at: datetime


class WebhookSecrets(Frozen):
    tenant_id: str
    current: WebhookSecret
    #: Earlier secrets in their grace period: deliveries are signed with these too.
    retiring: tuple[WebhookSecret, ...] = ()
    outbox: tuple[OutboxEntry, ...] = ()


class WebhookAttempt(Frozen):
    """One POST of a crawl's webhook and what came of it."""

    attempt: int
    sent_at: datetime
    status: int | None = None  # the receiver's HTTP status; None when none came back
    error: str | None = None
    elapsed_ms: float = 0.0
    signed: bool = False  # False while the tenant has made no webhook secret
    retry_in_s: float | None = None  # the next attempt is this far after this one


class WebhookDeliveries(Frozen):
    tenant_id: str
    crawl_id: str
    state: Literal["pending", "delivered", "failed"] = "pending"
    attempts: tuple[WebhookAttempt, ...] = ()
    outbox: tuple[OutboxEntry, ...] = ()


class WebhookSecretRotate(Frozen):
    """Body of ``POST /v1/webhooks/secret``."""

    grace_s: Annotated[
        int,
        Field(
            ge=0,
            le=7 * 86400,
            description="How long the secret being replaced still signs deliveries (24 h).",
        ),
        JSON_NUMBER,
    ] = 86400


def webhook_secrets_table(records: Records) -> Table[WebhookSecrets]:
    return Table(records.state, "webhook_secrets", WebhookSecrets)


def webhook_deliveries_table(records: Records) -> Table[WebhookDeliveries]:
    return Table(records.state, "webhook_deliveries", WebhookDeliveries)


def delivery_tables(records: Records) -> tuple[Table[Any], ...]:
    """The tables of this module, partitioned by tenant (emptied at teardown)."""
    return (webhook_secrets_table(records), webhook_deliveries_table(records))
