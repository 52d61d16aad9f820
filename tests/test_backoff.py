"""The backoff schedules of shared/retry.py: full jitter for our own calls, and exponential plus
jitter for an API that asks us to slow down (QuerySendDetails), which must never wait less."""
from __future__ import annotations

import random

from shared.retry import Backoff, ExponentialBackoff

# (retry, lowest, highest) for base 0.1 s, cap 0.4 s: 0.1, 0.2, 0.4, then capped at 0.4.
EXPONENTIAL = [(0, 0.1, 0.2), (1, 0.2, 0.3), (2, 0.4, 0.5), (3, 0.4, 0.5), (10, 0.4, 0.5)]


def test_exponential_backoff_waits_at_least_the_exponential_step_plus_at_most_base():
    backoff = ExponentialBackoff(attempts=5, base=0.1, cap=0.4)
    rng = random.Random(5)
    for retry, low, high in EXPONENTIAL:
        delays = [backoff.delay(retry, rng) for _ in range(200)]
        assert low <= min(delays) and max(delays) <= high, (retry, min(delays), max(delays))
        assert max(delays) - min(delays) > 0.05, "no jitter"


def test_full_jitter_backoff_stays_below_its_ceiling_and_may_be_short():
    backoff = Backoff(attempts=5, base=0.1, cap=0.4)
    rng = random.Random(5)
    delays = [backoff.delay(2, rng) for _ in range(200)]
    assert 0 <= min(delays) < 0.1 and max(delays) <= 0.4
