"""Where a crawl's results live in the BlobStore, and names derived from a container GUID.

::

    tenants/{tenant}/crawls/{crawl}/manifest/{seq:08d}.jsonl   page records, one JSON a line
    tenants/{tenant}/crawls/{crawl}/warc/{seq:08d}.warc.gz     the same pages as WARC records
    tenants/{tenant}/crawls/{crawl}/checkpoint.json            frontier + counters to resume
    tenants/{tenant}/crawls/{crawl}/content/{seq:08d}.jsonl    the formats asked for, one JSON
                                                               a line, line n = manifest line n
    tenants/{tenant}/crawls/{crawl}/items/{seq:08d}.jsonl      extracted items (the dataset):
                                                               one JSON object a line, with
                                                               ``_url`` (the page it came from)
    tenants/{tenant}/latest/{seeds hash}.json                  last completed crawl of those
                                                               seeds (``recrawl_of: latest``)

Chunk ``seq`` numbers are dense from 0; a checkpoint names the next ``seq`` so a resumed crawl
continues the sequence instead of overwriting it. Concatenating the chunks in order gives a
valid JSONL file and a valid ``.warc.gz`` (gzip members concatenate).
"""

from __future__ import annotations

import hashlib
import re

from core.errors import InvalidRequest

_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_tenant_id(tenant_id: str) -> str:
    """``tenant_id`` if it is 1-64 letters, digits, ``_`` or ``-`` starting with a letter or
    digit (what every backend accepts in a resource name); ``InvalidRequest`` otherwise."""
    if not _TENANT_ID.fullmatch(tenant_id):
        raise InvalidRequest(f"invalid tenant id {tenant_id!r}: 1-64 letters, digits, '_' or '-'")
    return tenant_id


def tenant_store_name(prefix: str, tenant_id: str, *, max_chars: int, separator: str) -> str:
    """The name of a tenant's own store (dedicated tenant data): ``prefix``, the tenant id
    lowercased with every run of other characters than letters and digits made one
    ``separator``, shortened to fit ``max_chars``, then ``separator`` and 8 hex of its SHA-256
    (so that shortened or case-folded ids never share a store)."""
    check_tenant_id(tenant_id)
    digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:8]
    slug = _NOT_SLUG.sub(separator, tenant_id.lower()).strip(separator)
    room = max_chars - len(prefix) - len(digest) - len(separator)
    if room < 1:
        raise ValueError(f"store prefix {prefix!r} leaves no room for tenant names")
    part = slug[:room].rstrip(separator)
    return f"{prefix}{part}{separator}{digest}" if part else f"{prefix}{digest}"


def crawl_prefix(tenant_id: str, crawl_id: str) -> str:
    return f"tenants/{tenant_id}/crawls/{crawl_id}/"


def tenant_prefix(tenant_id: str) -> str:
    return f"tenants/{tenant_id}/"


def manifest_key(tenant_id: str, crawl_id: str, seq: int) -> str:
    return f"{crawl_prefix(tenant_id, crawl_id)}manifest/{seq:08d}.jsonl"


def warc_key(tenant_id: str, crawl_id: str, seq: int) -> str:
    return f"{crawl_prefix(tenant_id, crawl_id)}warc/{seq:08d}.warc.gz"


def content_key(tenant_id: str, crawl_id: str, seq: int) -> str:
    """Per-page formats of manifest chunk ``seq`` (written before it; same line order)."""
    return f"{crawl_prefix(tenant_id, crawl_id)}content/{seq:08d}.jsonl"


def items_key(tenant_id: str, crawl_id: str, seq: int) -> str:
    """Items extracted from the pages of manifest chunk ``seq`` (written before it)."""
    return f"{crawl_prefix(tenant_id, crawl_id)}items/{seq:08d}.jsonl"


def screenshot_name(url: str, image_format: str) -> str:
    """A rendered page's screenshot, relative to the crawl (the page record's ``screenshot``):
    one per URL, so a resumed crawl writes the same name again."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]
    return f"screenshots/{digest}.{image_format}"


def screenshot_key(tenant_id: str, crawl_id: str, name: str) -> str:
    return f"{crawl_prefix(tenant_id, crawl_id)}{name}"


def checkpoint_key(tenant_id: str, crawl_id: str) -> str:
    return f"{crawl_prefix(tenant_id, crawl_id)}checkpoint.json"


def request_headers_key(tenant_id: str, crawl_id: str) -> str:
    """The crawl's sensitive request headers, kept out of messages (``core.sealed_headers``)."""
    return f"{crawl_prefix(tenant_id, crawl_id)}request-headers.json"


def recrawled_key(tenant_id: str, crawl_id: str) -> str:
    """Which earlier crawl a crawl with ``recrawl_of: "latest"`` re-crawled, as its engine
    resolved it (``{"crawl_id": ...}``): what its change counts compare against."""
    return f"{crawl_prefix(tenant_id, crawl_id)}recrawled.json"


def latest_crawl_key(tenant_id: str, seeds_key: str) -> str:
    """Pointer to the tenant's last completed crawl of one set of seeds (conditional re-crawl)."""
    return f"{tenant_prefix(tenant_id)}latest/{seeds_key}.json"


def subscription_name(container_id: str) -> str:
    """The dispatch-topic subscription owned by one container."""
    return f"container-{container_id}"


#: Longest dispatch-topic name derived here: with ``-poison`` (the dead-letter queue of the
#: Azure Storage-queue bus) it stays a Storage queue name (63), the strictest of the brokers'
#: rules (SNS 256, Service Bus 260, Pub/Sub 255; SQS 80 with ``-dlq``).
MAX_TOPIC_CHARS = 56
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def tenant_topic(base: str, tenant_id: str) -> str:
    """The dispatch topic of one tenant: ``<base>-<tenant>`` when the tenant id is lowercase
    letters, digits and single hyphens and the whole fits ``MAX_TOPIC_CHARS``; otherwise
    ``<base>-<slug of the tenant, shortened>-<16 hex of its SHA-256>`` (``tn_1f…`` becomes
    ``<base>-tn-1f…-<hash>``), so that every broker accepts the name and no two tenants share
    a topic.

    The provisioner creates it with the tenant, the conductor publishes the tenant's work to
    it, the tenant's containers subscribe to it (and to nothing else), teardown removes it."""
    slug = _NOT_SLUG.sub("-", tenant_id.lower()).strip("-")
    name = f"{base}-{slug}"
    if slug == tenant_id and len(name) <= MAX_TOPIC_CHARS:
        return name
    digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:16]
    room = MAX_TOPIC_CHARS - len(base) - len(digest) - 2
    if room < 0:
        raise ValueError(f"dispatch topic base {base!r} leaves no room for tenant names")
    part = slug[:room].strip("-")
    return f"{base}-{part}-{digest}" if part else f"{base}-{digest}"
