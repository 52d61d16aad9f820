"""OSS sink: the S3 sink's layout in an Alibaba Cloud OSS bucket, through oss2.

Same gzip JSONL objects, Hive-style partitions and deterministic names as every
`ObjectSink` (ready for OSS external tables in MaxCompute / DLA), so a retried batch
rewrites the same object.

- Credentials: on Function Compute the role's `ALIBABA_CLOUD_*` variables from settings;
  with a security token `oss2.StsAuth`, else `oss2.Auth` (both sign with OSS V1).
- Endpoint: `SINK_ENDPOINT`, e.g. `https://oss-cn-hangzhou-internal.aliyuncs.com` from FC
  in the same region (no traffic charge).
- Encryption: `SINK_SSE=AES256 | KMS | SM4` sends `x-oss-server-side-encryption`; with
  KMS, `SINK_KMS_KEY_ID` sends `x-oss-server-side-encryption-key-id`.
- oss2 does not retry, so this module does: connection errors and 5xx answers are tried
  again with exponential backoff and jitter, a bounded number of times (a put is
  idempotent here: same name, same bytes). Timeouts are bounded too.
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

from shared.sinks.base import backoff_delays, ObjectSink, SinkError

if TYPE_CHECKING:
    from shared.settings import Settings

OSS_SSE = {"AES256": "AES256", "KMS": "KMS", "aws:kms": "KMS", "SM4": "SM4"}

# oss2 logs request headers (the Authorization signature, the STS token) at DEBUG.
if logging.getLogger("oss2").level == logging.NOTSET:
    logging.getLogger("oss2").setLevel(logging.WARNING)


class OssSink(ObjectSink):
    """Objects in one OSS bucket under a prefix."""

    name = "oss"

    def __init__(self, bucket: str, endpoint: str, *, access_key_id: str, access_key_secret: str,
                 security_token: Optional[str] = None, prefix: str = "", sse: Optional[str] = None,
                 kms_key_id: Optional[str] = None, connect_timeout: float = 5, read_timeout: float = 30,
                 max_attempts: int = 4, base_delay: float = 0.2, max_delay: float = 3.0,
                 sleep: Callable[[float], None] = time.sleep):
        super().__init__(prefix)
        if sse is not None and sse not in OSS_SSE:
            raise ValueError(f"OSS server-side encryption must be AES256, KMS or SM4, not {sse!r}")
        auth = (oss2.StsAuth(access_key_id, access_key_secret, security_token) if security_token
                else oss2.Auth(access_key_id, access_key_secret))
        # oss2 hands `connect_timeout` to requests as its timeout, so a (connect, read) pair works.
        self.bucket = oss2.Bucket(auth, endpoint, bucket, connect_timeout=(connect_timeout, read_timeout))
        self.bucket_name = bucket
        self.headers: dict[str, str] = {}
        if sse:
            self.headers["x-oss-server-side-encryption"] = OSS_SSE[sse]
            if kms_key_id and OSS_SSE[sse] == "KMS":
                self.headers["x-oss-server-side-encryption-key-id"] = kms_key_id
        self.max_attempts, self.base_delay, self.max_delay, self.sleep = max_attempts, base_delay, max_delay, sleep

    @classmethod
    def from_settings(cls, settings: "Settings", credentials=None) -> "OssSink":
        from shared.settings import SettingsError

        if not settings.access_key_id or not settings.access_key_secret:
            raise SettingsError("invalid settings: ALIBABA_CLOUD_ACCESS_KEY_ID: SINK=oss needs the function role's "
                                "ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET (and _SECURITY_TOKEN)")
        if settings.sink_kms_key_id and OSS_SSE.get(settings.sink_sse or "") != "KMS":
            raise SettingsError("invalid settings: SINK_KMS_KEY_ID: is used only with SINK_SSE=KMS")
        return cls(settings.sink_bucket, settings.sink_endpoint, access_key_id=settings.access_key_id,
                   access_key_secret=settings.access_key_secret, security_token=settings.security_token,
                   prefix=settings.sink_prefix, sse=settings.sink_sse, kms_key_id=settings.sink_kms_key_id)

    def _put_object(self, path: str, data: bytes) -> None:
        headers = dict(self.headers)
        headers["Content-MD5"] = base64.b64encode(hashlib.md5(data).digest()).decode("ascii")  # checked by OSS
        headers["Content-Type"] = "application/gzip" if self.compress else "application/x-ndjson"
        self._call("put", lambda: self.bucket.put_object(path, data, headers=headers))

    def _get_object(self, path: str) -> bytes:
        return self._call("get", lambda: self.bucket.get_object(path).read())

    def _list_objects(self, prefix: str) -> Iterator[str]:
        marker = ""
        while True:
            page = self._call("list", lambda: self.bucket.list_objects(prefix=prefix, marker=marker, max_keys=1000))
            for entry in page.object_list:
                yield entry.key
            if not page.is_truncated:
                return
            marker = page.next_marker

    def _call(self, what: str, action: Callable[[], Any]) -> Any:
        delays = backoff_delays(self.max_attempts, self.base_delay, self.max_delay)
        attempt = 0
        while True:
            attempt += 1
            try:
                return action()
            except oss2.exceptions.OssError as exc:
                transient = exc.status == oss2.exceptions.OSS_REQUEST_ERROR_STATUS or exc.status >= 500
                delay = next(delays, None) if transient else None
                if delay is None:
                    raise SinkError(self.name, self._reason(what, exc, attempt)) from None
                self.sleep(delay)

    def _reason(self, what: str, exc: "oss2.exceptions.OssError", attempts: int) -> str:
        if exc.status == oss2.exceptions.OSS_REQUEST_ERROR_STATUS:
            code = f"connection error ({type(getattr(exc, 'exception', exc)).__name__})"
        else:
            code = f"{exc.code or 'Unknown'} (HTTP {exc.status})"
        tail = f" after {attempts} attempts" if attempts > 1 else ""
        return f"{what} in bucket {self.bucket_name} failed: {code}{tail}"
