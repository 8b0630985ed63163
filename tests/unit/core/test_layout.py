"""Names derived from tenant ids: every tenant's dispatch topic is its own, and every broker
accepts it (the Azure Storage-queue bus's ``<topic>-poison`` queue is the strictest rule)."""

from __future__ import annotations

import re

import pytest

from core.layout import MAX_TOPIC_CHARS, tenant_topic

STORAGE_QUEUE = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")


def test_a_plain_tenant_id_is_kept_as_it_is() -> None:
    assert tenant_topic("skycrawl-dispatch", "acme") == "skycrawl-dispatch-acme"


@pytest.mark.parametrize(
    "tenant_id",
    ["tn_" + "0123456789abcdef" * 2, "ACME", "a_b", "a--b", "x" * 64, "-", "Tenant_With_Caps_9"],
)
def test_any_tenant_id_gives_a_name_every_broker_accepts(tenant_id: str) -> None:
    topic = tenant_topic("skycrawl-dispatch", tenant_id)
    assert len(topic) <= MAX_TOPIC_CHARS
    assert STORAGE_QUEUE.fullmatch(f"{topic}-poison"), topic
    assert len(f"{topic}-dlq") <= 80  # an SQS queue name


def test_ids_that_look_alike_get_different_topics() -> None:
    names = {tenant_topic("d", t) for t in ("a_b", "a-b", "A-B", "a.b", "ab")}
    assert len(names) == 5
    long_a, long_b = "t" * 60 + "a", "t" * 60 + "b"
    assert tenant_topic("d", long_a) != tenant_topic("d", long_b)


def test_a_base_that_leaves_no_room_is_refused() -> None:
    with pytest.raises(ValueError, match="no room"):
        tenant_topic("b" * 40, "tn_1")
