"""Where a crawl's results live in the BlobStore, and names derived from a container GUID.

::

    tenants/{tenant}/crawls/{crawl}/manifest/{seq:08d}.jsonl   page records, one JSON a line
    tenants/{tenant}/crawls/{crawl}/warc/{seq:08d}.warc.gz     the same pages as WARC records
    tenants/{tenant}/crawls/{crawl}/checkpoint.json            frontier + counters to resume
    tenants/{tenant}/latest/{seeds hash}.json                  last completed crawl of those
                                                               seeds (``recrawl_of: latest``)

Chunk ``seq`` numbers are dense from 0; a checkpoint names the next ``seq`` so a resumed crawl
continues the sequence instead of overwriting it. Concatenating the chunks in order gives a
valid JSONL file and a valid ``.warc.gz`` (gzip members concatenate).
"""

from __future__ import annotations


def crawl_prefix(tenant_id: str, crawl_id: str) -> str:
    return f"tenants/{tenant_id}/crawls/{crawl_id}/"


def tenant_prefix(tenant_id: str) -> str:
    return f"tenants/{tenant_id}/"


def manifest_key(tenant_id: str, crawl_id: str, seq: int) -> str:
    return f"{crawl_prefix(tenant_id, crawl_id)}manifest/{seq:08d}.jsonl"


def warc_key(tenant_id: str, crawl_id: str, seq: int) -> str:
    return f"{crawl_prefix(tenant_id, crawl_id)}warc/{seq:08d}.warc.gz"


def checkpoint_key(tenant_id: str, crawl_id: str) -> str:
    return f"{crawl_prefix(tenant_id, crawl_id)}checkpoint.json"


def latest_crawl_key(tenant_id: str, seeds_key: str) -> str:
    """Pointer to the tenant's last completed crawl of one set of seeds (conditional re-crawl)."""
    return f"{tenant_prefix(tenant_id)}latest/{seeds_key}.json"


def subscription_name(container_id: str) -> str:
    """The dispatch-topic subscription owned by one container."""
    return f"container-{container_id}"
