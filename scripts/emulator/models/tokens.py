"""The temporary credentials QueryTokenForMnsQueue hands out, each scoped to one
message type; per-type refusals; a log of the calls (what the client sent, no
secrets); and expiry triggered by an MNS action (a token that dies between a
receive and its delete)."""
from __future__ import annotations

import base64
import math
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable

MAX_LOGGED_REQUESTS = 10000


@dataclass(frozen=True)
class TokenRefusal:
    """QueryTokenForMnsQueue refused for one message type: an HTTP error with this
    code (status 4xx/5xx), or a 200 whose Code is it (status 200)."""

    code: str
    message: str
    status: int = 403


@dataclass(frozen=True)
class TokenRequest:
    """One authenticated QueryTokenForMnsQueue call, as the client sent it."""

    message_type: str
    queue_name: str | None
    owner_id: str | None
    answer: str          # "OK" or the code it was refused with
    time: float
    region_id: str | None = None  # the RegionId the SDK signs in (the client's region)


@dataclass
class TokenGrant:
    access_key_id: str
    access_key_secret: str
    security_token: str
    message_type: str
    customer_ak: str
    created: float
    expires: float

    def allows_queue(self, queue_name: str) -> bool:
        return queue_name.endswith("-" + self.message_type)


class TokenStore:
    def __init__(self, lifetime: float = 3600.0, clock: Callable[[], float] = time.time):
        self.lifetime = float(lifetime)
        self.clock = clock
        self._lock = threading.Lock()
        self._by_token: dict[str, TokenGrant] = {}
        self._refusals: dict[str, TokenRefusal] = {}
        self._requests: list[TokenRequest] = []
        self._expire_on: Counter = Counter()      # MNS action -> requests still to find tokens expired

    # -- refusals and the request log --------------------------------------------

    def refuse(self, message_type: str, refusal: TokenRefusal | None) -> None:
        with self._lock:
            if refusal is None:
                self._refusals.pop(message_type, None)
            else:
                self._refusals[message_type] = refusal

    def refusal_for(self, message_type: str) -> TokenRefusal | None:
        with self._lock:
            return self._refusals.get(message_type)

    def record(self, message_type: str, queue_name: str | None, owner_id: str | None, answer: str,
               region_id: str | None = None) -> None:
        with self._lock:
            if len(self._requests) >= MAX_LOGGED_REQUESTS:
                del self._requests[: MAX_LOGGED_REQUESTS // 2]
            self._requests.append(TokenRequest(message_type, queue_name, owner_id, answer, self.clock(), region_id))

    def requests(self) -> list[dict]:
        with self._lock:
            return [asdict(r) for r in self._requests]

    def expire_on(self, action: str, times: int = 1) -> None:
        with self._lock:
            self._expire_on[action] += times

    def take_expiry(self, action: str) -> bool:
        """True (once per armed time) if this request of `action` must find every token expired."""
        with self._lock:
            if self._expire_on[action] <= 0:
                return False
            self._expire_on[action] -= 1
            return True

    def issue(self, customer_ak: str, message_type: str) -> TokenGrant:
        now = self.clock()
        # ExpireTime is shown to the second; expire exactly at the shown second so
        # a client comparing ExpireTime with its clock agrees with the server.
        expires = float(math.ceil(now + self.lifetime))
        rnd = uuid.uuid4().hex + uuid.uuid4().hex
        grant = TokenGrant(
            access_key_id="STS.NV" + rnd[:20],
            access_key_secret=base64.b64encode(bytes.fromhex(rnd[20:52])).decode("ascii").rstrip("="),
            security_token="CAIS" + base64.b64encode(uuid.uuid4().bytes * 6).decode("ascii"),
            message_type=message_type,
            customer_ak=customer_ak,
            created=now,
            expires=expires,
        )
        with self._lock:
            self._drop_long_expired(now)
            self._by_token[grant.security_token] = grant
        return grant

    def lookup(self, security_token: str) -> TokenGrant | None:
        with self._lock:
            return self._by_token.get(security_token)

    def grants(self) -> list[TokenGrant]:
        """Every token still remembered (tests check none of them leaks into output)."""
        with self._lock:
            return list(self._by_token.values())

    def expire_all(self) -> None:
        now = self.clock()
        with self._lock:
            for g in self._by_token.values():
                g.expires = min(g.expires, now)

    def _drop_long_expired(self, now: float) -> None:
        # Keep expired grants for a day so they are refused as "expired", not "unknown".
        if len(self._by_token) > 10000:
            for k in [k for k, g in self._by_token.items() if g.expires < now - 86400]:
                del self._by_token[k]

