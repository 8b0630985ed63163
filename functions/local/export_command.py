"""``skycrawl export CRAWL_ID``: write a finished (or running) crawl's results again.

The crawl must be one the CLI's tenant submitted (``skycrawl crawl`` and ``demo`` submit as
the tenant in ``cli-tenant.json``). Writes ``pages.jsonl`` and ``crawl.warc.gz`` to ``--out``
(and ``items.jsonl``, and ``screenshots/`` of rendered pages, when the crawl has them), the
same files ``crawl`` writes, through the same API export routes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from functions.local.crawl_command import export_all
from functions.local.session import Session


def add_export_command(sub: argparse._SubParsersAction[Any]) -> None:
    export = sub.add_parser("export", help="write a crawl's pages.jsonl + WARC again")
    export.add_argument("crawl_id", metavar="CRAWL_ID", help="the crawl's id (cr_…)")
    export.add_argument(
        "--out",
        type=Path,
        default=Path("skycrawl-out"),
        help="output directory (default: skycrawl-out)",
    )


async def export_crawl(s: Session, crawl_id: str, out_dir: Path) -> list[str]:
    """Export ``crawl_id`` into ``out_dir``; the names of the files written."""
    _, key = await s.tenant_key()
    await s.api(key).get_crawl(crawl_id)  # 404 (exit 2) before anything is written
    return await export_all(s, key, [crawl_id], out_dir)
