"""`EmulatorBackend`: everything one emulator holds, and the server-side clock."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from .functions import FunctionRegistry
from .queues import QueueBackend
from .send_records import SendRecordStore
from .stats import RequestStats
from .tokens import TokenStore

@dataclass
class RpcRefusal:
    """A configured business refusal: HTTP 200 with a non-OK Code."""

    code: str
    message: str
    actions: frozenset | None = None    # None: every RPC action


class EmulatorBackend:
    def __init__(self, customer_keys: dict[str, str] | None = None, token_lifetime: float = 3600.0,
                 visibility_timeout: float = 30.0, seed: int | None = 0, uid: str = "1234567890",
                 clock: Callable[[], float] = time.time):
        self.uid = str(uid)
        self._host_clock = clock
        self.clock_skew = 0.0  # seconds the server's clock runs ahead of the host's
        self._keys_lock = threading.Lock()
        self._customer_keys = dict(customer_keys or {})
        self.queues = QueueBackend(visibility_timeout, seed, clock)
        self.tokens = TokenStore(token_lifetime, clock)
        self.stats = RequestStats()
        self.rpc_refusal: RpcRefusal | None = None
        self.send_records = SendRecordStore()
        self.functions = FunctionRegistry()
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._nonce_lock = threading.Lock()

    def clock(self) -> float:
        """The server's time for request checks (Date/Timestamp windows, token expiry):
        host time plus `clock_skew`. Queues and tokens keep host time."""
        return self._host_clock() + self.clock_skew

    def customer_keys(self) -> dict[str, str]:
        with self._keys_lock:
            return dict(self._customer_keys)

    def add_customer_keys(self, keys: dict[str, str]) -> None:
        with self._keys_lock:
            self._customer_keys.update(keys)

    def queue_name(self, message_type: str) -> str:
        return f"Alicom-Queue-{self.uid}-{message_type}"

    def use_nonce(self, nonce: str) -> bool:
        """Remember a SignatureNonce for 15 minutes; False if it was already used."""
        now = self.clock()
        with self._nonce_lock:
            while self._nonces:
                oldest, t = next(iter(self._nonces.items()))
                if t > now - 900 and len(self._nonces) < 100000:
                    break
                del self._nonces[oldest]
            if nonce in self._nonces:
                return False
            self._nonces[nonce] = now
            return True
