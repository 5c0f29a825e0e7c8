"""S3 clients built from config, in one place: boto3 for objects, pyarrow for datasets.

Any S3 endpoint works (AWS, MinIO, Ceph, SeaweedFS): path-style addressing and an explicit
endpoint everywhere, credentials from :meth:`ExfmConfig.s3_credentials` (env > file > the
stack's generated keys). Credentials are never logged.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlparse

from exfm.config import ExfmConfig


class StorageError(RuntimeError):
    """An object-store operation failed; the message names the endpoint, bucket and key."""


def s3_client(cfg: ExfmConfig, timeout: float | None = None, attempts: int = 3,
              credentials: tuple[str, str] | None = None):
    """A boto3 S3 client for ``cfg``'s endpoint (path-style, short connect timeout).

    ``timeout``: connect and read timeout in seconds (default 5 s to connect, 60 s to read);
    ``attempts``: boto3's ``max_attempts`` (a health probe wants ``timeout=3, attempts=1``);
    ``credentials``: (access, secret) instead of ``cfg.s3_credentials()`` (the stack's own probe
    uses the keys the embedded server was started with).
    """
    access, secret = credentials or cfg.s3_credentials()
    return _client(cfg.s3_endpoint, cfg.storage.region, access, secret, timeout, attempts)


@lru_cache(maxsize=8)
def _client(endpoint: str, region: str, access: str, secret: str, timeout: float | None,
            attempts: int):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=region,
        aws_access_key_id=access, aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, connect_timeout=timeout or 5,
                      read_timeout=timeout or 60,
                      retries={"max_attempts": attempts, "mode": "standard"}),
    )


def arrow_fs(cfg: ExfmConfig):
    """A ``pyarrow.fs.S3FileSystem`` for ``cfg``'s endpoint (pyarrow ignores AWS_ENDPOINT_URL)."""
    from pyarrow import fs

    access, secret = cfg.s3_credentials()
    u = urlparse(cfg.s3_endpoint)
    return fs.S3FileSystem(endpoint_override=u.netloc, scheme=u.scheme or "http",
                           access_key=access, secret_key=secret, region=cfg.storage.region,
                           connect_timeout=5, request_timeout=60, allow_bucket_creation=False)


def ensure_bucket(cfg: ExfmConfig) -> None:
    """Create ``cfg.storage.bucket`` if missing; a clear error if the endpoint is unreachable."""
    from botocore.exceptions import ClientError

    client = s3_client(cfg)
    bucket = cfg.storage.bucket
    try:
        client.head_bucket(Bucket=bucket)
        return
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"s3 {cfg.s3_endpoint}: bucket '{bucket}': {e}") from e
    except Exception as e:  # noqa: BLE001
        raise unreachable(cfg, e) from e
    client.create_bucket(Bucket=bucket)


def unreachable(cfg: ExfmConfig, err: Exception) -> StorageError:
    return StorageError(f"s3 endpoint {cfg.s3_endpoint} is unreachable ({type(err).__name__}: "
                        f"{err}); is the stack up (`exfm stack status`) or storage.endpoint right?")


def s3_uri(cfg: ExfmConfig, key: str) -> str:
    return f"s3://{cfg.storage.bucket}/{key}"


def put_bytes(cfg: ExfmConfig, key: str, body: bytes) -> str:
    """Write one object ``key`` of the bucket; returns its ``s3://`` URI."""
    try:
        s3_client(cfg).put_object(Bucket=cfg.storage.bucket, Key=key, Body=body)
    except Exception as e:  # noqa: BLE001
        raise StorageError(f"{s3_uri(cfg, key)}: cannot write: {e}") from e
    return s3_uri(cfg, key)


def get_bytes(cfg: ExfmConfig, key: str) -> bytes:
    """Read one object ``key`` of the bucket (StorageError naming it if missing/unreadable)."""
    try:
        return s3_client(cfg).get_object(Bucket=cfg.storage.bucket, Key=key)["Body"].read()
    except Exception as e:  # noqa: BLE001
        raise StorageError(f"{s3_uri(cfg, key)}: cannot read: {e}") from e
