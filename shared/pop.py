"""Alibaba Cloud POP (RPC-style) plumbing shared by the token and send-record clients.

The customer's credentials, an aliyunsdkcore client, pointing a request at an endpoint, one
call with its error turned into a plain answer, and which answers are worth another try.
The SDK is imported inside the functions that use it: importing this module costs nothing.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Optional
from urllib.parse import urlparse

import msgspec

from shared.structs import repr_hiding

# POP flow control: HTTP 400 with one of these codes (the "user flow control" answer is
# Throttling.User), or ServiceUnavailable with 503. All say "slow down", not "no".
THROTTLING_CODES = frozenset({"Throttling", "Throttling.User", "Throttling.Api", "ServiceUnavailable"})
# Answers that say nothing about the request itself: the next try may work.
TRANSIENT_CODES = frozenset({"InternalError", "SDK.HttpError", "SDK.ServerUnreachable", "SDK.TimeoutError"})


def is_throttling(code: str, status: int = 0) -> bool:
    return code in THROTTLING_CODES or code.startswith("Throttling.") or status in (429, 503)


def is_retryable(code: str, status: int = 0) -> bool:
    """Throttling, a 5xx or a failed connection: worth another try, within the caller's time."""
    return is_throttling(code, status) or code in TRANSIENT_CODES or status >= 500


class Credentials(msgspec.Struct, frozen=True):
    """The customer's own AccessKey (or a RAM role's STS key) for the POP APIs."""

    access_key_id: str
    access_key_secret: str
    security_token: Optional[str] = None

    __repr__ = repr_hiding("access_key_id", "access_key_secret", "security_token")

    def secrets(self) -> list[str]:
        return [s for s in (self.access_key_id, self.access_key_secret, self.security_token) if s]


def pop_client(credentials: Credentials, region: str, timeout: float = 10.0):
    """An aliyunsdkcore AcsClient for RPC APIs (token, send records). SDK imported here only.

    No SDK retries: aliyunsdkcore retries only the APIs its retry_config.json lists (ECS's), so
    auto_retry would change nothing for Dybaseapi or Dysmsapi (tested: one request per call on
    a timeout, a throttle or a 5xx). The callers retry within their own deadlines."""
    from aliyunsdkcore.auth.credentials import AccessKeyCredential, StsTokenCredential
    from aliyunsdkcore.client import AcsClient

    if credentials.security_token:
        cred = StsTokenCredential(credentials.access_key_id, credentials.access_key_secret, credentials.security_token)
    else:
        cred = AccessKeyCredential(credentials.access_key_id, credentials.access_key_secret)
    return AcsClient(region_id=region, credential=cred, auto_retry=False,
                     connect_timeout=min(timeout, 5), timeout=timeout)


class ThreadClients:
    """One pop_client per thread: the SDK's client and its signer are not built for threads."""

    def __init__(self, credentials: Credentials, region: str, timeout: float):
        self.credentials, self.region, self.timeout = credentials, region, timeout
        self._local = threading.local()

    def get(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = pop_client(self.credentials, self.region, self.timeout)
        return client


def point_request(request: Any, endpoint: str) -> None:
    """Send an RPC request to `endpoint` (https URL, or http on loopback)."""
    parsed = urlparse(endpoint)
    request.set_endpoint(parsed.netloc)
    request.set_protocol_type("http" if parsed.scheme == "http" else "https")


def call_rpc(client: Any, request: Any) -> tuple[dict, Optional[Exception]]:
    """Run an RPC request; return (body, None) or ({"Code", "Message", "_status"}, error).

    do_action_with_exception sets Format=JSON on the request itself (POP's default is XML)."""
    from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException

    try:
        return json.loads(client.do_action_with_exception(request)), None
    except ServerException as exc:
        status = exc.get_http_status() or 0
        return {"Code": exc.get_error_code(), "Message": exc.get_error_msg(), "_status": status}, exc
    except ClientException as exc:
        return {"Code": exc.get_error_code(), "Message": exc.get_error_msg(), "_status": 0}, exc
    except ValueError as exc:
        return {"Code": "InvalidResponse", "Message": f"response is not JSON: {exc}", "_status": 0}, exc
