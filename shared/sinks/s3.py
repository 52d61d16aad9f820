"""S3 sink: gzip JSONL objects in Hive-style partitions (Athena/Glue ready), through boto3.

The layout, the deterministic object names and the gzip encoding come from `ObjectSink`;
this module only puts, gets and lists objects. A retried batch rewrites the same object
with the same bytes, so a redelivery never adds an object (docs/ARCHITECTURE.md, invariant 2).

- Credentials: boto3's default chain (on Lambda, the function role). `SINK_ENDPOINT`
  points the client elsewhere (an S3-compatible store, or moto in tests).
- Deadline: every call retries itself (throttling, 5xx, connection and timeout errors)
  with backoff, and each attempt's connect/read timeouts come from the time left, so a
  write ends before its deadline (shared/sinks/calls.py); botocore's own retries are off.
- Integrity: a Content-MD5 on every put, checked by the service; botocore's newer
  checksums are asked for only when required, which S3-compatible stores also accept.
- Encryption: `SINK_SSE=AES256` or `aws:kms` (+ `SINK_KMS_KEY_ID`).
- Every failure becomes `SinkError` naming the bucket and the error code, never a secret.
"""
from __future__ import annotations

import base64
import hashlib
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from shared.clock import Deadline
from shared.retry import Backoff
from shared.sinks._aws import aws_clients, describe, is_retryable, settings_error
from shared.sinks.base import ObjectSink
from shared.sinks.calls import call

if TYPE_CHECKING:
    from shared.settings import Settings

S3_SSE = {"AES256": "AES256", "aws:kms": "aws:kms", "KMS": "aws:kms"}
LIST_PAGE = 1000  # keys per ListObjectsV2 page (the service's maximum)


class S3Sink(ObjectSink):
    """Objects in one S3 bucket under a prefix."""

    name = "s3"
    list_page = LIST_PAGE

    def __init__(self, bucket: str, prefix: str = "", *, sse: Optional[str] = None,
                 kms_key_id: Optional[str] = None, region: Optional[str] = None,
                 endpoint_url: Optional[str] = None, max_attempts: int = 5, base_delay: float = 0.1,
                 max_delay: float = 2.0, sleep: Callable[[float], None] = time.sleep, **credentials: Any):
        super().__init__(prefix)
        if sse is not None and sse not in S3_SSE:
            raise ValueError(f"S3 server-side encryption must be AES256 or aws:kms, not {sse!r}")
        self.bucket = bucket
        self.sse = S3_SSE.get(sse) if sse else None
        self.kms_key_id = kms_key_id
        self.clients = aws_clients("s3", region=region, endpoint_url=endpoint_url, **credentials)
        self.backoff, self.sleep = Backoff(max_attempts, base_delay, max_delay), sleep

    @classmethod
    def from_settings(cls, settings: "Settings", credentials=None) -> "S3Sink":
        if settings.sink_sse and settings.sink_sse not in S3_SSE:
            raise settings_error("SINK_SSE", f"SINK=s3 takes AES256 or aws:kms, not {settings.sink_sse}")
        if settings.sink_kms_key_id and S3_SSE.get(settings.sink_sse or "") != "aws:kms":
            raise settings_error("SINK_KMS_KEY_ID", "is used only with SINK_SSE=aws:kms")
        return cls(settings.required("sink_bucket"), settings.sink_prefix, sse=settings.sink_sse,
                   kms_key_id=settings.sink_kms_key_id, region=settings.sink_region,
                   endpoint_url=settings.sink_endpoint)

    def _put_object(self, path: str, data: bytes, deadline: Optional[Deadline] = None) -> None:
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
        self._call(f"put to bucket {self.bucket}", lambda client: client.put_object(**args), deadline)

    def _get_object(self, path: str) -> bytes:
        # The body is read inside the attempt: a read cut short is retried like any transport error.
        return self._call(f"get from bucket {self.bucket}",
                          lambda client: client.get_object(Bucket=self.bucket, Key=path)["Body"].read())

    def _list_objects(self, prefix: str) -> Iterator[str]:
        for page in self._list_pages({"Prefix": prefix}):
            for entry in page.get("Contents") or ():
                yield entry["Key"]

    def _list_prefixes(self, prefix: str) -> Iterator[str]:
        for page in self._list_pages({"Prefix": prefix, "Delimiter": "/"}):
            for entry in page.get("CommonPrefixes") or ():
                yield entry["Prefix"]

    def _list_pages(self, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every page of a ListObjectsV2 (each page one call, retried on its own)."""
        args = {"Bucket": self.bucket, "MaxKeys": self.list_page, **query}
        while True:
            page = self._call(f"list of bucket {self.bucket}", lambda client: client.list_objects_v2(**args))
            yield page
            if not page.get("IsTruncated"):
                return
            args["ContinuationToken"] = page["NextContinuationToken"]

    def _call(self, what: str, action: Callable[[Any], Any], deadline: Optional[Deadline] = None) -> Any:
        return call(self.name, what, lambda seconds: action(self.clients.for_attempt(seconds)), deadline=deadline,
                    retryable=is_retryable, describe=describe, backoff=self.backoff, sleep=self.sleep)

    def close(self) -> None:
        for client in self.clients.all():
            client.close()
