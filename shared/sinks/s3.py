"""S3 sink: gzip JSONL objects in Hive-style partitions (Athena/Glue ready), through boto3.

The layout, the deterministic object names and the gzip encoding come from `ObjectSink`;
this module only puts, gets and lists objects. A retried batch rewrites the same object
with the same bytes, so a redelivery never adds an object (DESIGN.md invariant 2).

- Credentials: boto3's default chain (on Lambda, the function role). `SINK_ENDPOINT`
  points the client elsewhere (an S3-compatible store, or moto in tests).
- Retries: botocore's "standard" mode (throttling and 5xx, with backoff), bounded
  connect/read timeouts so a stuck socket cannot eat the function's deadline.
- Integrity: a Content-MD5 on every put, checked by the service; botocore's newer
  checksums are asked for only when required, which S3-compatible stores also accept.
- Encryption: `SINK_SSE=AES256` or `aws:kms` (+ `SINK_KMS_KEY_ID`).
- Every failure becomes `SinkError` naming the bucket and the error code, never a secret.
"""
from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Any, Iterator, Optional

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.sinks.base import ObjectSink, SinkError

if TYPE_CHECKING:
    from shared.settings import Settings

S3_SSE = {"AES256": "AES256", "aws:kms": "aws:kms", "KMS": "aws:kms"}


def aws_client(service: str, *, region: Optional[str] = None, endpoint_url: Optional[str] = None,
               max_attempts: int = 5, connect_timeout: float = 5, read_timeout: float = 30, **credentials: Any):
    """A boto3 client with bounded retries and timeouts; `credentials` only for tests and tools."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},  # attempts, first one included
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    # A session per client: boto3's default session is not safe to share across threads.
    return boto3.session.Session().client(service, region_name=region, endpoint_url=endpoint_url, config=config, **credentials)


def client_error_reason(exc: Exception, what: str) -> str:
    """`what failed: <code> (HTTP n, after k retries)`, or the exception class for transport errors."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        meta = exc.response.get("ResponseMetadata") or {}
        code = error.get("Code") or "Unknown"
        retries = meta.get("RetryAttempts") or 0
        tail = f", after {retries} {'retry' if retries == 1 else 'retries'}" if retries else ""
        return f"{what} failed: {code} (HTTP {meta.get('HTTPStatusCode', '?')}{tail})"
    # Transport errors (EndpointConnectionError, ReadTimeoutError, NoCredentialsError...).
    return f"{what} failed: {type(exc).__name__}"


def settings_error(variable: str, detail: str) -> Exception:
    from shared.settings import SettingsError

    return SettingsError(f"invalid settings: {variable}: {detail}")


class S3Sink(ObjectSink):
    """Objects in one S3 bucket under a prefix."""

    name = "s3"

    def __init__(self, bucket: str, prefix: str = "", *, client=None, sse: Optional[str] = None,
                 kms_key_id: Optional[str] = None, region: Optional[str] = None,
                 endpoint_url: Optional[str] = None, **client_options: Any):
        super().__init__(prefix)
        if sse is not None and sse not in S3_SSE:
            raise ValueError(f"S3 server-side encryption must be AES256 or aws:kms, not {sse!r}")
        self.bucket = bucket
        self.sse = S3_SSE.get(sse) if sse else None
        self.kms_key_id = kms_key_id
        self.client = client or aws_client("s3", region=region, endpoint_url=endpoint_url, **client_options)

    @classmethod
    def from_settings(cls, settings: "Settings", credentials=None) -> "S3Sink":
        if settings.sink_sse and settings.sink_sse not in S3_SSE:
            raise settings_error("SINK_SSE", f"SINK=s3 takes AES256 or aws:kms, not {settings.sink_sse}")
        if settings.sink_kms_key_id and S3_SSE.get(settings.sink_sse or "") != "aws:kms":
            raise settings_error("SINK_KMS_KEY_ID", "is used only with SINK_SSE=aws:kms")
        return cls(settings.sink_bucket, settings.sink_prefix, sse=settings.sink_sse,
                   kms_key_id=settings.sink_kms_key_id, region=settings.sink_region,
                   endpoint_url=settings.sink_endpoint)

    def _put_object(self, path: str, data: bytes) -> None:
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": path,
            "Body": data,
            "ContentMD5": base64.b64encode(hashlib.md5(data).digest()).decode("ascii"),
            "ContentType": "application/gzip" if self.compress else "application/x-ndjson",
        }
        if self.sse:
            args["ServerSideEncryption"] = self.sse
            if self.kms_key_id:
                args["SSEKMSKeyId"] = self.kms_key_id
        self._call(f"put to bucket {self.bucket}", self.client.put_object, **args)

    def _get_object(self, path: str) -> bytes:
        response = self._call(f"get from bucket {self.bucket}", self.client.get_object, Bucket=self.bucket, Key=path)
        try:
            return response["Body"].read()
        except (BotoCoreError, OSError) as exc:
            raise SinkError(self.name, client_error_reason(exc, f"read from bucket {self.bucket}")) from None

    def _list_objects(self, prefix: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        try:
            for page in pages:
                for entry in page.get("Contents") or ():
                    yield entry["Key"]
        except (ClientError, BotoCoreError) as exc:
            raise SinkError(self.name, client_error_reason(exc, f"list of bucket {self.bucket}")) from None

    def _call(self, what: str, method, **kwargs):
        try:
            return method(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            # `from None`: the chained botocore error would repeat request details in logs.
            raise SinkError(self.name, client_error_reason(exc, what)) from None

    def close(self) -> None:
        self.client.close()
