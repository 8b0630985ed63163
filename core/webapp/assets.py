"""Static assets served by the function itself, under content-hashed names.

``app.css`` is served as ``/assets/app.<sha256[:12]>.css``: the name changes whenever the
content does, so responses carry ``Cache-Control: public, max-age=31536000, immutable`` and a
deployment never serves a stale script with a new page. Files are read once, when the web app
is built (not at import). No CDN, nothing fetched from anywhere else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from core.api.http import ApiResponse

STATIC_DIR = Path(__file__).parent / "static"
PREFIX = "/assets/"
_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Asset:
    name: str  # app.css
    hashed: str  # app.0123456789ab.css
    content_type: str
    body: bytes


class Assets:
    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self._by_name: dict[str, Asset] = {}
        self._by_hashed: dict[str, Asset] = {}
        for path in sorted(directory.iterdir()):
            if path.suffix not in _TYPES:
                continue
            body = path.read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:12]
            asset = Asset(
                path.name, f"{path.stem}.{digest}{path.suffix}", _TYPES[path.suffix], body
            )
            self._by_name[asset.name] = asset
            self._by_hashed[asset.hashed] = asset

    def url(self, name: str) -> str:
        """The hashed URL of ``name`` (``KeyError`` for an unknown asset: a template bug)."""
        return PREFIX + self._by_name[name].hashed

    def response(self, path: str) -> ApiResponse | None:
        asset = self._by_hashed.get(path[len(PREFIX) :]) if path.startswith(PREFIX) else None
        if asset is None:
            return None
        headers = {
            "content-type": asset.content_type,
            "cache-control": "public, max-age=31536000, immutable",
            "x-content-type-options": "nosniff",
            "cross-origin-resource-policy": "same-origin",
        }
        return ApiResponse(200, headers, asset.body)
