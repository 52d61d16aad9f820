"""OSS sink: the S3 sink's layout in an Alibaba Cloud OSS bucket, through oss2.

Same gzip JSONL objects, Hive-style partitions and deterministic names as every
`ObjectSink` (ready for OSS external tables in MaxCompute / DLA), so a retried batch
rewrites the same object.

- Credentials: the customer's Alibaba Cloud credentials as `load_credentials` finds them
  (explicit keys, the function role's STS key on FC, or a Secrets Manager / SSM secret);
  with a security token `oss2.StsAuth`, else `oss2.Auth` (both sign with OSS V1).
- Endpoint: `SINK_ENDPOINT`, e.g. `https://oss-cn-hangzhou-internal.aliyuncs.com` from FC
  in the same region (no traffic charge).
- Encryption: `SINK_SSE=AES256 | KMS | SM4` sends `x-oss-server-side-encryption`; with
  KMS, `SINK_KMS_KEY_ID` sends `x-oss-server-side-encryption-key-id`.
- oss2 does not retry its puts and gets, so this module does: connection errors, timeouts,
  429 and 5xx answers are tried again with backoff (a put is idempotent here: same name,
  same bytes), inside the write's deadline, each attempt with connect/read timeouts from
  the time left (shared/sinks/calls.py). The Buckets share one connection pool (Session).
- Every failure becomes `SinkError` naming the bucket and the OSS error code. oss2's own
  error text is never used: for a signature mismatch it carries the string-to-sign.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import oss2
import requests
import urllib3

from shared.clock import Deadline
from shared.retry import Backoff
from shared.sinks.base import ObjectSink
from shared.sinks.calls import DEFAULT_ATTEMPT, ClientsByTimeout, Timeouts, call

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.tokens import Credentials

OSS_SSE = {"AES256": "AES256", "KMS": "KMS", "aws:kms": "KMS", "SM4": "SM4"}

# oss2 logs request headers (the Authorization signature, the STS token) at DEBUG.
if logging.getLogger("oss2").level == logging.NOTSET:
    logging.getLogger("oss2").setLevel(logging.WARNING)


class OssSink(ObjectSink):
    """Objects in one OSS bucket under a prefix."""

    name = "oss"

    def __init__(self, bucket: str, endpoint: str, *, access_key_id: str, access_key_secret: str,
                 security_token: Optional[str] = None, prefix: str = "", sse: Optional[str] = None,
                 kms_key_id: Optional[str] = None, max_attempts: int = 4, base_delay: float = 0.2,
                 max_delay: float = 3.0, sleep: Callable[[float], None] = time.sleep):
        super().__init__(prefix)
        if sse is not None and sse not in OSS_SSE:
            raise ValueError(f"OSS server-side encryption must be AES256, KMS or SM4, not {sse!r}")
        auth = (oss2.StsAuth(access_key_id, access_key_secret, security_token) if security_token
                else oss2.Auth(access_key_id, access_key_secret))
        session = oss2.Session()  # one connection pool for the Buckets of every timeout

        def build(timeouts: Timeouts) -> oss2.Bucket:
            # oss2 hands `connect_timeout` to requests as its timeout, so a (connect, read) pair works.
            return oss2.Bucket(auth, endpoint, bucket, session=session,
                               connect_timeout=(timeouts.connect, timeouts.read))

        self.buckets = ClientsByTimeout(build)
        self.buckets.for_attempt(DEFAULT_ATTEMPT)  # a malformed endpoint fails now, at start-up
        self.bucket_name = bucket
        self.headers: dict[str, str] = {}
        if sse:
            self.headers["x-oss-server-side-encryption"] = OSS_SSE[sse]
            if kms_key_id and OSS_SSE[sse] == "KMS":
                self.headers["x-oss-server-side-encryption-key-id"] = kms_key_id
        self.backoff, self.sleep = Backoff(max_attempts, base_delay, max_delay), sleep

    @classmethod
    def from_settings(cls, settings: "Settings", credentials: "Optional[Credentials]" = None) -> "OssSink":
        from shared.credentials import load_credentials
        from shared.settings import SettingsError

        if settings.sink_kms_key_id and OSS_SSE.get(settings.sink_sse or "") != "KMS":
            raise SettingsError("invalid settings: SINK_KMS_KEY_ID: is used only with SINK_SSE=KMS")
        credentials = credentials or load_credentials(settings)
        return cls(settings.required("sink_bucket"), settings.required("sink_endpoint"),
                   access_key_id=credentials.access_key_id, access_key_secret=credentials.access_key_secret,
                   security_token=credentials.security_token,
                   prefix=settings.sink_prefix, sse=settings.sink_sse, kms_key_id=settings.sink_kms_key_id)

    def _put_object(self, path: str, data: bytes, deadline: Optional[Deadline] = None) -> None:
        headers = dict(self.headers)
        headers["Content-MD5"] = base64.b64encode(hashlib.md5(data).digest()).decode("ascii")  # checked by OSS
        headers["Content-Type"] = "application/gzip" if self.compress else "application/x-ndjson"
        self._call("put", lambda bucket: bucket.put_object(path, data, headers=headers), deadline)

    def _get_object(self, path: str) -> bytes:
        # The body is read inside the attempt: a read cut short is retried like any transport error.
        return self._call("get", lambda bucket: bucket.get_object(path).read())

    def _list_objects(self, prefix: str) -> Iterator[str]:
        for page in self._list_pages(prefix, ""):
            for entry in page.object_list:
                yield entry.key

    def _list_prefixes(self, prefix: str) -> Iterator[str]:
        for page in self._list_pages(prefix, "/"):
            yield from page.prefix_list

    def _list_pages(self, prefix: str, delimiter: str) -> Iterator[Any]:
        """Every page of a ListObjects (each page one call, retried on its own)."""
        marker = ""
        while True:
            def list_page(bucket: oss2.Bucket, marker: str = marker) -> Any:
                return bucket.list_objects(prefix=prefix, delimiter=delimiter, marker=marker, max_keys=1000)

            page = self._call("list", list_page)
            yield page
            if not page.is_truncated:
                return
            marker = page.next_marker

    def _call(self, what: str, action: Callable[[oss2.Bucket], Any], deadline: Optional[Deadline] = None) -> Any:
        return call(self.name, f"{what} in bucket {self.bucket_name}",
                    lambda seconds: action(self.buckets.for_attempt(seconds)), deadline=deadline,
                    retryable=is_retryable, describe=describe, backoff=self.backoff, sleep=self.sleep)


# A body read cut short surfaces from requests or urllib3 rather than as an OssError.
TRANSPORT_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, oss2.exceptions.OssError):
        return exc.status == oss2.exceptions.OSS_REQUEST_ERROR_STATUS or exc.status == 429 or exc.status >= 500
    return isinstance(exc, TRANSPORT_ERRORS)


def describe(exc: BaseException) -> str:
    """The OSS error code and status, or the kind of connection error; never oss2's own text,
    which for a signature mismatch carries the string-to-sign."""
    if isinstance(exc, oss2.exceptions.OssError):
        if exc.status == oss2.exceptions.OSS_REQUEST_ERROR_STATUS:
            return f"connection error ({type(getattr(exc, 'exception', exc)).__name__})"
        return f"{exc.code or 'Unknown'} (HTTP {exc.status})"
    return f"connection error ({type(exc).__name__})"
