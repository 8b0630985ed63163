"""AWS BlobStore: one S3 object per key, under an optional prefix of one bucket.

Features
    Key ``a/b/c.json`` is the object ``<blob_prefix>a/b/c.json``. ``put`` is one
    ``PutObject`` -- atomic in S3: readers see the old or the new object, never half of one --
    with the given ``Content-Type``. ``get`` raises ``core.errors.NotFound`` for a missing
    object (``NoSuchKey``); ``exists`` is a ``HeadObject``. ``list`` pages through
    ``ListObjectsV2`` (1,000 keys a page) and returns keys sorted, under any string prefix.
    ``delete`` of a missing key is fine; ``delete_prefix`` lists and deletes in batches of
    1,000 (``DeleteObjects``) and returns how many it removed. S3 is strongly consistent for
    every one of these since December 2020.

    Keys follow the one rule of every BlobStore (``core.ports.blob_store.check_key``: at most
    960 bytes of UTF-8, so that with a ``blob_prefix`` of at most 64 bytes the object key stays
    within S3's 1,024; segments of at most 255 bytes; no empty, ``.`` or ``..`` segment,
    leading ``/``, backslash or control character) -- else ``core.errors.InvalidRequest``.

    boto3 is synchronous: calls run in worker threads (``adapters.aws.errors.call``); throttling
    (``SlowDown``) and 5xx answers become ``core.errors.Retryable``.

Signed URLs
    ``signed_url`` is a SigV4 presigned ``GetObject`` URL (at most 7 days, and never longer
    than the signing credentials live), with ``response-content-disposition`` set to the
    download name: large exports are handed out this way instead of through Lambda's 6 MB.

Limits
    One ``PutObject`` takes at most 5 GiB (``capabilities.max_object_bytes``); objects are held
    in memory. A failed entry of a ``DeleteObjects`` batch is ``Retryable``.

Settings
    ``SKYCRAWL_AWS_BUCKET``, ``SKYCRAWL_AWS_BLOB_PREFIX``, ``SKYCRAWL_AWS_REGION``,
    ``SKYCRAWL_AWS_ENDPOINT_URL``.

Cost
    Storage ($0.023 per GB-month in S3 Standard) is the only cost at idle; requests are
    $0.005 per 1,000 PUT/LIST and $0.0004 per 1,000 GET; data out to the internet is billed,
    to Lambda and Fargate in the same region is not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from adapters.aws.errors import ClientError, call, error_code, http_status
from adapters.aws.settings import AwsSettings
from core.errors import InvalidRequest, NotFound, Retryable
from core.ports.blob_store import (
    STREAM_CHUNK_BYTES,
    BlobCapabilities,
    attachment,
    check_expiry,
    check_key,
    check_prefix,
    check_store_prefix,
)

_BATCH = 1000


def _missing(exc: ClientError) -> bool:
    return error_code(exc) in ("NoSuchKey", "404", "NotFound") or http_status(exc) == 404


class S3BlobStore:
    """BlobStore on one S3 bucket (and an optional key prefix)."""

    capabilities = BlobCapabilities(max_object_bytes=5 * 1024**3, signed_urls=True)

    def __init__(self, *, s3: Any, bucket: str, prefix: str = "") -> None:
        self._s3 = s3  # a boto3 S3 client (Any: boto3 ships no type stubs)
        self.bucket = bucket
        check_store_prefix(prefix)
        self._prefix = prefix

    @classmethod
    def from_settings(cls, aws: AwsSettings) -> S3BlobStore:
        return cls(s3=aws.client("s3"), bucket=aws.bucket, prefix=aws.blob_prefix)

    def _object(self, key: str) -> str:
        check_key(key)
        return f"{self._prefix}{key}"

    async def put(
        self, *, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        name = self._object(key)
        if len(data) > self.capabilities.max_object_bytes:
            raise InvalidRequest(f"object larger than {self.capabilities.max_object_bytes} bytes")
        await call(
            self._s3.put_object, Bucket=self.bucket, Key=name, Body=data, ContentType=content_type
        )

    async def get(self, *, key: str) -> bytes:
        name = self._object(key)
        try:
            response = await call(self._s3.get_object, Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _missing(exc):
                raise NotFound(f"no blob {key!r}") from exc
            raise
        data: bytes = await call(response["Body"].read)
        return data

    async def stream(
        self, *, key: str, chunk_bytes: int = STREAM_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        name = self._object(key)
        try:
            response = await call(self._s3.get_object, Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _missing(exc):
                raise NotFound(f"no blob {key!r}") from exc
            raise
        body = response["Body"]  # botocore's StreamingBody: read(n) reads n more bytes
        try:
            while chunk := await call(body.read, amt=chunk_bytes):
                yield chunk
        finally:
            body.close()

    async def size(self, *, key: str) -> int:
        name = self._object(key)
        try:
            head = await call(self._s3.head_object, Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _missing(exc):
                raise NotFound(f"no blob {key!r}") from exc
            raise
        return int(head["ContentLength"])

    async def signed_url(
        self, *, key: str, expires_s: int, download_name: str | None = None
    ) -> str:
        """A SigV4 presigned ``GetObject`` URL, signed locally with the client's credentials
        (no request is sent). It stops working when ``expires_s`` pass or when the signing
        credentials expire, whichever is first: a Lambda role's session lasts about an hour."""
        check_expiry(expires_s)
        params = {"Bucket": self.bucket, "Key": self._object(key)}
        if download_name is not None:
            params["ResponseContentDisposition"] = attachment(download_name)
        url: str = await call(
            self._s3.generate_presigned_url,
            ClientMethod="get_object",
            Params=params,
            ExpiresIn=expires_s,
        )
        return url

    async def exists(self, *, key: str) -> bool:
        name = self._object(key)
        try:
            await call(self._s3.head_object, Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return True

    async def _keys(self, prefix: str) -> list[str]:
        """Object names (with the store's prefix) under ``prefix``."""
        paginator = self._s3.get_paginator("list_objects_v2")

        def list_all() -> list[str]:
            pages = paginator.paginate(Bucket=self.bucket, Prefix=f"{self._prefix}{prefix}")
            return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

        names: list[str] = await call(list_all)
        return names

    async def list(self, *, prefix: str) -> list[str]:
        check_prefix(prefix)
        return sorted(name[len(self._prefix) :] for name in await self._keys(prefix))

    async def delete(self, *, key: str) -> None:
        name = self._object(key)
        await call(self._s3.delete_object, Bucket=self.bucket, Key=name)

    async def delete_prefix(self, *, prefix: str) -> int:
        check_prefix(prefix)
        names = await self._keys(prefix)
        for start in range(0, len(names), _BATCH):
            batch = [{"Key": name} for name in names[start : start + _BATCH]]
            response = await call(
                self._s3.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise Retryable(
                    f"{len(errors)} objects under {prefix!r} not deleted: "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )
        return len(names)

    async def close(self) -> None:
        self._s3.close()
