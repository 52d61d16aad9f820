"""`EmulatorBackend`: everything one emulator holds, the server-side clock, and the
customer's credentials (long-term keys and the STS credentials of a function role)."""
from __future__ import annotations

import base64
import math
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from ..exceptions import RpcError
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


@dataclass(frozen=True)
class RoleCredentials:
    """STS credentials of the customer's function role (what FC puts in ALIBABA_CLOUD_*)."""

    access_key_id: str
    access_key_secret: str
    security_token: str
    expires: float


class EmulatorBackend:
    def __init__(self, customer_keys: dict[str, str] | None = None, token_lifetime: float = 3600.0,
                 visibility_timeout: float = 30.0, seed: int | None = 0, uid: str = "1234567890",
                 clock: Callable[[], float] = time.time):
        self.uid = str(uid)
        self._host_clock = clock
        self.clock_skew = 0.0  # seconds the server's clock runs ahead of the host's
        self._keys_lock = threading.Lock()
        self._customer_keys = dict(customer_keys or {})
        self._role_credentials: dict[str, RoleCredentials] = {}
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
        """AccessKeyId -> secret of every key that may sign a request (role credentials included)."""
        with self._keys_lock:
            keys = dict(self._customer_keys)
            keys.update((c.access_key_id, c.access_key_secret) for c in self._role_credentials.values())
            return keys

    def issue_role_credentials(self, lifetime: float) -> RoleCredentials:
        rnd = uuid.uuid4().hex
        creds = RoleCredentials(
            access_key_id="STS.NK" + rnd[:22],
            access_key_secret=base64.b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes[:8]).decode("ascii"),
            security_token="CAIS" + base64.b64encode(uuid.uuid4().bytes * 5).decode("ascii"),
            expires=float(math.ceil(self.clock() + lifetime)))
        with self._keys_lock:
            self._role_credentials[creds.access_key_id] = creds
        return creds

    def expire_role_credentials(self) -> None:
        now = self.clock()
        with self._keys_lock:
            for ak, c in list(self._role_credentials.items()):
                self._role_credentials[ak] = RoleCredentials(c.access_key_id, c.access_key_secret,
                                                             c.security_token, min(c.expires, now))

    def check_security_token(self, ak: str, token: str | None) -> None:
        """A POP request signed with role credentials must carry their SecurityToken, unexpired.
        (Long-term keys need none; a token sent with one is ignored.)"""
        with self._keys_lock:
            creds = self._role_credentials.get(ak)
        if creds is None:
            return
        if not token:
            # The emulator's choice of code: the vendor does not publish one for this case.
            raise RpcError("MissingSecurityToken", "SecurityToken is mandatory for this AccessKeyId.", 400)
        if token != creds.security_token:
            raise RpcError("InvalidSecurityToken.MismatchWithAccessKey",
                           "Specified SecurityToken mismatch with the AccessKey.", 400)
        if self.clock() >= creds.expires:
            raise RpcError("InvalidSecurityToken.Expired", "Specified SecurityToken is expired.", 400)

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
