"""BlobStore contract: atomic objects under ``/``-separated keys, listed in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.local.blob_store import FileBlobStore
from core.errors import ConfigurationError, InvalidRequest, NotFound
from core.ports import BlobStore
from core.ports.blob_store import MAX_KEY_BYTES, MAX_SIGNED_URL_S


async def test_round_trip_and_overwrite(blobs: BlobStore) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB of every byte value
    await blobs.put(key="tenants/t1/crawls/c1/checkpoint.json", data=data)
    assert await blobs.get(key="tenants/t1/crawls/c1/checkpoint.json") == data
    assert await blobs.exists(key="tenants/t1/crawls/c1/checkpoint.json")

    await blobs.put(
        key="tenants/t1/crawls/c1/checkpoint.json", data=b"{}", content_type="application/json"
    )
    assert await blobs.get(key="tenants/t1/crawls/c1/checkpoint.json") == b"{}"
    await blobs.put(key="empty", data=b"")
    assert await blobs.get(key="empty") == b""


async def test_missing_blob(blobs: BlobStore) -> None:
    with pytest.raises(NotFound):
        await blobs.get(key="no/such/blob")
    assert not await blobs.exists(key="no/such/blob")
    await blobs.delete(key="no/such/blob")  # absent is not an error


async def test_list_is_sorted_and_filtered_by_prefix(blobs: BlobStore) -> None:
    keys = ["a/b/2.txt", "a/b/10.txt", "a/bc/1.txt", "a/b.txt", "b/1.txt", "a/b/sub/x"]
    for key in keys:
        await blobs.put(key=key, data=key.encode())
    assert await blobs.list(prefix="") == sorted(keys)
    assert await blobs.list(prefix="a/b/") == ["a/b/10.txt", "a/b/2.txt", "a/b/sub/x"]
    assert await blobs.list(prefix="a/b") == sorted(k for k in keys if k.startswith("a/b"))
    assert await blobs.list(prefix="a/b/1") == ["a/b/10.txt"]
    assert await blobs.list(prefix="zzz/") == []


async def test_delete_and_delete_prefix(blobs: BlobStore) -> None:
    for key in ["t/c1/m/0", "t/c1/m/1", "t/c1/w/0", "t/c2/m/0"]:
        await blobs.put(key=key, data=b"x")
    await blobs.delete(key="t/c1/w/0")
    assert not await blobs.exists(key="t/c1/w/0")
    assert await blobs.delete_prefix(prefix="t/c1/") == 2
    assert await blobs.list(prefix="t/") == ["t/c2/m/0"]
    assert await blobs.delete_prefix(prefix="t/c1/") == 0
    await blobs.put(key="t/c1/m/0", data=b"again")  # the emptied "directory" is usable again
    assert await blobs.get(key="t/c1/m/0") == b"again"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../escape",
        "a/../../escape",
        "/etc/passwd",
        "a\\b",
        "a//b",
        "a/",
        "./a",
        "a/./b",
        "a/..",
    ],
)
async def test_unsafe_keys_are_rejected(blobs: BlobStore, key: str) -> None:
    with pytest.raises(InvalidRequest):
        await blobs.put(key=key, data=b"x")
    with pytest.raises(InvalidRequest):
        await blobs.get(key=key)


# 255 + 1 + 255 + 1 + 255 + 1 + 192 = 960 bytes of UTF-8 in 378 characters
_AT_LIMIT = "/".join(["é" * 127 + "a", "€" * 85, "𝄞" * 63 + "abc", "ü" * 96])


async def test_a_multibyte_key_at_the_limit_works_and_one_byte_more_does_not(
    blobs: BlobStore,
) -> None:
    """Limits count UTF-8 bytes (as S3 and Cloud Storage do), the same on every backend."""
    assert (len(_AT_LIMIT.encode()), len(_AT_LIMIT)) == (MAX_KEY_BYTES, 378)
    await blobs.put(key=_AT_LIMIT, data=b"at the limit")
    assert await blobs.get(key=_AT_LIMIT) == b"at the limit"
    assert await blobs.exists(key=_AT_LIMIT)
    assert await blobs.list(prefix=_AT_LIMIT.rsplit("/", 1)[0] + "/") == [_AT_LIMIT]
    over = _AT_LIMIT + "x"  # 961 bytes, still only 379 characters
    for key in (over, "a/" + "é" * 128):  # too long in all; one segment of 256 bytes
        with pytest.raises(InvalidRequest, match="bytes"):
            await blobs.put(key=key, data=b"x")
        with pytest.raises(InvalidRequest, match="bytes"):
            await blobs.exists(key=key)
    await blobs.delete(key=_AT_LIMIT)
    assert not await blobs.exists(key=_AT_LIMIT)


@pytest.mark.parametrize("key", ["a\rb", "a\nb", "a\x01b", "a\x7fb", ".tmp/x"])
async def test_control_characters_and_the_reserved_segment_are_refused_everywhere(
    blobs: BlobStore, key: str
) -> None:
    with pytest.raises(InvalidRequest):
        await blobs.put(key=key, data=b"x")


async def test_readers_never_see_half_a_write(blobs: BlobStore) -> None:
    old, new = b"a" * 2_000_000, b"b" * 2_000_000
    await blobs.put(key="k", data=old)

    async def read_many() -> set[bytes]:
        return {await blobs.get(key="k") for _ in range(20)}

    seen, _ = await asyncio.gather(read_many(), blobs.put(key="k", data=new))
    assert seen <= {old, new}
    assert await blobs.get(key="k") == new


# --------------------------------------------------------------------------- files only


async def test_files_leave_no_temporary_files_behind(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    await asyncio.gather(*(store.put(key=f"k/{i % 3}", data=b"x" * i) for i in range(30)))
    assert sorted(p.name for p in (tmp_path / ".tmp").iterdir()) == []
    assert await store.list(prefix="") == ["k/0", "k/1", "k/2"]
    await store.delete_prefix(prefix="k/")
    assert not (tmp_path / "k").exists()


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("ab./\\\x00"), max_size=12)
    | st.lists(st.sampled_from(["a", "", ".", "..", ".tmp", "b\\c", "..."]), max_size=5).map(
        "/".join
    )
)
def test_files_never_map_a_key_outside_the_root(key: str) -> None:
    root = Path("/srv/blobs")
    store = FileBlobStore(root)
    try:
        path = store._path(key)
    except InvalidRequest:
        return
    assert root in path.parents
    assert ".." not in path.relative_to(root).parts
    assert path.relative_to(root).parts[0] != ".tmp"


# --------------------------------------------------------------------- streaming (issue 12)


async def test_stream_reads_an_object_in_chunks(blobs: BlobStore) -> None:
    data = bytes(range(256)) * 1200  # 300 KiB, not a multiple of the chunk size
    await blobs.put(key="t/c/warc/0.warc.gz", data=data)
    chunks = [c async for c in blobs.stream(key="t/c/warc/0.warc.gz", chunk_bytes=64 * 1024)]
    assert b"".join(chunks) == data
    assert all(0 < len(c) <= 64 * 1024 for c in chunks)
    assert len(chunks) == -(-len(data) // (64 * 1024))
    assert await blobs.size(key="t/c/warc/0.warc.gz") == len(data)
    await blobs.put(key="t/c/empty", data=b"")
    assert b"".join([c async for c in blobs.stream(key="t/c/empty")]) == b""
    assert await blobs.size(key="t/c/empty") == 0


async def test_stream_and_size_of_a_missing_object(blobs: BlobStore) -> None:
    with pytest.raises(NotFound):
        async for _ in blobs.stream(key="no/such/blob"):
            pass
    with pytest.raises(NotFound):
        await blobs.size(key="no/such/blob")
    with pytest.raises(InvalidRequest):
        await blobs.size(key="../escape")


# --------------------------------------------------------------------------- signed URLs


async def test_a_signed_url_gets_the_object_without_credentials(blobs: BlobStore) -> None:
    """Where the store signs (S3, Azure SAS), a plain GET of the URL answers the bytes, as an
    attachment with the name asked for; where it cannot (files), signing is refused."""
    data = bytes(range(256)) * 1024
    key = "tenants/t1/crawls/c1/exports/f/c1.warc.gz"
    await blobs.put(key=key, data=data, content_type="application/warc")
    if not blobs.capabilities.signed_urls:
        with pytest.raises(ConfigurationError):
            await blobs.signed_url(key=key, expires_s=60)
        return
    url = await blobs.signed_url(key=key, expires_s=60, download_name="c1 (ü).warc.gz")
    async with httpx.AsyncClient() as http:  # the emulators listen on 127.0.0.1
        response = await http.get(url)
    assert response.status_code == 200, response.text
    assert response.content == data
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="c1 (_).warc.gz"')
    assert "filename*=UTF-8''c1%20%28%C3%BC%29.warc.gz" in disposition


@pytest.mark.parametrize("expires_s", [0, -1, MAX_SIGNED_URL_S + 1])
async def test_a_signed_url_lives_one_second_to_seven_days(
    blobs: BlobStore, expires_s: int
) -> None:
    refused = InvalidRequest if blobs.capabilities.signed_urls else ConfigurationError
    with pytest.raises(refused):
        await blobs.signed_url(key="a/b", expires_s=expires_s)
