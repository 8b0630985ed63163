"""Documents that are not HTML: PDF text with pypdf; other allowed bodies are kept as bytes.

A PDF's text is read page by page with pypdf's ``extract_text`` (pure Python, no external
tools), at most ``MAX_PDF_PAGES`` pages and ``MAX_TEXT_CHARS`` characters; it becomes the
page's ``text`` and ``markdown`` formats, the document's title its ``metadata.title``, and
``document`` says how many pages there are and whether the text was cut. An encrypted or
broken PDF gets ``document.error`` and no text. Bodies of other allowed types (images,
feeds, JSON) are archived in the WARC as received (within ``SKYCRAWL_MAX_BODY_BYTES``) and
have no text formats.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from core.output_basics import Format

log = logging.getLogger(__name__)

PDF_TYPES = frozenset({"application/pdf", "application/x-pdf"})
MAX_PDF_PAGES = 500
MAX_TEXT_CHARS = 2_000_000


def is_pdf(media_type: str | None, body: bytes) -> bool:
    return media_type in PDF_TYPES or (media_type is None and body[:5] == b"%PDF-")


def pdf_content(body: bytes, formats: tuple[str, ...]) -> dict[str, Any]:
    """The formats of a PDF (``text``/``markdown``/``metadata``) and its ``document`` facts."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    document: dict[str, Any] = {"media_type": "application/pdf"}
    out: dict[str, Any] = {"document": document}
    try:
        reader = PdfReader(io.BytesIO(body))
        if reader.is_encrypted:
            document["error"] = "encrypted"
            return out
        pages = len(reader.pages)
        document["pages"] = pages
        parts: list[str] = []
        size = 0
        for page in reader.pages[:MAX_PDF_PAGES]:
            text = (page.extract_text() or "").strip()
            parts.append(text)
            size += len(text)
            if size >= MAX_TEXT_CHARS:
                break
        text = "\n\n".join(p for p in parts if p)[:MAX_TEXT_CHARS]
        document["truncated"] = pages > len(parts) or size > MAX_TEXT_CHARS
        title = reader.metadata.title if reader.metadata is not None else None
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        document["error"] = f"unreadable PDF: {type(exc).__name__}"
        log.debug("PDF unreadable: %s", exc)
        return out
    if Format.text in formats:
        out["text"] = text
    if Format.markdown in formats:
        out["markdown"] = text
    if Format.metadata in formats:
        out["metadata"] = {"title": str(title) if title else None}
    return out
