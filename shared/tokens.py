"""Temporary MNS credentials from Dybaseapi `QueryTokenForMnsQueue`, cached per message type.

Alicom's queues live in Alicom's account; a customer reads them with a short-lived STS
token. `ExpireTime` is Asia/Shanghai wall time: we parse it as such and compare aware
datetimes, so a UTC host neither keeps an expired token nor refreshes too early
(invariant 5). The cache refreshes `refresh_buffer` seconds before expiry and at once
after the queue refuses a token.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional, Protocol
from urllib.parse import urlparse

from shared.clock import SYSTEM_CLOCK, Clock
from shared.decode import SHANGHAI, TIME_FORMAT


class TokenError(Exception):
    """The token API refused or failed. Carries the API's code, never a credential."""

    def __init__(self, message_type: str, code: str, message: str, retryable: bool = False):
        super().__init__(f"QueryTokenForMnsQueue({message_type}) failed: {code}: {message}")
        self.code = code
        self.retryable = retryable


@dataclass(frozen=True)
class MnsToken:
    access_key_id: str = field(repr=False)
    access_key_secret: str = field(repr=False)
    security_token: str = field(repr=False)
    expire_at: datetime  # aware

    def seconds_left(self, now: datetime) -> float:
        # total_seconds(), not .seconds: a token past expiry must read as negative.
        return (self.expire_at - now).total_seconds()


def parse_expire_time(text: str) -> datetime:
    """`yyyy-MM-dd HH:mm:ss` in Asia/Shanghai -> aware datetime."""
    return datetime.strptime(text.strip(), TIME_FORMAT).replace(tzinfo=SHANGHAI)


class TokenSource(Protocol):
    def fetch(self, message_type: str, timeout: Optional[float] = None) -> MnsToken: ...


@dataclass(frozen=True)
class Credentials:
    """The customer's own AccessKey (or a RAM role's STS key) for the POP APIs."""

    access_key_id: str = field(repr=False)
    access_key_secret: str = field(repr=False)
    security_token: Optional[str] = field(default=None, repr=False)

    def secrets(self) -> list[str]:
        return [s for s in (self.access_key_id, self.access_key_secret, self.security_token) if s]


def pop_client(credentials: Credentials, region: str, timeout: float = 10.0, retries: int = 2):
    """An aliyunsdkcore AcsClient for RPC APIs (token, send records). SDK imported here only."""
    from aliyunsdkcore.auth.credentials import AccessKeyCredential, StsTokenCredential
    from aliyunsdkcore.client import AcsClient

    if credentials.security_token:
        cred = StsTokenCredential(credentials.access_key_id, credentials.access_key_secret, credentials.security_token)
    else:
        cred = AccessKeyCredential(credentials.access_key_id, credentials.access_key_secret)
    # Few SDK retries: the SDK retries only throttling/5xx/timeouts, and an auth refusal must
    # surface at once instead of becoming a retry storm.
    return AcsClient(region_id=region, credential=cred, auto_retry=retries > 0, max_retry_time=retries or None,
                     connect_timeout=min(timeout, 5), timeout=timeout)


def point_request(request, endpoint: str) -> None:
    """Send an RPC request to `endpoint` (https URL, or http on loopback)."""
    parsed = urlparse(endpoint)
    request.set_endpoint(parsed.netloc)
    request.set_protocol_type("http" if parsed.scheme == "http" else "https")


def call_rpc(client, request) -> tuple[dict, Optional[Exception]]:
    """Run an RPC request; return (body, None) or ({"Code": ..., "Message": ...}, error)."""
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


class DybaseapiTokenSource:
    """Fetches tokens through aliyun-python-sdk-dybaseapi."""

    def __init__(self, credentials: Credentials, endpoint: str, region: str = "cn-hangzhou", timeout: float = 10.0,
                 owner_id: Optional[str] = None):
        self.client = pop_client(credentials, region, timeout)
        self.owner_id = owner_id  # resellers and sub-accounts: whose queue the token is for
        # For callers with a deadline: one attempt within their time (SDK retries multiply it).
        self.single_client = pop_client(credentials, region, timeout, retries=0)
        self.timeout = timeout
        self.endpoint = endpoint
        self.calls = 0
        self._lock = threading.Lock()

    def fetch(self, message_type: str, timeout: Optional[float] = None) -> MnsToken:
        from aliyunsdkdybaseapi.request.v20170525.QueryTokenForMnsQueueRequest import QueryTokenForMnsQueueRequest

        request = QueryTokenForMnsQueueRequest()
        request.set_MessageType(message_type)
        if self.owner_id:
            request.set_OwnerId(self.owner_id)
        request.set_accept_format("json")
        point_request(request, self.endpoint)
        client = self.client
        if timeout is not None:
            client, seconds = self.single_client, max(0.1, min(self.timeout, timeout))
            request.set_read_timeout(seconds)
            request.set_connect_timeout(min(seconds, 5))
        with self._lock:  # the SDK client is shared; its signer is not built for threads
            self.calls += 1
            body, error = call_rpc(client, request)
        code = str(body.get("Code") or "")
        if error is not None or code != "OK":
            status = int(body.get("_status") or 0)
            retryable = status >= 500 or status == 429 or code in ("Throttling", "SDK.HttpError", "ServiceUnavailable")
            message = str(body.get("Message") or "")
            if code == "InvalidTimeStamp.Expired":
                message += " (this host's clock is more than 15 minutes off: check its time synchronisation)"
            raise TokenError(message_type, code or "Unknown", message, retryable)
        dto = body.get("MessageTokenDTO") or {}
        try:
            return MnsToken(
                access_key_id=dto["AccessKeyId"],
                access_key_secret=dto["AccessKeySecret"],
                security_token=dto["SecurityToken"],
                expire_at=parse_expire_time(dto["ExpireTime"]),
            )
        except (KeyError, TypeError, ValueError):
            raise TokenError(message_type, "InvalidResponse", "MessageTokenDTO missing or malformed") from None


class TokenCache:
    """One token per message type for the life of a warm container; thread-safe."""

    def __init__(self, source: TokenSource, clock: Clock = SYSTEM_CLOCK, refresh_buffer: float = 120.0):
        self.source = source
        self.clock = clock
        self.refresh_buffer = refresh_buffer
        self._tokens: dict[str, MnsToken] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def get(self, message_type: str, timeout: Optional[float] = None) -> MnsToken:
        """The cached token, fetched if missing or near expiry (within `timeout` seconds, if given:
        waiting for another thread's fetch included)."""
        token = self._tokens.get(message_type)
        if token is not None and token.seconds_left(self.clock.now()) >= self.refresh_buffer:
            return token  # the common case needs no lock: every consumer and delete thread asks per call
        started = self.clock.monotonic()
        if not self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise TokenError(message_type, "Deadline", "no time left to wait for a token being fetched", retryable=True)
        try:
            token = self._tokens.get(message_type)
            if token is None or token.seconds_left(self.clock.now()) < self.refresh_buffer:
                left = None if timeout is None else timeout - (self.clock.monotonic() - started)
                if left is not None and left <= 0.1:
                    raise TokenError(message_type, "Deadline", "no time left to fetch a token", retryable=True)
                self.fetches += 1  # count attempts: a refused call is still a call
                token = self.source.fetch(message_type) if left is None else self.source.fetch(message_type, left)
                self._tokens[message_type] = token
            return token
        finally:
            self._lock.release()

    def invalidate(self, message_type: str, token: Optional[MnsToken] = None) -> None:
        """Forget the token (after an auth error); a newer one fetched meanwhile is kept."""
        with self._lock:
            if token is None or self._tokens.get(message_type) is token:
                self._tokens.pop(message_type, None)
