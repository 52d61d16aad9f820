"""A host clock more than 15 minutes off: a clear error at once, not a retry loop.

The real services refuse such requests (MNS: 408 TimeExpired; POP RPC: InvalidTimeStamp.Expired).
Retrying cannot help until the clock is fixed, so the drain must stop with an error that says
the clock is off, after few requests, and leave every message in the queue.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from functions.drain import handler
from scripts.receipts import make_receipts
from shared.platform import RunFailed
from shared.settings import Settings
from tests.conftest import TYPES
from tests.contexts import fc_context

SKEW = 20 * 60
WORKERS = len(TYPES) * Settings.default("concurrency")  # consumers per queue (DRAIN_CONCURRENCY's default)


def fill(emulator, n: int = 20) -> int:
    for mtype in TYPES:
        for body in make_receipts(mtype, n, seed=5):
            emulator.enqueue_receipt(emulator.queue_name(mtype), body)
    return n * len(TYPES)


def left(emulator) -> int:
    return sum(emulator.queue_state(emulator.queue_name(t))["visible"] for t in TYPES)


@pytest.mark.parametrize("skew", [SKEW, -SKEW])
def test_cold_start_with_a_skewed_clock_stops_at_once_saying_so(emulator, drain_env, skew):
    env = dict(os.environ, **drain_env())
    total = fill(emulator)
    emulator.set_clock_skew(skew)
    emulator.reset_stats()
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "scripts.invoke_local", "drain", "--platform", "fc", "--timeout", "30",
                           "--timer"], env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 1 and not result["ok"]
    assert result["stop_reason"] == "token_error"
    assert "clock" in result["error"].lower() and "InvalidTimeStamp.Expired" in result["error"]
    stats = emulator.stats()
    assert stats["QueryTokenForMnsQueue"] <= WORKERS, stats  # at most one refused call per consumer
    assert stats["BatchReceiveMessage"] == 0
    assert took < 15, f"took {took:.1f}s: retried instead of stopping"
    assert left(emulator) == total


@pytest.mark.parametrize("skew", [SKEW, -SKEW])
def test_warm_container_whose_clock_drifts_stops_at_once_saying_so(emulator, drain_env, skew):
    fill(emulator, 5)
    first = handler(b"{}", fc_context(timeout=30))  # tokens now cached for the warm container
    assert first["ok"] and first["totals"]["stored"] == 5 * len(TYPES)
    total = fill(emulator, 10)
    emulator.set_clock_skew(skew)
    emulator.reset_stats()
    with pytest.raises(RunFailed, match="queue_error") as failed:
        handler(b"{}", fc_context(timeout=30))
    second = failed.value.summary
    assert not second["ok"] and second["stop_reason"] == "queue_error"
    assert "TimeExpired" in second["error"] and "clock" in second["error"].lower()
    stats = emulator.stats()
    # One refused receive per consumer at most; no backoff-and-retry rounds.
    assert stats["BatchReceiveMessage"] <= WORKERS, stats
    assert stats["BatchDeleteMessage"] == 0
    assert second["elapsed_seconds"] < 3, second
    assert left(emulator) == total
    emulator.set_clock_skew(0)
    third = handler(b"{}", fc_context(timeout=30))
    assert third["ok"] and third["totals"]["stored"] == total and left(emulator) == 0
