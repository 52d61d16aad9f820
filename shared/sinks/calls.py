"""Network calls of the cloud sinks, bounded by a write's deadline.

Every call a cloud sink makes goes through `call()`: attempts with full-jitter backoff
(shared/retry.py), each attempt told how many seconds it may take, so that the whole call,
retries included, returns or raises `SinkError` before the deadline. The SDKs' own retries
are off (they do not know the deadline); `retryable` decides what is tried again.

Socket timeouts are what actually bound an attempt, and botocore and the Tablestore SDK fix
them per client. `ClientsByTimeout` keeps one client per step of a short ladder of attempt
budgets, built on first use and cached: a run far from its deadline uses the top step's
client only; the smaller ones are built when a deadline comes near.

An attempt with budget `b` gets connect and read timeouts whose worst case fits `b`: urllib3
(under botocore, requests/oss2 and the Tablestore SDK) waits up to the connect timeout for
each connection try and again for sending the request, then up to the read timeout for the
answer. A name lookup (DNS) is not bounded by socket timeouts; endpoints are resolved once
per connection and the connections are kept.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, Optional, TypeVar

from shared.clock import Deadline
from shared.retry import Backoff, OutOfTime, retry_call
from shared.sinks.base import SinkError

T = TypeVar("T")
C = TypeVar("C")

# Attempt budgets (seconds) that get a client of their own: about x1.6 apart, so an attempt
# near a deadline loses at most a third of the time it could have had.
STEPS = (0.25, 0.4, 0.6, 1.0, 1.6, 2.5, 4.0, 6.0, 10.0, 16.0, 25.0, 40.0)
DEFAULT_ATTEMPT = STEPS[-1]  # no deadline (reconcile, tools): connect 4 s, read up to 32 s
MIN_ATTEMPT = STEPS[0]  # below this an attempt is not worth starting
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Timeouts:
    connect: float
    read: float


def step(seconds: float) -> float:
    """The largest step that fits in `seconds` (the smallest step if none does)."""
    fitting = [s for s in STEPS if s <= seconds]
    return fitting[-1] if fitting else STEPS[0]


def timeouts(budget: float, connects: int = 1) -> Timeouts:
    """Connect and read timeouts whose worst case fits `budget`.

    `connects` is how many connection tries one attempt may make (urllib3 retries a failed
    connect by itself where its caller does not turn that off); the send waits up to the
    connect timeout once more.
    """
    connect = min(CONNECT_TIMEOUT, budget * 0.1)
    # 5 % of the budget is left for what is not socket time (signing, parsing, building a client).
    return Timeouts(connect, budget * 0.95 - (connects + 1) * connect)


class ClientsByTimeout(Generic[C]):
    """One SDK client per attempt budget step, built on first use (under a lock: building a
    boto3 client is not thread-safe) and cached for the container's life."""

    def __init__(self, build: Callable[[Timeouts], C], connects: int = 1):
        self._build, self._connects = build, connects
        self._clients: dict[float, C] = {}
        self._lock = threading.Lock()

    def for_attempt(self, seconds: float) -> C:
        budget = step(seconds)
        client = self._clients.get(budget)
        if client is None:
            with self._lock:
                client = self._clients.get(budget)
                if client is None:
                    client = self._clients[budget] = self._build(timeouts(budget, self._connects))
        return client

    def all(self) -> list[C]:
        with self._lock:
            return list(self._clients.values())


def call(backend: str, what: str, attempt: Callable[[float], T], *, deadline: Optional[Deadline],
         retryable: Callable[[BaseException], bool], describe: Callable[[BaseException], str],
         backoff: Backoff, sleep: Callable[[float], None] = time.sleep) -> T:
    """`attempt(seconds)` until it returns, within `deadline`; else `SinkError` saying why.

    The error names `what` failed, the backend's reason (`describe`), the attempts made and,
    when retrying stopped because the deadline was near, that too. A `SinkError` raised by an
    attempt (e.g. `ItemsRefused`) passes through as it is.
    """
    tries = 0

    def counted(seconds: float) -> T:
        nonlocal tries
        tries += 1
        return attempt(seconds)

    try:
        return retry_call(counted, retryable=lambda exc: not isinstance(exc, SinkError) and retryable(exc),
                          backoff=backoff, deadline=deadline, attempt_timeout=DEFAULT_ATTEMPT,
                          min_attempt=MIN_ATTEMPT, sleep=sleep)
    except SinkError:
        raise
    except OutOfTime:
        left = max(0.0, deadline.remaining()) if deadline is not None else 0.0
        raise SinkError(backend, f"{what}: no time left before the write's deadline ({left:.2f} s left)") from None
    except Exception as exc:
        reason = f"{what} failed: {describe(exc)}"
        if tries > 1:
            reason += f" after {tries} attempts"
        if deadline is not None and retryable(exc) and tries < backoff.attempts:
            reason += f"; stopped retrying: {max(0.0, deadline.remaining()):.2f} s left before the write's deadline"
        # `from None`: the SDK's exception chain can carry request details (signatures, headers).
        raise SinkError(backend, reason) from None
