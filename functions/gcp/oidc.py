"""Who may call the internal endpoints (``/internal/timers``, ``/internal/housekeeping``).

Cloud Tasks and Cloud Scheduler call them with ``Authorization: Bearer <Google ID token>``,
an OIDC token minted for a service account with an audience we choose. ``authorize`` checks
the token with an injectable ``TokenVerifier`` -- in production ``GoogleTokenVerifier``
(``google.oauth2.id_token.verify_oauth2_token``: Google's signature, expiry, issuer and
audience) -- then requires a verified ``email`` among the allowed callers. Anything else is
``Unauthorized`` (no or bad token) or ``Forbidden`` (a valid token of someone else).

Settings: ``SKYCRAWL_GCP_OIDC_AUDIENCE`` (default ``SKYCRAWL_GCP_TIMER_URL``) and
``SKYCRAWL_GCP_INTERNAL_CALLERS`` (default ``SKYCRAWL_GCP_TIMER_SERVICE_ACCOUNT``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from core.errors import ConfigurationError, Forbidden, Unauthorized
from core.tenancy import bearer_token


class TokenVerifier(Protocol):
    def verify(self, token: str, *, audience: str) -> Mapping[str, Any]:
        """The token's claims; ``ValueError`` if it is not valid for ``audience``."""
        ...


class GoogleTokenVerifier:
    """Verifies Google-signed ID tokens (fetches Google's public certificates over HTTPS)."""

    @functools.cached_property
    def _request(self) -> Any:
        """The HTTP transport, made on the first token (``requests``: not on a cold start)."""
        import google.auth.transport.requests

        return google.auth.transport.requests.Request()

    def verify(self, token: str, *, audience: str) -> Mapping[str, Any]:
        from google.oauth2 import id_token

        claims: Mapping[str, Any] = id_token.verify_oauth2_token(  # type: ignore[no-untyped-call]
            token, self._request, audience=audience
        )
        return claims


def authorize(
    authorization_header: str | None,
    *,
    verifier: TokenVerifier,
    audience: str,
    callers: Sequence[str],
) -> str:
    """The caller's email if the header carries a valid token of an allowed caller."""
    if not audience or not callers:
        raise ConfigurationError(
            "internal endpoints need SKYCRAWL_GCP_OIDC_AUDIENCE (or _TIMER_URL) and "
            "SKYCRAWL_GCP_INTERNAL_CALLERS (or _TIMER_SERVICE_ACCOUNT)"
        )
    token = bearer_token(authorization_header)
    try:
        claims = verifier.verify(token, audience=audience)
    except ValueError as exc:
        raise Unauthorized(f"invalid identity token: {exc}") from exc
    email = str(claims.get("email") or "")
    if not email or claims.get("email_verified") is False:
        raise Unauthorized("identity token without a verified email")
    if email not in callers:
        raise Forbidden(f"{email} may not call internal endpoints")
    return email
