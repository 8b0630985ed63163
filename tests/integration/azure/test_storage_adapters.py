"""Storage-account adapters beyond the contract suites, against Azurite: the Storage queue
bus's envelope, names and poison queue, Table keys and chunking, blob details."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from azure.data.tables.aio import TableClient
from azure.storage.blob.aio import ContainerClient
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from adapters.azure.blob_store import BlobStorageBlobStore
from adapters.azure.message_bus_storage_queue import StorageQueueMessageBus
from adapters.azure.state_store import TableStateStore, escape_key, unescape_key
from adapters.azure.storage_queue_wire import (
    MAX_MESSAGE_BYTES,
    decode_envelope,
    encode_envelope,
    queue_name,
    split_delay,
    subscription_queue,
)
from core.errors import Conflict, InvalidRequest
from core.ports import OutboundMessage, Queue, Subscription, dead_letter_queue


@pytest.fixture
async def bus(connection_string: str) -> AsyncIterator[StorageQueueMessageBus]:
    bus = StorageQueueMessageBus(QueueServiceClient.from_connection_string(connection_string))
    yield bus
    await bus.close()


def name(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- names, envelope


def test_names_follow_storage_rules() -> None:
    assert queue_name("skycrawl-inbox") == "skycrawl-inbox"
    assert queue_name(dead_letter_queue("skycrawl-inbox")) == "skycrawl-inbox-poison"
    for bad in ("Upper", "a--b", "-a", "ab", "x" * 64, "a_b"):
        with pytest.raises(InvalidRequest):
            queue_name(bad)
    guid = str(uuid.uuid4())
    physical = subscription_queue("skycrawl-dispatch", f"container-{guid}")
    assert physical.endswith(guid)
    queue_name(physical)  # valid
    assert physical != subscription_queue("other-topic", f"container-{guid}")
    queue_name(subscription_queue("t", "Weird__Name!!" * 10))


def test_envelope_round_trip_and_foreign_text() -> None:
    text = encode_envelope("id-1", b"\x00\xffbody", {"container_id": "g", "ü": "ß"})
    assert decode_envelope(text) == decode_envelope(text.encode())
    envelope = decode_envelope(text)
    assert (envelope.message_id, envelope.body) == ("id-1", b"\x00\xffbody")
    assert envelope.attributes == {"container_id": "g", "ü": "ß"}
    foreign = decode_envelope("plain text", fallback_id="m-1")
    assert (foreign.message_id, foreign.body, foreign.attributes) == ("m-1", b"plain text", {})


def test_delays_round_up_or_wait_under_a_second() -> None:
    assert split_delay(0) == (0.0, 0)
    assert split_delay(0.4) == (0.4, 0)
    assert split_delay(1.01) == (0.0, 2)
    with pytest.raises(InvalidRequest):
        split_delay(7 * 86400 + 1)


# --------------------------------------------------------------------------- bus on Azurite


async def test_the_largest_message_fits(bus: StorageQueueMessageBus) -> None:
    queue = name("big")
    await bus.ensure_queue(name=queue)
    attributes = {"container_id": str(uuid.uuid4()), "type": "crawl.run"}
    size = MAX_MESSAGE_BYTES - sum(len(k) + len(v) for k, v in attributes.items())
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    await bus.send(queue=queue, message=OutboundMessage(body=body, attributes=attributes))
    lease = (await bus.receive(source=Queue(queue)))[0]
    assert lease.body == body


async def test_poison_queue_is_shared_with_the_functions_host(
    bus: StorageQueueMessageBus, connection_string: str
) -> None:
    queue = name("inbox")
    await bus.ensure_queue(name=queue)
    host_poison = QueueClient.from_connection_string(connection_string, f"{queue}-poison")
    async with host_poison:  # what the Functions host does after maxDequeueCount
        await host_poison.send_message(encode_envelope("m-1", b"poison", {"type": "x"}))
    dead = (await bus.receive(source=Queue(dead_letter_queue(queue))))[0]
    assert (dead.message_id, dead.body) == ("m-1", b"poison")
    assert dead.attributes["dead_letter_reason"]
    with pytest.raises(InvalidRequest):
        await bus.dead_letter(lease=dead, reason="again")
    with pytest.raises(InvalidRequest):
        await bus.ensure_queue(name=f"{queue}-dlq")


async def test_changing_a_filter_takes_effect_at_once(bus: StorageQueueMessageBus) -> None:
    topic, sub = name("dispatch"), name("container")
    await bus.ensure_topic(topic=topic)
    await bus.ensure_subscription(topic=topic, name=sub, filter={"container_id": "a"})
    await bus.ensure_subscription(topic=topic, name=sub, filter={"container_id": "b"})
    await bus.publish(topic=topic, message=OutboundMessage(b"for-a", {"container_id": "a"}))
    await bus.publish(topic=topic, message=OutboundMessage(b"for-b", {"container_id": "b"}))
    leases = await bus.receive(source=Subscription(topic, sub))
    assert [lease.body for lease in leases] == [b"for-b"]
    await bus.dead_letter(lease=leases[0], reason="not mine")
    dead = (await bus.receive(source=Queue(dead_letter_queue(topic))))[0]
    assert dead.attributes["dead_letter_source"] == f"{topic}/{sub}"


# --------------------------------------------------------------------------- tables


def test_forbidden_key_characters_are_escaped_reversibly() -> None:
    for key in ["a/b#c?d", "100%|x", "tab\there", "plain-key_1.2", "ünï"]:
        escaped = escape_key(key)
        assert not any(c in escaped for c in "/\\#?|\t")
        assert unescape_key(escaped) == key


@pytest.fixture
async def tables(connection_string: str) -> AsyncIterator[tuple[TableStateStore, TableStateStore]]:
    table = f"t{uuid.uuid4().hex[:12]}"
    stores = tuple(
        TableStateStore(TableClient.from_connection_string(connection_string, table_name=table))
        for _ in range(2)
    )
    yield stores[0], stores[1]
    for store in stores:
        await store.close()


async def test_odd_keys_and_big_items_round_trip(
    tables: tuple[TableStateStore, TableStateStore],
) -> None:
    store, _ = tables
    data = {"blob": "y" * 100_000, "n": 1}
    item = await store.create(table="sessions", partition="tn/1#x", key="key?/\\%|", data=data)
    assert await store.get(table="sessions", partition="tn/1#x", key="key?/\\%|") == item
    assert [i.key for i in await store.scan(table="sessions")] == ["key?/\\%|"]
    assert [i.partition for i in await store.scan(table="sessions")] == ["tn/1#x"]
    with pytest.raises(InvalidRequest):
        await store.create(table="t", partition="p", key="huge", data={"x": "z" * 460_000})


async def test_a_stale_item_from_another_instance_is_a_conflict(
    tables: tuple[TableStateStore, TableStateStore],
) -> None:
    one, other = tables
    v1 = await one.create(table="crawls", partition="p", key="k", data={"n": 1})
    seen = await other.get(table="crawls", partition="p", key="k")
    assert seen == v1
    await one.replace(item=v1, data={"n": 2})
    with pytest.raises(Conflict):
        await other.replace(item=v1, data={"n": 3})
    with pytest.raises(Conflict):
        await other.delete(item=v1)
    fresh = await other.get(table="crawls", partition="p", key="k")
    assert fresh is not None
    await other.delete(item=fresh)
    with pytest.raises(Conflict):
        await one.delete(item=fresh)


# --------------------------------------------------------------------------- blobs


async def test_blob_content_type_and_missing_container(connection_string: str) -> None:
    container = ContainerClient.from_connection_string(connection_string, name("blobs"))
    store = BlobStorageBlobStore(container)
    try:
        assert await store.list(prefix="") == []
        assert await store.delete_prefix(prefix="a/") == 0
        await store.put(key="a/page.json", data=b"{}", content_type="application/json")
        properties = await container.get_blob_client("a/page.json").get_blob_properties()
        assert properties.content_settings.content_type == "application/json"
        assert await store.delete_prefix(prefix="a/") == 1
    finally:
        await store.close()


def with_query(url: str, **changed: str) -> str:
    """``url`` with some query parameters replaced (the rest kept, re-encoded alike)."""
    parts = urlsplit(url)
    query = [(k, changed.get(k, v)) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_a_sas_is_read_only_and_a_tampered_one_is_refused(connection_string: str) -> None:
    """Azurite checks SAS signatures as the service does: the URL reads, it cannot write,
    and one changed character of the signature (or a later expiry) is 403."""
    store = BlobStorageBlobStore(
        ContainerClient.from_connection_string(connection_string, name("sas"))
    )
    try:
        await store.put(key="t/export.jsonl", data=b'{"a": 1}\n')
        url = await store.signed_url(key="t/export.jsonl", expires_s=60)
        query = parse_qs(urlsplit(url).query)
        assert query["sp"] == ["r"]
        async with httpx.AsyncClient() as http:
            assert (await http.get(url)).content == b'{"a": 1}\n'
            put = await http.put(url, content=b"x", headers={"x-ms-blob-type": "BlockBlob"})
            assert put.status_code == 403
            signature = query["sig"][0]
            other = "B" if signature[0] == "A" else "A"  # one changed character
            assert (await http.get(with_query(url))).status_code == 200  # re-encoding is fine
            forged = with_query(url, sig=other + signature[1:])
            assert forged != url
            assert (await http.get(forged)).status_code == 403
            longer = with_query(url, se="2099-01-01T00:00:00Z")
            assert (await http.get(longer)).status_code == 403
        assert await store.get(key="t/export.jsonl") == b'{"a": 1}\n'
    finally:
        await store.delete_prefix(prefix="t/")
        await store.close()
