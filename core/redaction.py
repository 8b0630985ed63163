"""Credentials in URLs (``https://user:pass@host/``) are never shown or logged.

A tenant may put credentials in a seed (the fetcher sends them as HTTP Basic auth); the crawl
request keeps them, because the engine needs them, but everything that shows a URL —
page records, the JSONL and WARC exports, the web app, log lines — shows ``https://***@host/``
instead. ``Authorization`` request headers are masked in WARC ``request`` records too.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
#: a URL with userinfo in running text: scheme://userinfo@ (no '/', whitespace or '@' inside)
_USERINFO_IN_TEXT = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@")


def redact_url(url: str) -> str:
    """``url`` with its userinfo (user and password) replaced by ``***``; unchanged without."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))


def redact_text(text: str) -> str:
    """Every ``scheme://userinfo@`` in ``text`` masked."""
    return _USERINFO_IN_TEXT.sub(rf"\1{MASK}@", text)


class RedactingFilter(logging.Filter):
    """Masks URL credentials in a record's final message (its arguments merged in)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact_text(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def install_log_redaction(*handlers: logging.Handler) -> None:
    """Add a ``RedactingFilter`` to ``handlers`` (default: every handler of the root logger)."""
    for handler in handlers or tuple(logging.getLogger().handlers):
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
