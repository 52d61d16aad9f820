"""Retries with backoff inside a deadline: the one retry policy of every call we make.

Full-jitter exponential backoff: the sleep before retry n (0-based) is uniform in
[0, min(cap, base * 2**n)]. A call is tried again only when its error is retryable,
attempts remain, and the sleep plus the shortest useful attempt still fit before the
deadline. Each attempt is told how many seconds it may take, so the caller can set its
socket timeouts from the time left: a hung endpoint then ends the call, retries included,
before the deadline (docs/ARCHITECTURE.md, invariant 3).

Why not tenacity: importing it pulls in asyncio, about 70 ms at every cold start of a
function that needs none of it (and one loop for every call keeps one idea in one place).
"""
from __future__ import annotations

import random
import time
from typing import Callable, Optional, TypeVar

import msgspec

from shared.clock import Deadline

T = TypeVar("T")


class OutOfTime(TimeoutError):
    """Not even one attempt fits in the time left; nothing was called."""


class Backoff(msgspec.Struct, frozen=True):
    attempts: int = 5  # tries in all, the first included
    base: float = 0.1  # seconds; the ceiling of the first sleep
    cap: float = 2.0  # the longest single sleep

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """The sleep before retry `retry` (0 = before the second attempt)."""
        ceiling = min(self.cap, self.base * 2 ** min(retry, 32))
        return (rng or random).uniform(0, ceiling)


class ExponentialBackoff(Backoff, frozen=True):
    """`base * 2**n` (at most `cap`) plus up to `base` of jitter: an API that asks us to slow
    down (QuerySendDetails' flow control) gets at least the exponential wait, never less."""

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        return min(self.cap, self.base * 2 ** min(retry, 32)) + (rng or random).uniform(0, self.base)


def retry_call(attempt: Callable[[float], T], *, retryable: Callable[[BaseException], bool], backoff: Backoff,
               deadline: Optional[Deadline] = None, attempt_timeout: float = 30.0, min_attempt: float = 0.2,
               sleep: Callable[[float], None] = time.sleep,
               on_retry: Optional[Callable[[BaseException, float], None]] = None) -> T:
    """`attempt(timeout)` until it returns; `timeout` is the seconds this attempt may take.

    Raises the attempt's own error when it is not retryable, when the attempts are used up,
    or when the next sleep would leave less than `min_attempt` before `deadline`; raises
    `OutOfTime` when not even the first attempt fits.
    """
    last: Optional[BaseException] = None
    for n in range(max(1, backoff.attempts)):
        timeout = attempt_timeout if deadline is None else min(attempt_timeout, deadline.remaining())
        if timeout < min_attempt:
            if last is not None:  # the sleep overran what was left: the last error stands
                raise last
            raise OutOfTime(f"{timeout:.2f} s left, an attempt needs at least {min_attempt:.2f} s")
        try:
            return attempt(timeout)
        except Exception as exc:
            last = exc
            if not retryable(exc) or n + 1 >= backoff.attempts:
                raise
            delay = backoff.delay(n)
            if deadline is not None and deadline.remaining() - delay < min_attempt:
                raise
            if on_retry is not None:
                on_retry(exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises
