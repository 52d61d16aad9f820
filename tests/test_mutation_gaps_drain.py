"""Tests that close gaps a mutation run (scripts/mutation/run) found in shared/drain.py.

A failing receive is tried again after a full-jitter sleep whose ceiling doubles from the
policy's base: ERROR_BACKOFF (0.2 s, cap 2 s) for a 5xx, THROTTLE_BACKOFF (0.25 s, cap 4 s) for
"slow down". A sleep drawn from a later step wastes the run's budget on the first retries.
Over real sockets to the emulator; only the clock is injected (it records each sleep asked
for and sleeps a fiftieth of it).
"""
from __future__ import annotations

import logging
import time

import pytest

from shared.clock import SYSTEM_CLOCK, Deadline
from shared.drain import Drain, DrainOptions
from shared.runtime import drain_runtime
from tests.test_drain_bounds import enqueue


class _RecordingClock:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def now(self):
        return SYSTEM_CLOCK.now()

    def monotonic(self) -> float:
        return SYSTEM_CLOCK.monotonic()

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        SYSTEM_CLOCK.sleep(seconds / 50)


# The ceiling of each sleep between tries, written out: min(cap, base * 2**n).
ERROR_CEILINGS = [0.2, 0.4, 0.8, 1.6, 2.0]  # six tries, five sleeps
THROTTLE_CEILINGS = [0.25, 0.5, 1.0, 2.0] + [4.0] * 11  # sixteen tries, fifteen sleeps


@pytest.mark.parametrize("fault,ceilings", [({"server_error": 1.0}, ERROR_CEILINGS),
                                            ({"throttle": 1.0}, THROTTLE_CEILINGS)], ids=["server-error", "throttled"])
def test_each_sleep_between_failed_receives_stays_under_its_step_of_the_backoff(emulator, drain_env, fault, ceilings):
    drain_env()
    enqueue(emulator, "SmsReport", 5)
    emulator.set_faults(apis=["BatchReceiveMessage"], **fault)
    runtime = drain_runtime()
    clock = _RecordingClock()
    drain = Drain(runtime.tokens, runtime.open_queue, runtime.sink, DrainOptions(wait_seconds=0, concurrency=1),
                  clock=clock)
    summary = drain.run(["SmsReport"], Deadline(60.0))
    assert (summary.ok, summary.stop_reason) == (False, "queue_error")
    assert len(clock.sleeps) == len(ceilings)
    # Each sleep is random below its ceiling. Sleeps drawn two steps late (delay(n + 1) for
    # delay(n - 1)) stay under these by chance in 1 run of 50 (5xx), 1 of 128 (throttled).
    over = [(n, round(s, 3), c) for n, (s, c) in enumerate(zip(clock.sleeps, ceilings)) if s > c]
    assert over == []


def test_a_throttled_receive_stops_with_its_error_when_no_time_is_left_for_another_try(emulator, drain_env):
    """With 4 s in all, THROTTLE_BACKOFF's growing waits leave no time for a next try long before
    its sixteen tries are used: the consumer stops there, the type fails with its error, and the
    throttled API is not asked again at once (a mutant that skipped the wait made all sixteen)."""
    drain_env()
    enqueue(emulator, "SmsReport", 3)
    emulator.set_faults(throttle=1.0, apis=["BatchReceiveMessage"])
    emulator.reset_stats()
    runtime = drain_runtime()
    drain = Drain(runtime.tokens, runtime.open_queue, runtime.sink, DrainOptions(wait_seconds=0, concurrency=1),
                  clock=SYSTEM_CLOCK)
    started = time.monotonic()
    try:
        summary = drain.run(["SmsReport"], Deadline(4.0))
    finally:
        emulator.set_faults()
    took = time.monotonic() - started
    assert (summary.ok, summary.stop_reason) == (False, "queue_error")
    assert 1 <= emulator.stats()["BatchReceiveMessage"] < 16
    assert took < 4.0, took  # no wait that outlasts the run's time (a mutant slept past it)


@pytest.mark.parametrize("written_at,deleted", [(3.0, False), (2.5, True)], ids=["1.0s-left", "1.5s-left"])
def test_a_delete_is_made_while_more_than_half_the_safety_margin_is_left(emulator, drain_env, tmp_path, written_at,
                                                                        deleted):
    """Deletes keep half the safety margin (2 s by default) in reserve: a write that returns with
    1.5 s of a 4 s run left is deleted; one that returns with 1.0 s left is not, and its handles are
    reported failed with 'deadline' (the messages come back after the visibility timeout and dedupe)."""
    from shared.sinks.file import FileSink

    class LateFileSink(FileSink):
        def write(self, records, dead_letters, deadline=None):
            SYSTEM_CLOCK.sleep(max(0.0, wake_at - time.monotonic()))
            return super().write(records, dead_letters, deadline)

    drain_env()
    enqueue(emulator, "SmsReport", 3)
    runtime = drain_runtime()
    logger = logging.getLogger(f"test-late-delete-{written_at}")
    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append  # type: ignore[method-assign]  # a stdlib handler that keeps records
    logger.addHandler(handler)
    drain = Drain(runtime.tokens, runtime.open_queue, LateFileSink(tmp_path), DrainOptions(wait_seconds=0,
                  concurrency=1, max_messages=3), clock=SYSTEM_CLOCK, logger=logger)
    wake_at = time.monotonic() + written_at
    summary = drain.run(["SmsReport"], Deadline(4.0))
    stats = summary.types["SmsReport"]
    assert len(list(tmp_path.rglob("*.jsonl"))) == 1  # stored, once
    if deleted:
        assert (stats.received, stats.deleted, stats.delete_failures, dict(stats.errors)) == (3, 3, 0, {})
        assert emulator.undeleted(emulator.queue_name("SmsReport")) == 0
    else:
        assert (stats.received, stats.deleted, stats.delete_failures) == (3, 0, 3)
        assert dict(stats.errors) == {"delete:deadline": 3}
        assert emulator.undeleted(emulator.queue_name("SmsReport")) == 3
    warnings = [(r.levelname, r.getMessage(), getattr(r, "message_type", None), getattr(r, "failed", None),
                 getattr(r, "codes", None)) for r in logged if r.levelno >= logging.WARNING]
    assert warnings == ([] if deleted else [
        ("WARNING", "delete failures (messages will be redelivered and deduplicated)", "SmsReport", 3, ["deadline"])])
