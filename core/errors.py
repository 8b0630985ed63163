"""One error tree for skycrawl, named for what the caller does next.

::

    SkycrawlError
    ├── InvalidRequest        bad input: answer 4xx, store nothing
    │   └── UnsafeUrl         the URL targets an address the SSRF guard refuses
    ├── NotFound              no such thing (or not yours): answer 404
    ├── Unauthorized          missing or wrong key: answer 401
    ├── Forbidden             a valid key that may not do this: answer 403
    ├── QuotaExceeded         a tenant limit: answer 429 with Retry-After
    ├── BudgetReached         the tenant's monthly budget is spent: answer 402
    ├── Conflict              a compare-and-set lost a race: reload and decide again
    ├── Retryable             a transient fault: try again later (the message stays leased)
    ├── ContainerGone         the container is not there any more: re-dispatch its work
    └── ConfigurationError    settings are missing or wrong: exit with a message

Adapters translate SDK errors at their edge with ``raise ... from exc``.
"""

from __future__ import annotations


class SkycrawlError(Exception):
    """Base of every error skycrawl raises on purpose."""


class InvalidRequest(SkycrawlError):
    """The input is wrong; nothing was stored."""

    def __init__(self, detail: str, *, errors: list[dict[str, object]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class UnsafeUrl(InvalidRequest):
    """The URL (or an address it resolves to) is not one a crawler may fetch."""


class NotFound(SkycrawlError):
    """No such record, or one the caller may not see."""


class Unauthorized(SkycrawlError):
    """Missing, malformed or wrong credentials."""


class Forbidden(SkycrawlError):
    """Valid credentials that do not allow this operation."""


class QuotaExceeded(SkycrawlError):
    """A per-tenant limit was reached; try again after ``retry_after`` seconds."""

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class BudgetReached(SkycrawlError):
    """The tenant's monthly budget is spent; nothing new runs until it is raised."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Conflict(SkycrawlError):
    """A compare-and-set found a different version (or an existing key)."""


class Retryable(SkycrawlError):
    """A transient fault: the operation may succeed if repeated later."""


class ContainerGone(SkycrawlError):
    """The container no longer exists; its work must be re-dispatched."""


class ConfigurationError(SkycrawlError):
    """Settings are missing or inconsistent."""
