"""Cloud Storage V4 signed URLs. No emulator here checks V4 signatures (the fake server
speaks the JSON API only), so the URL is signed with a throw-away service-account key and
checked the way Cloud Storage checks it: its parts, and the RSA signature over the canonical
request (https://cloud.google.com/storage/docs/authentication/signatures)."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.oauth2 import service_account

from adapters.gcp.blob_store import GcsBlobStore
from core.errors import ConfigurationError
from tests.integration.gcp.fakes import FakeGcsServer

EMAIL = "exports@skycrawl-test.iam.gserviceaccount.com"


def _signer() -> tuple[service_account.Credentials, rsa.RSAPublicKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "client_email": EMAIL,
        "private_key": pem,
        "private_key_id": "test",
        "token_uri": "http://127.0.0.1:9/token",  # never called: signing is local
        "project_id": "skycrawl-test",
    }
    return service_account.Credentials.from_service_account_info(info), key.public_key()


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def _verify(url: str, public: rsa.RSAPublicKey) -> dict[str, str]:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    signature = bytes.fromhex(query.pop("X-Goog-Signature"))
    canonical_query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query.items()))
    canonical = "\n".join(
        ["GET", parts.path, canonical_query, f"host:{parts.netloc}", "", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = query["X-Goog-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            query["X-Goog-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    public.verify(signature, to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    return query


async def test_a_v4_url_is_signed_for_the_object_its_lifetime_and_its_name() -> None:
    credentials, public = _signer()
    with FakeGcsServer(buckets=["skycrawl-blobs"]) as server:
        store = GcsBlobStore(
            client=server.client(),
            bucket="skycrawl-blobs",
            prefix="deploy/",
            signing_credentials=credentials,
        )
        assert store.capabilities.signed_urls
        url = await store.signed_url(
            key="tenants/t1/crawls/c1/exports/f/c1.warc.gz",
            expires_s=900,
            download_name="c1.warc.gz",
        )
        await store.close()
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == server.url  # the client's endpoint
    assert parts.path == "/skycrawl-blobs/deploy/tenants/t1/crawls/c1/exports/f/c1.warc.gz"
    query = _verify(url, public)
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert query["X-Goog-Expires"] == "900"
    assert query["X-Goog-Credential"].startswith(f"{EMAIL}/")
    assert query["response-content-disposition"].startswith('attachment; filename="c1.warc.gz"')
    with pytest.raises(InvalidSignature):  # another object: not what was signed
        _verify(url.replace("c1.warc.gz?", "c2.warc.gz?"), public)


async def test_anonymous_credentials_cannot_sign_so_exports_stream() -> None:
    with FakeGcsServer(buckets=["skycrawl-blobs"]) as server:
        store = GcsBlobStore(client=server.client(), bucket="skycrawl-blobs")
        assert not store.capabilities.signed_urls
        with pytest.raises(ConfigurationError, match="sign"):
            await store.signed_url(key="a/b", expires_s=60)
        await store.close()
