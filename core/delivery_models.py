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
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import Field, field_validator
from pydantic.config import JsonDict, JsonValue

from core.models import JSON_NUMBER, CrawlSpec, Frozen, OutboxEntry
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
    return (
        webhook_secrets_table(records),
        webhook_deliveries_table(records),
        Table(records.state, "schedules", Schedule),
    )


# --------------------------------------------------------------------------- schedules


#: The plain form of a cron expression (numbers or ``*`` in each field), for the OpenAPI
#: description; any expression croniter reads is accepted.
_PLAIN_CRON = (
    r"^(\*|[0-5]?[0-9]) (\*|[01]?[0-9]|2[0-3]) (\*|[1-9]|1[0-9]|2[0-8]) "
    r"(\*|[1-9]|1[0-2]) (\*|[0-6])$"
)


def _zone_enum(schema: JsonDict) -> None:
    """Every IANA zone as the OpenAPI enum, read (from the zone files) only when the schema
    is asked for: listing them costs milliseconds on every cold start otherwise."""
    schema["enum"] = list[JsonValue](sorted(available_timezones()))


class ScheduleCreate(Frozen):
    """Body of ``POST /v1/schedules``: when (cron in a time zone) and what (a crawl request)."""

    cron: Annotated[
        str,
        Field(
            min_length=9,
            max_length=100,
            description="Five-field cron expression (minute hour day month weekday); ranges, "
            "lists and steps are accepted too. The pattern shows the plain form.",
            examples=["0 3 * * *"],
            json_schema_extra={"pattern": _PLAIN_CRON},
        ),
    ]
    timezone: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            description="IANA time zone the expression is read in, e.g. Europe/Berlin.",
            examples=["UTC"],
            json_schema_extra=_zone_enum,
        ),
    ] = "UTC"
    crawl: CrawlSpec

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, cron: str) -> str:
        from croniter import croniter

        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise ValueError(f"{cron!r} is not a five-field cron expression")
        return cron

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{zone!r} is not an IANA time zone") from None
        return zone


class Schedule(Frozen):
    """A recurring crawl. Table ``schedules``, partition = tenant, key = id."""

    id: str
    tenant_id: str
    cron: str
    timezone: str
    crawl: CrawlSpec
    state: Literal["active", "paused"] = "active"
    #: Bumped by pause and resume: a fire message of another generation is stale.
    generation: int = 0
    runs: int = 0
    last_crawl_id: str | None = None
    created_at: datetime
    outbox: tuple[OutboxEntry, ...] = ()
    #: Occurrences that started no run (the tenant's budget was spent), the last one's
    #: time and why.
    skipped: int = 0
    last_skipped_at: datetime | None = None
    last_skip_reason: str | None = None


def schedules_table(records: Records) -> Table[Schedule]:
    return Table(records.state, "schedules", Schedule)
