"""Blobs of the self-hosted provider: files on a shared volume, or any S3-compatible store.

Nothing here re-implements a store; ``build_blob_store`` picks one of the two existing ones:

* ``files`` (the single-VM default): ``adapters.local.blob_store.FileBlobStore`` on
  ``<data_dir>/blobs`` -- a directory of the VM, or a volume that the control plane and every
  engine container mount at the same path (atomic writes by rename, several processes may
  share it). Costs disk space only.
* ``s3``: ``adapters.aws.blob_store.S3BlobStore`` on a boto3 client built by ``s3_client``
  for an S3-compatible endpoint -- DigitalOcean Spaces (``https://<region>.digitaloceanspaces.com``),
  Linode Object Storage (``https://<region>.linodeobjects.com``), MinIO, Ceph RGW -- with
  path-style addressing (``<endpoint>/<bucket>/<key>``, what MinIO and self-hosted stores
  need; virtual-hosted style with ``SKYCRAWL_SELFHOSTED_S3_PATH_STYLE=false``) and the
  store's region name in the signatures. Credentials: boto3's usual chain
  (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``), never a setting. Needs ``boto3``
  (in the ``selfhosted`` extra). The bucket must exist.
"""

from __future__ import annotations

from typing import Any

from adapters.local.blob_store import FileBlobStore
from adapters.selfhosted.settings import SelfhostedSettings
from core.errors import ConfigurationError
from core.ports import BlobStore


def s3_client(*, endpoint_url: str | None, region: str, path_style: bool) -> Any:
    """A boto3 S3 client for an S3-compatible store (``Any``: boto3 ships no type stubs)."""
    import boto3  # type: ignore[import-untyped]  # boto3 and botocore ship no stubs
    from botocore.config import Config  # type: ignore[import-untyped]

    config = Config(
        region_name=region,
        retries={"mode": "standard", "max_attempts": 5},
        s3={"addressing_style": "path" if path_style else "virtual"},
        signature_version="s3v4",
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def build_blob_store(selfhosted: SelfhostedSettings) -> BlobStore:
    """The blob store ``selfhosted.blobs`` names (see the module docstring)."""
    if selfhosted.blobs == "files":
        return FileBlobStore(selfhosted.data_dir.resolve() / "blobs")
    if not selfhosted.s3_endpoint_url:
        raise ConfigurationError(
            "SKYCRAWL_SELFHOSTED_BLOBS=s3 needs SKYCRAWL_SELFHOSTED_S3_ENDPOINT_URL "
            "(e.g. https://nyc3.digitaloceanspaces.com)"
        )
    from adapters.aws.blob_store import S3BlobStore

    client = s3_client(
        endpoint_url=selfhosted.s3_endpoint_url,
        region=selfhosted.s3_region,
        path_style=selfhosted.s3_path_style,
    )
    return S3BlobStore(s3=client, bucket=selfhosted.s3_bucket, prefix=selfhosted.s3_prefix)
