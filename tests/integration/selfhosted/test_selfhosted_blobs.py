"""Which blob store the self-hosted settings build, and that the S3-compatible one really
addresses objects path-style at the configured endpoint (the moto server on 127.0.0.1)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from adapters.aws.blob_store import S3BlobStore
from adapters.local.blob_store import FileBlobStore
from adapters.selfhosted.blob_store import build_blob_store, s3_client
from adapters.selfhosted.settings import SelfhostedSettings
from core.errors import ConfigurationError
from tests.contract.backends_aws import _empty_bucket, _new_bucket
from tests.integration.aws import moto_server


async def test_files_on_the_data_dir_by_default(tmp_path: Path) -> None:
    store = build_blob_store(SelfhostedSettings(data_dir=tmp_path / "shared"))
    assert isinstance(store, FileBlobStore)
    await store.put(key="tenants/t1/page", data=b"x")
    assert (tmp_path / "shared" / "blobs" / "tenants" / "t1" / "page").read_bytes() == b"x"


async def test_s3_compatible_store_addresses_objects_path_style() -> None:
    endpoint, bucket = moto_server.endpoint(), _new_bucket()
    with mock.patch.dict(os.environ, moto_server.CREDENTIALS):
        store = build_blob_store(
            SelfhostedSettings(
                blobs="s3", s3_endpoint_url=endpoint, s3_bucket=bucket, s3_prefix="prod/"
            )
        )
    assert isinstance(store, S3BlobStore)
    sent: list[str] = []

    def record(request: Any, **_: Any) -> None:
        sent.append(request.url)

    store._s3.meta.events.register("before-send.s3", record)
    try:
        await store.put(key="tenants/t1/page.html", data=b"<p>hi</p>")
        assert await store.get(key="tenants/t1/page.html") == b"<p>hi</p>"
        assert sent
        assert all(url.startswith(f"{endpoint}/{bucket}/") for url in sent), sent
        assert f"{endpoint}/{bucket}/prod/tenants/t1/page.html" in sent
    finally:
        await store.close()
        _empty_bucket(bucket)


def test_virtual_hosted_style_is_an_option() -> None:
    with mock.patch.dict(os.environ, moto_server.CREDENTIALS):
        client = s3_client(endpoint_url="http://127.0.0.1:9", region="nyc3", path_style=False)
    assert client.meta.config.s3 == {"addressing_style": "virtual"}
    assert client.meta.region_name == "nyc3"


def test_s3_without_an_endpoint_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="S3_ENDPOINT_URL"):
        build_blob_store(SelfhostedSettings(blobs="s3"))
