"""The temporary credentials QueryTokenForMnsQueue hands out, each scoped to one
message type."""
from __future__ import annotations

import base64
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

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

