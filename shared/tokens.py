"""Temporary MNS credentials from Dybaseapi `QueryTokenForMnsQueue`, cached per message type.

Alicom's queues live in Alicom's account; a customer reads them with a short-lived STS
token. `ExpireTime` is Asia/Shanghai wall time: we parse it as such and compare aware
datetimes, so a UTC host neither keeps an expired token nor refreshes too early
(invariant 5). The cache refreshes `refresh_buffer` seconds before expiry and at once
after the queue refuses a token.
"""
from __future__ import annotations

import threading
from datetime import datetime
from typing import Optional, Protocol

import msgspec

from shared.clock import SYSTEM_CLOCK, Clock
from shared.decode import SHANGHAI, TIME_FORMAT
from shared.pop import Credentials, ThreadClients, call_rpc, is_retryable, is_throttling, point_request
from shared.structs import repr_hiding

__all__ = ["Credentials", "DybaseapiTokenSource", "MnsToken", "TokenCache", "TokenError", "TokenSource",
           "parse_expire_time"]


class TokenError(Exception):
    """The token API refused or failed. Carries the API's code, never a credential.

    `retryable`: another try may work (throttling, 5xx, a failed connection, no time to wait);
    `throttled`: the API asked us to slow down (back off longer, keep trying within the budget).
    """

    def __init__(self, message_type: str, code: str, message: str, retryable: bool = False,
                 throttled: bool = False):
        super().__init__(f"QueryTokenForMnsQueue({message_type}) failed: {code}: {message}")
        self.message_type = message_type
        self.code = code
        self.message = message
        self.retryable = retryable or throttled
        self.throttled = throttled


class MnsToken(msgspec.Struct, frozen=True):
    access_key_id: str
    access_key_secret: str
    security_token: str
    expire_at: datetime  # aware

    __repr__ = repr_hiding("access_key_id", "access_key_secret", "security_token")

    def seconds_left(self, now: datetime) -> float:
        # total_seconds(), not .seconds: a token past expiry must read as negative.
        return (self.expire_at - now).total_seconds()


def parse_expire_time(text: str) -> datetime:
    """`yyyy-MM-dd HH:mm:ss` in Asia/Shanghai -> aware datetime."""
    return datetime.strptime(text.strip(), TIME_FORMAT).replace(tzinfo=SHANGHAI)


class TokenSource(Protocol):
    def fetch(self, message_type: str, timeout: Optional[float] = None) -> MnsToken: ...


class DybaseapiTokenSource:
    """Fetches tokens through aliyun-python-sdk-dybaseapi; thread-safe (one SDK client per thread)."""

    def __init__(self, credentials: Credentials, endpoint: str, region: str, timeout: float,
                 owner_id: Optional[str] = None):
        self.credentials, self.region = credentials, region
        self.owner_id = owner_id  # resellers and sub-accounts: whose queue the token is for
        self.timeout = timeout
        self.endpoint = endpoint
        self._clients = ThreadClients(credentials, region, timeout)

    def fetch(self, message_type: str, timeout: Optional[float] = None) -> MnsToken:
        from aliyunsdkdybaseapi.request.v20170525.QueryTokenForMnsQueueRequest import QueryTokenForMnsQueueRequest

        request = QueryTokenForMnsQueueRequest()
        request.set_MessageType(message_type)
        if self.owner_id:
            request.set_OwnerId(self.owner_id)
        point_request(request, self.endpoint)
        if timeout is not None:
            seconds = max(0.1, min(self.timeout, timeout))
            request.set_read_timeout(seconds)
            request.set_connect_timeout(min(seconds, 5))
        body, error = call_rpc(self._clients.get(), request)
        code = str(body.get("Code") or "")
        if error is not None or code != "OK":
            status = int(body.get("_status") or 0)
            message = str(body.get("Message") or "")[:300]
            if code == "InvalidTimeStamp.Expired":
                message += " (this host's clock is more than 15 minutes off: check its time synchronisation)"
            raise TokenError(message_type, code or "Unknown", message, retryable=is_retryable(code, status),
                             throttled=is_throttling(code, status))
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
    """One token per message type for the life of a warm container; thread-safe.

    Each message type has its own lock, so a slow or hung token call for one type never
    holds up another type's consumers. A refusal that retrying cannot fix is remembered until
    `forget_refusals()` (the drain calls it at the start of every run): the other consumers of
    that type get the same answer at once instead of asking again.
    """

    def __init__(self, source: TokenSource, clock: Clock = SYSTEM_CLOCK, refresh_buffer: float = 120.0):
        self.source = source
        self.clock = clock
        self.refresh_buffer = refresh_buffer
        self._tokens: dict[str, MnsToken] = {}
        self._refused: dict[str, TokenError] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._count = threading.Lock()
        self.fetches = 0

    def _lock_of(self, message_type: str) -> threading.Lock:
        lock = self._locks.get(message_type)
        if lock is None:
            with self._locks_lock:
                lock = self._locks.setdefault(message_type, threading.Lock())
        return lock

    def _fresh(self, message_type: str) -> Optional[MnsToken]:
        token = self._tokens.get(message_type)
        if token is not None and token.seconds_left(self.clock.now()) >= self.refresh_buffer:
            return token
        return None

    def _raise_refused(self, message_type: str) -> None:
        refused = self._refused.get(message_type)
        if refused is not None:  # a new exception per caller: threads must not share one traceback
            raise TokenError(message_type, refused.code, refused.message)

    def get(self, message_type: str, timeout: Optional[float] = None) -> MnsToken:
        """The cached token, fetched if missing or near expiry (within `timeout` seconds, if given:
        waiting for another thread's fetch included)."""
        token = self._fresh(message_type)
        if token is not None:
            return token  # the common case needs no lock: every consumer and delete thread asks per call
        self._raise_refused(message_type)
        started = self.clock.monotonic()
        lock = self._lock_of(message_type)
        if not lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise TokenError(message_type, "Deadline", "no time left to wait for a token being fetched", retryable=True)
        try:
            token = self._fresh(message_type)
            if token is not None:
                return token
            self._raise_refused(message_type)
            left = None if timeout is None else timeout - (self.clock.monotonic() - started)
            if left is not None and left <= 0.1:
                raise TokenError(message_type, "Deadline", "no time left to fetch a token", retryable=True)
            with self._count:
                self.fetches += 1  # count attempts: a refused call is still a call
            try:
                token = self.source.fetch(message_type) if left is None else self.source.fetch(message_type, left)
            except TokenError as exc:
                if not exc.retryable:
                    self._refused[message_type] = exc
                raise
            self._tokens[message_type] = token
            return token
        finally:
            lock.release()

    def invalidate(self, message_type: str, token: Optional[MnsToken] = None) -> None:
        """Forget the token (after an auth error); a newer one fetched meanwhile is kept."""
        with self._lock_of(message_type):
            if token is None or self._tokens.get(message_type) is token:
                self._tokens.pop(message_type, None)

    def forget_refusals(self) -> None:
        """Ask again next time: a refusal is remembered for one run only."""
        self._refused.clear()
