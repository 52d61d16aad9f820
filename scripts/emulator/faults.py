"""Injected latency and faults, drawn from a seeded RNG.

A fault is decided *before* a request touches any state, so a faulted request
changes nothing — except `drop_after_commit`, which runs the request and then
loses the answer (a delete that happened although the client never heard so).

Kinds:
  server_error       HTTP 500 InternalError (service's own error body)
  throttle           the service's throttling answer: `throttle_code` picks it
                     (see exceptions.THROTTLING: MNS QpsLimitExceeded / TooManyRequests
                     429, ServiceUnavailable 503; POP Throttling.User / Throttling /
                     Throttling.Api 400, ServiceUnavailable 503) and sets the status to
                     that code's own; `throttle_status` overrides it. With no code: the
                     service's default code at HTTP 429.
  drop               close the connection without answering, nothing applied
  drop_after_commit  apply the request, then close without answering
  slow               sleep `slow_seconds` (meant to exceed the client's socket
                     timeout), then answer 500 InternalError; nothing applied
  hang               read the request, then never answer: the connection is held
                     until the client hangs up, the fault no longer covers the
                     request (set_faults changed) or the emulator stops; then it is
                     closed without an answer. Nothing applied.

Scope (`apis`): None means every non-admin request; otherwise a set of action
names (e.g. "BatchDeleteMessage") and/or groups: "mns", "rpc", "token"
(= QueryTokenForMnsQueue), "sms" (= QuerySendDetails), "functions", "fc", "lambda".
`message_types` narrows the scope further to the requests of those message types:
MNS requests on their queues (Alicom-Queue-<uid>-<type>) and QueryTokenForMnsQueue
calls for them; requests of no message type are then left alone.
`throttle_code` is one code (used by the services that have it; the others keep
their default) or a mapping service -> code, e.g. {"rpc": "Throttling.User",
"mns": "ServiceUnavailable"}.
"""
from __future__ import annotations

import random
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from .exceptions import THROTTLING, EmulatorError, throttling_error

FAULT_KINDS = ("server_error", "throttle", "drop", "drop_after_commit", "slow", "hang")
_GROUP_ALIASES = {"token": "QueryTokenForMnsQueue", "sms": "QuerySendDetails"}


@dataclass(frozen=True)
class FaultConfig:
    server_error: float = 0.0
    throttle: float = 0.0
    drop: float = 0.0
    drop_after_commit: float = 0.0
    slow: float = 0.0
    hang: float = 0.0
    slow_seconds: float = 0.0
    throttle_status: int | None = None
    throttle_code: str | dict | None = None
    apis: frozenset | None = None
    message_types: frozenset | None = None

    def __post_init__(self):
        probs = [getattr(self, k) for k in FAULT_KINDS]
        if any(p < 0 or p > 1 for p in probs) or sum(probs) > 1.0 + 1e-9:
            raise ValueError("fault probabilities must be in [0, 1] and sum to at most 1")
        if self.slow and self.slow_seconds <= 0:
            raise ValueError("slow faults need slow_seconds > 0")
        if self.throttle_status is not None and not 400 <= self.throttle_status <= 599:
            raise ValueError("throttle_status must be an HTTP error status (400-599)")
        _check_throttle_code(self.throttle_code)

    def throttle_error(self, service: str) -> EmulatorError:
        code = self.throttle_code
        if isinstance(code, dict):
            code = code.get(service)
        return throttling_error(service, code, self.throttle_status)

    def applies_to(self, action: str, service: str, message_type: str | None = None) -> bool:
        if self.message_types is not None and message_type not in self.message_types:
            return False
        if self.apis is None:
            return True
        return (action in self.apis or service in self.apis
                or ("functions" in self.apis and service in ("fc", "lambda")))

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in FAULT_KINDS}
        d.update(slow_seconds=self.slow_seconds, throttle_status=self.throttle_status,
                 throttle_code=self.throttle_code, apis=None if self.apis is None else sorted(self.apis),
                 message_types=None if self.message_types is None else sorted(self.message_types))
        return d


def _check_throttle_code(code) -> None:
    if code is None:
        return
    if isinstance(code, str):
        if not any(code in table for table in THROTTLING.values()):
            raise ValueError(f"unknown throttle_code {code!r}; known: "
                             + ", ".join(sorted({c for t in THROTTLING.values() for c in t})))
        return
    if not isinstance(code, dict):
        raise TypeError("throttle_code is a code or a mapping service -> code")
    for service, c in code.items():
        if service not in THROTTLING:
            raise ValueError(f"throttle_code: unknown service {service!r}; known: {', '.join(THROTTLING)}")
        if c not in THROTTLING[service]:
            raise ValueError(f"throttle_code: {service} has no code {c!r}; known: {', '.join(THROTTLING[service])}")


@dataclass(frozen=True)
class Decision:
    delay: float = 0.0
    fault: str | None = None
    config: FaultConfig | None = None      # the configuration that decided it


NO_FAULT = Decision()


def normalize_apis(apis) -> frozenset | None:
    if apis is None:
        return None
    if isinstance(apis, str):
        apis = [apis]
    out = set()
    for a in apis:
        out.add(a)
        low = a.lower()
        if low in ("mns", "rpc", "functions", "fc", "lambda"):
            out.add(low)
        if low in _GROUP_ALIASES:
            out.add(_GROUP_ALIASES[low])
    return frozenset(out)


class FaultInjector:
    def __init__(self, seed: int | None = 0, latency: float = 0.0, jitter: float = 0.0):
        self._lock = threading.Lock()
        # Two RNGs: jitter draws must not shift which requests get faults.
        self._fault_rng = random.Random(None if seed is None else f"faults-{seed}")
        self._jitter_rng = random.Random(None if seed is None else f"jitter-{seed}")
        self.config = FaultConfig()
        self.set_latency(latency, jitter)
        self._hung = 0

    def set_latency(self, seconds: float, jitter: float = 0.0) -> None:
        if seconds < 0 or jitter < 0:
            raise ValueError("latency and jitter must be >= 0")
        with self._lock:
            self.latency, self.jitter = float(seconds), float(jitter)

    def set_faults(self, **kwargs) -> None:
        kwargs["apis"] = normalize_apis(kwargs.get("apis"))
        types = kwargs.get("message_types")
        if types is not None:
            kwargs["message_types"] = frozenset([types] if isinstance(types, str) else types)
        config = FaultConfig(**kwargs)
        with self._lock:
            self.config = config

    # -- hung requests (a stopping server lets them go by shutting their sockets down) --

    def still_hangs(self, action: str, service: str, message_type: str | None = None) -> bool:
        """True while a hung request should stay unanswered."""
        with self._lock:
            cfg = self.config
        return bool(cfg.hang) and cfg.applies_to(action, service, message_type)

    @contextmanager
    def hanging(self):
        with self._lock:
            self._hung += 1
        try:
            yield
        finally:
            with self._lock:
                self._hung -= 1

    def hung_requests(self) -> int:
        """How many requests are being held unanswered right now."""
        with self._lock:
            return self._hung

    def reseed(self, seed: int | None) -> None:
        with self._lock:
            self._fault_rng.seed(None if seed is None else f"faults-{seed}")
            self._jitter_rng.seed(None if seed is None else f"jitter-{seed}")

    def decide(self, action: str, service: str, message_type: str | None = None) -> Decision:
        """Latency for this request and the fault to inject, if any."""
        with self._lock:
            cfg, latency, jitter = self.config, self.latency, self.jitter
            delay = latency
            if jitter:
                delay = max(0.0, latency + self._jitter_rng.uniform(-jitter, jitter))
            fault = None
            if cfg.applies_to(action, service, message_type) and any(getattr(cfg, k) for k in FAULT_KINDS):
                r = self._fault_rng.random()
                acc = 0.0
                for kind in FAULT_KINDS:
                    acc += getattr(cfg, kind)
                    if r < acc:
                        fault = kind
                        break
        if not delay and fault is None:
            return NO_FAULT
        return Decision(delay, fault, cfg)
