"""HTML responses with the web app's security headers, cookies, and form bodies.

Every HTML page carries a strict Content-Security-Policy (``default-src 'self'``, no inline
script or style — the templates have neither — no ``<object>``, ``<base>`` or foreign form
targets, and ``frame-ancestors 'none'`` with ``X-Frame-Options: DENY``), ``Referrer-Policy:
same-origin`` (invite tokens are in URLs: no other site sees them; ``no-referrer`` would make
browsers send ``Origin: null`` on our own form posts), ``nosniff`` and a same-origin opener
policy. The
sandboxed page preview has its own, stricter policy (``core.webapp.preview``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from core.api.http import ApiRequest, ApiResponse

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}
COOKIE = "skycrawl_session"
FORM = "application/x-www-form-urlencoded"


def html(status: int, body: str, headers: Mapping[str, str] | None = None) -> ApiResponse:
    return ApiResponse(
        status,
        {"content-type": "text/html; charset=utf-8", **SECURITY_HEADERS, **(headers or {})},
        body.encode(),
    )


def redirect(location: str, headers: Mapping[str, str] | None = None) -> ApiResponse:
    """303 See Other: after a POST, the browser GETs ``location``."""
    return ApiResponse(303, {**SECURITY_HEADERS, "location": location, **(headers or {})})


def form(request: ApiRequest) -> dict[str, list[str]]:
    """The fields of an ``application/x-www-form-urlencoded`` body (empty otherwise)."""
    content_type = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
    if content_type != FORM:
        return {}
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return parse_qs(text, keep_blank_values=True, max_num_fields=200)


def field(fields: Mapping[str, list[str]], name: str) -> str:
    values = fields.get(name)
    return values[0] if values else ""


def cookie(request: ApiRequest, name: str = COOKIE) -> str | None:
    raw = request.header("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header is no session, not an error
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def is_loopback_http(request: ApiRequest, public_base_url: str) -> bool:
    """True for plain http on a loopback host, where a ``Secure`` cookie would be dropped."""
    if public_base_url.startswith("https://"):
        return False
    host = urlsplit(f"//{request.header('host') or ''}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def session_cookie(value: str, *, path: str, max_age: int, secure: bool) -> str:
    """``Set-Cookie`` for a session: HttpOnly, SameSite=Strict, scoped to one tenant's path."""
    parts = [f"{COOKIE}={value}", f"Path={path}", "HttpOnly", "SameSite=Strict"]
    parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def same_origin(request: ApiRequest) -> bool:
    """False when the browser says the request came from another site: ``Sec-Fetch-Site``
    where the browser sends it, else ``Origin`` (``null`` — a sandboxed frame, for one — is
    refused). Requests with neither (curl, old browsers) are not refused here: the CSRF token
    is what protects them."""
    site = request.header("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.header("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    return urlsplit(origin).netloc == (request.header("host") or "")
