"""Tests that close gaps a mutation run (scripts/mutation/run) found in shared/drain.py.

A failing receive is tried again after a full-jitter sleep whose ceiling doubles from the
policy's base: ERROR_BACKOFF (0.2 s, cap 2 s) for a 5xx, THROTTLE_BACKOFF (0.25 s, cap 4 s) for
"slow down". A sleep drawn from a later step wastes the run's budget on the first retries.
Over real sockets to the emulator; only the clock is injected (it records each sleep asked
for and sleeps a fiftieth of it).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, NamedTuple

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


def recording_logger(name: str, level: int = logging.NOTSET) -> tuple[logging.Logger, list[logging.LogRecord]]:
    """A logger and the records it was given (a stdlib handler that keeps them)."""
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    return logger, logged


def file_drain(tmp_path, clock, **options) -> Drain:
    """A drain over the emulator (the runtime's token cache and queues) into files, one consumer,
    no long poll unless `options` say otherwise."""
    from shared.sinks.file import FileSink

    runtime = drain_runtime()
    return Drain(runtime.tokens, runtime.open_queue, FileSink(tmp_path),
                 DrainOptions(**{"wait_seconds": 0, "concurrency": 1, **options}), clock=clock)


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
    logger, logged = recording_logger(f"test-late-delete-{written_at}")
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


# -- deletes: which failures are tried again, how long, and what is counted ---------------------------------
#
# A delete thread tries a batch delete up to four times: once more with a fresh token after an
# auth refusal, again after throttling (THROTTLE_BACKOFF's waits), never after a plain failure,
# and never when the wait would leave 0.2 s or less of its time (the deadline less half the
# safety margin). These tests run the drain on a clock that stands still unless something
# sleeps on it or the test moves it, so "0.9 s left" is exact however slow the machine is;
# the sockets and the emulator run on real time.

class _StillClock:
    """Time that moves only when slept on (by what was asked, plus `oversleep`) or moved."""

    def __init__(self, oversleep: float = 0.0) -> None:
        self.t, self.oversleep = 1000.0, oversleep
        self.lock = threading.Lock()
        self.sleeps: list[tuple[str, float, float]] = []  # (thread, seconds, deadline's remaining)
        self.deadline: Deadline | None = None

    def now(self):
        return SYSTEM_CLOCK.now()

    def monotonic(self) -> float:
        with self.lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        remaining = self.deadline.remaining() if self.deadline is not None else float("nan")
        with self.lock:
            self.sleeps.append((threading.current_thread().name, seconds, remaining))
            self.t += max(0.0, seconds) + self.oversleep

    def set_remaining(self, seconds: float) -> None:
        assert self.deadline is not None
        with self.lock:
            self.t = self.deadline.at - seconds


MARGIN = 2.0  # DrainOptions' default safety margin: deletes keep half of it in reserve


class DeleteRun(NamedTuple):
    stats: Any  # the type's TypeStats
    clock: _StillClock
    opened: list[str]  # the thread that opened each MNS client
    calls: dict  # the emulator's count of requests per API
    took: float  # real seconds of the run

    def delete_waits(self) -> list[float]:
        return [s for name, s, _ in self.clock.sleeps if name.startswith("delete-")]


def run_deletes(emulator, drain_env, tmp_path, faults: dict, messages: int = 5, left: float | None = None,
                oversleep: float = 0.0, on_write=None, **options) -> DeleteRun:
    """Drain `messages` SmsReports over the emulator into files on a still clock, with `faults` on
    BatchDeleteMessage (lifted at the end). With `left`, the sink's write returns with `left`
    seconds of the delete's time remaining (the deadline less half the margin); `on_write` is
    called as the write ends."""
    from shared.sinks.file import FileSink

    clock = _StillClock(oversleep)

    class TimedFileSink(FileSink):
        def write(self, records, dead_letters, deadline=None):
            report = super().write(records, dead_letters, deadline)
            if on_write is not None:
                on_write()
            if left is not None:
                clock.set_remaining(MARGIN / 2 + left)
            return report

    drain_env()
    enqueue(emulator, "SmsReport", messages)
    runtime = drain_runtime()
    opened: list[str] = []

    def open_queue(mtype, token):  # the runtime's own, noting which thread opened a client
        opened.append(threading.current_thread().name)
        return runtime.open_queue(mtype, token)

    drain = Drain(runtime.tokens, open_queue, TimedFileSink(tmp_path),
                  DrainOptions(**{"wait_seconds": 0, "concurrency": 1, "delete_threads": 1, **options}), clock=clock)
    if faults:
        emulator.set_faults(apis=["BatchDeleteMessage"], **faults)
    emulator.reset_stats()
    clock.deadline = Deadline(60.0, clock)
    started = time.monotonic()
    try:
        summary = drain.run(["SmsReport"], clock.deadline)
    finally:
        took = time.monotonic() - started
        emulator.set_faults()
    return DeleteRun(summary.types["SmsReport"], clock, opened, emulator.stats(), took)


def test_each_delete_thread_opens_one_mns_client_and_keeps_it_while_the_token_holds(emulator, drain_env, tmp_path):
    run = run_deletes(emulator, drain_env, tmp_path, {}, messages=40)
    assert (run.stats.received, run.stats.deleted, run.stats.api_calls["BatchDeleteMessage"]) == (40, 40, 3)
    # One client for the receive loop, one for the delete thread: not one per batch delete.
    assert sorted(name.startswith("delete-") for name in run.opened) == [False, True], run.opened


def test_a_delete_refused_with_a_server_error_is_tried_once_and_every_message_counted(emulator, drain_env, tmp_path):
    """A 500 may have been applied or not: the handles are left to come back and dedupe, the
    token is kept (it was not refused), and each of the three batches' failures is counted."""
    run = run_deletes(emulator, drain_env, tmp_path, {"server_error": 1.0}, messages=40)
    stats = run.stats
    assert (stats.received, stats.stored, stats.deleted, stats.delete_failures) == (40, 40, 0, 40)
    assert dict(stats.errors) == {"delete:InternalError": 40}
    assert stats.api_calls["BatchDeleteMessage"] == run.calls["BatchDeleteMessage"] == 3
    assert run.calls["QueryTokenForMnsQueue"] == 1  # the run's one token, never replaced
    assert run.delete_waits() == [] and len(run.opened) == 2


@pytest.mark.parametrize("left", [None, 0.9], ids=["ample-time", "0.9s-left"])
def test_a_throttled_delete_is_tried_again_after_a_wait(emulator, drain_env, tmp_path, left):
    """The emulator's fault draws for seed 3 are 0.121, then 0.724: at a throttling share of one
    half the first delete is throttled and the second answered. With 0.9 s left, a wait of at
    most 0.25 s leaves time for that second try."""
    emulator.backend.faults.reseed(3)
    run = run_deletes(emulator, drain_env, tmp_path, {"throttle": 0.5}, left=left)
    assert (run.stats.deleted, run.stats.delete_failures, dict(run.stats.errors)) == (5, 0, {})
    assert run.stats.api_calls["BatchDeleteMessage"] == run.calls["BatchDeleteMessage"] == 2
    assert emulator.undeleted(emulator.queue_name("SmsReport")) == 0
    [wait] = run.delete_waits()
    assert 0 <= wait <= 0.25


def test_a_delete_throttled_every_time_is_tried_four_times_with_no_wait_after_the_last(emulator, drain_env, tmp_path):
    run = run_deletes(emulator, drain_env, tmp_path, {"throttle": 1.0})
    assert (run.stats.deleted, run.stats.delete_failures, dict(run.stats.errors)) == (
        0, 5, {"delete:QpsLimitExceeded": 5})
    assert run.stats.api_calls["BatchDeleteMessage"] == run.calls["BatchDeleteMessage"] == 4
    waits = run.delete_waits()
    assert len(waits) == 3 and all(0 <= s <= c for s, c in zip(waits, [0.25, 0.5, 1.0])), waits


def test_a_throttled_delete_with_no_time_for_a_wait_and_a_try_stops_with_its_error(emulator, drain_env, tmp_path):
    """With 0.2 s left any wait leaves 0.2 s or less: one try, then the throttling code (a
    delete that slept anyway would reach the deadline and report 'deadline', or try again)."""
    run = run_deletes(emulator, drain_env, tmp_path, {"throttle": 1.0}, left=0.2)
    assert (run.stats.deleted, run.stats.delete_failures, dict(run.stats.errors)) == (
        0, 5, {"delete:QpsLimitExceeded": 5})
    assert run.stats.api_calls["BatchDeleteMessage"] == run.calls["BatchDeleteMessage"] == 1
    assert run.delete_waits() == []


def test_a_delete_whose_wait_overran_the_deadline_reports_the_calls_it_made(emulator, drain_env, tmp_path):
    """A loaded host oversleeps: the wait after the first throttled try ends with under 0.1 s
    left, so the handles fail with 'deadline'; the one call made is still counted."""
    run = run_deletes(emulator, drain_env, tmp_path, {"throttle": 1.0}, left=0.5, oversleep=0.45)
    assert (run.stats.deleted, run.stats.delete_failures, dict(run.stats.errors)) == (0, 5, {"delete:deadline": 5})
    assert run.stats.api_calls["BatchDeleteMessage"] == run.calls["BatchDeleteMessage"] == 1


def test_an_unanswered_delete_is_given_up_when_the_delete_time_runs_out(emulator, drain_env, tmp_path):
    """With 0.2 s left the delete's socket timeout is 0.2 s, not the 10 s MNS timeout nor a
    floor above what is left: the hung call is abandoned in about that (on real time)."""
    run = run_deletes(emulator, drain_env, tmp_path, {"hang": 1.0}, left=0.2)
    assert (run.stats.deleted, run.stats.delete_failures) == (0, 5)
    assert emulator.undeleted(emulator.queue_name("SmsReport")) == 5
    assert run.took < 0.8, run.took  # a 1.1 s floor on the timeout: about 1.2 s


def test_a_fresh_token_fetch_for_a_delete_is_given_up_when_the_delete_time_runs_out(emulator, drain_env, tmp_path):
    """The delete is refused for its token; the fresh token's fetch hangs. With 0.3 s left it is
    abandoned in about that (on real time), not after the token API's 5 s socket timeout."""
    emulator.expire_tokens_on("BatchDeleteMessage")
    # The receive loop has its token by the time the batch is written: only the delete's fetch hangs.
    run = run_deletes(emulator, drain_env, tmp_path, {}, left=0.3,
                      on_write=lambda: emulator.set_faults(hang=1.0, apis=["token"]))
    assert (run.stats.deleted, run.stats.delete_failures) == (0, 5)
    assert run.took < 2.0, run.took


# -- a type's stop reason ------------------------------------------------------------------------------
#
# Several consumers drain one type; each ends for its own reason. The type's stop reason decides
# whether the run failed (shared/run_summary.py: a reason in FAILURES), so a consumer that ends for
# time or for the message limit after another consumer of its type failed must not hide that
# failure; and "empty" does not hide why another consumer stopped. Which consumer ends when is a
# thread race in a run, so these call the consumer's ending directly, in each order.

@pytest.mark.parametrize("steps,reason", [
    ([("fail", "queue_error"), ("end", "deadline")], "queue_error"),
    ([("fail", "token_error"), ("end", "max_messages")], "token_error"),
    ([("fail", "queue_error"), ("end", "empty")], "queue_error"),
    ([("end", "max_messages"), ("end", "deadline")], "deadline"),
    ([("end", "deadline"), ("end", "empty")], "deadline"),
    ([("end", "empty")], "empty"),
], ids=["failed-then-deadline", "failed-then-limit", "failed-then-empty", "limit-then-deadline",
        "deadline-then-empty", "empty"])
def test_a_consumers_ending_never_hides_a_failure_of_its_type(emulator, drain_env, steps, reason):
    from shared.coalesce import CoalesceBuffer
    from shared.drain import _Consumer, _Run
    from shared.run_summary import overall

    drain_env()
    runtime = drain_runtime()
    drain = Drain(runtime.tokens, runtime.open_queue, runtime.sink, DrainOptions(concurrency=2), clock=SYSTEM_CLOCK)
    buffers = {"SmsReport": CoalesceBuffer(100, 1 << 20, 5.0, SYSTEM_CLOCK)}
    run = _Run(["SmsReport"], 100, Deadline(60.0), buffers, drain.options, None, SYSTEM_CLOCK)
    first, second = _Consumer(drain, "SmsReport", run), _Consumer(drain, "SmsReport", run)
    try:
        for consumer, (step, why) in zip([first, second], steps):
            if step == "fail":
                run.fail_type("SmsReport", why, f"{why} in the test")
            else:
                consumer._end(why)
    finally:
        first.deleter.shutdown()
        second.deleter.shutdown()
    assert run.stats["SmsReport"].stop_reason == reason
    assert overall(None, run.stats)[2] == (["SmsReport"] if reason.endswith("_error") else [])


# -- what a received batch leaves in the run's record ------------------------------------------------

def test_the_oldest_enqueue_time_and_dead_lettered_messages_are_reported(emulator, drain_env, tmp_path):
    """A run reports the enqueue time of the oldest message it received (the backlog's age) and
    logs a warning naming each message it dead-lettered and why."""
    from shared.sinks.file import FileSink

    drain_env()
    before_ms = int(time.time() * 1000)
    enqueue(emulator, "SmsReport", 20)
    bad_id = emulator.enqueue(emulator.queue_name("SmsReport"), "not base64 JSON")
    after_ms = int(time.time() * 1000)
    runtime = drain_runtime()
    logger, logged = recording_logger("test-decode-report")
    drain = Drain(runtime.tokens, runtime.open_queue, FileSink(tmp_path), DrainOptions(wait_seconds=0, concurrency=1),
                  clock=SYSTEM_CLOCK, logger=logger)
    emulator.reset_stats()
    summary = drain.run(["SmsReport"], Deadline(30.0))
    stats = summary.types["SmsReport"]
    assert (stats.received, stats.stored, stats.dead_lettered, stats.batches) == (21, 20, 1, 2)
    # Two full receives and the empty one that ended the run, each counted.
    assert stats.api_calls["BatchReceiveMessage"] == emulator.stats()["BatchReceiveMessage"] == 3
    assert stats.rate_per_second == pytest.approx(21 / summary.elapsed, rel=0.2)
    assert stats.oldest_enqueue_ms is not None and before_ms - 1000 <= stats.oldest_enqueue_ms <= after_ms
    warnings = [(r.getMessage(), getattr(r, "message_type", None), getattr(r, "message_ids", None))
                for r in logged if r.levelno == logging.WARNING]
    assert warnings == [("dead-lettered messages", "SmsReport", [bad_id])]
    assert [getattr(r, "errors", None) for r in logged if r.levelno == logging.WARNING][0]


def test_the_typical_delete_time_moves_a_fifth_of_the_way_to_each_observed_delete():
    """The drain keeps back time for the deletes it still owes at the typical delete's cost: a
    moving average that starts at 0.2 s; the other durations keep their worst."""
    from shared.drain import _Timing

    timing = _Timing()
    timing.observe("delete", 1.2)
    assert (round(timing.delete_typical, 6), timing.delete) == (0.4, 1.2)  # 0.2 + (1.2 - 0.2) / 5
    timing.observe("delete", 0.4)
    assert (round(timing.delete_typical, 6), timing.delete) == (0.4, 1.2)
    timing.observe("write", 3.0)
    assert (round(timing.delete_typical, 6), timing.write) == (0.4, 3.0)


def test_a_first_receive_keeps_the_coalesce_window_within_a_third_of_the_visibility_timeout(emulator, drain_env):
    """The queue's visibility timeout is Alicom's, not a setting: a first receive tells it
    (NextVisibleTime - FirstDequeueTime). The window drops to a third of it, once, with a warning
    that says so; a redelivered message (dequeue count 2) tells nothing."""
    from shared.coalesce import CoalesceBuffer
    from shared.drain import _Consumer, _Run
    from shared.queues import ReceivedMessage
    from shared.records import MnsMeta

    drain_env()
    runtime = drain_runtime()
    logger, logged = recording_logger("test-visibility")
    drain = Drain(runtime.tokens, runtime.open_queue, runtime.sink, DrainOptions(coalesce_seconds=5.0),
                  clock=SYSTEM_CLOCK, logger=logger)
    buffers = {"SmsUp": CoalesceBuffer(100, 1 << 20, 5.0, SYSTEM_CLOCK)}
    run = _Run(["SmsUp"], 100, Deadline(60.0), buffers, drain.options, None, SYSTEM_CLOCK)
    consumer = _Consumer(drain, "SmsUp", run)

    def received(dequeue_count: int, visible_after_ms: int) -> ReceivedMessage:
        return ReceivedMessage("RH-1", "e30=", MnsMeta("MID-1", 1795600000000, dequeue_count,
                                                       first_dequeue_time=1795600001000,
                                                       next_visible_time=1795600001000 + visible_after_ms))
    try:
        consumer._respect_visibility([received(2, 3000)])  # a redelivery: not the visibility timeout
        assert buffers["SmsUp"].max_age == 5.0
        consumer._respect_visibility([received(1, 10000)])
        consumer._respect_visibility([received(1, 10000)])  # already within it: no second warning
        consumer._respect_visibility([received(1, 12000)])  # a third of 12 s would raise it: never
    finally:
        consumer.deleter.shutdown()
    assert buffers["SmsUp"].max_age == 10.0 / 3
    assert [(r.levelname, r.getMessage(), r.message_type, r.visibility_timeout_seconds, r.coalesce_seconds)
            for r in logged] == [("WARNING", "coalesce window shortened to a third of the queue's visibility timeout",
                                  "SmsUp", 10.0, 3.333)]


# -- the run as a whole ---------------------------------------------------------------------------------

@pytest.mark.parametrize("runs_at_once,concurrency,cap", [(1, 3, 1317), (3, 3, 428), (1, 8, 1290), (12, 3, 95),
                                                          (80, 3, 16)])
def test_the_coalesce_cap_keeps_every_run_within_the_undeleted_budget(runs_at_once, concurrency, cap):
    """MNS throttles a queue holding over 5,000 received-but-undeleted messages; the drain keeps
    4,000: per run (4,000 // runs at once), less a batch of 16 per consumer, in three buffers'
    worth, at most the sink's 2,000 and at least one batch."""
    from shared.drain import coalesce_cap

    got = coalesce_cap(2000, DrainOptions(runs_at_once=runs_at_once, concurrency=concurrency))
    assert (got, type(got)) == (cap, int)


def test_a_sink_failure_stops_the_consumers_of_every_type(emulator, drain_env, tmp_path):
    """The sink is shared: once a write fails, no type receives more (what it received comes
    back after the visibility timeout)."""
    from shared.sinks.base import SinkError
    from shared.sinks.file import FileSink

    class RefusingFileSink(FileSink):
        def write(self, records, dead_letters, deadline=None):
            raise SinkError("file", "refused by the test")

    drain_env()
    enqueue(emulator, "SmsReport", 64)
    enqueue(emulator, "SmsUp", 64)
    runtime = drain_runtime()
    drain = Drain(runtime.tokens, runtime.open_queue, RefusingFileSink(tmp_path),
                  DrainOptions(wait_seconds=0, concurrency=1, coalesce_seconds=0), clock=SYSTEM_CLOCK)
    summary = drain.run(["SmsReport", "SmsUp"], Deadline(30.0))
    assert (summary.ok, summary.stop_reason) == (False, "sink_error")
    assert summary.error == "SinkError: file sink: refused by the test"
    received = {t: s.received for t, s in summary.types.items()}
    assert all(n <= 32 for n in received.values()), received  # a batch or two each, not all 64
    # Each type whose write failed says so, once (its consumer stopped there).
    failed = [(s.stop_reason, s.error, dict(s.errors)) for s in summary.types.values() if s.errors]
    assert failed and set(failed[0][2]) == {"sink"}
    assert all(f == ("sink_error", "SinkError: file sink: refused by the test", {"sink": 1}) for f in failed), failed


def test_what_a_short_receive_did_not_use_of_the_message_limit_goes_back(emulator, drain_env, tmp_path):
    """A consumer reserves a batch of 16 of max_messages before it receives; a receive that
    brings 5 gives the other 11 back. The queue holds 5, then 30 more arrive during the next
    long poll: 20 in all."""
    from shared.sinks.file import FileSink

    drain_env()
    enqueue(emulator, "SmsUp", 5)
    later = threading.Timer(0.5, enqueue, (emulator, "SmsUp", 30, 1))
    runtime = drain_runtime()
    drain = Drain(runtime.tokens, runtime.open_queue, FileSink(tmp_path),
                  DrainOptions(wait_seconds=3, concurrency=1, max_messages=20), clock=SYSTEM_CLOCK)
    later.start()
    try:
        summary = drain.run(["SmsUp"], Deadline(30.0))
    finally:
        later.join()
    stats = summary.types["SmsUp"]
    assert (summary.ok, stats.stop_reason, stats.received, stats.batches) == (True, "max_messages", 20, 2), stats


def test_every_consumer_runs_at_once_in_a_thread_named_for_the_drain(emulator, drain_env, tmp_path):
    """Three types at 12 consumers each: 36 threads, more than a thread pool's default (at most
    32), each polling its queue at the same time."""
    from shared.sinks.file import FileSink

    drain_env()
    runtime = drain_runtime()
    opened: list[str] = []
    lock = threading.Lock()

    def open_queue(mtype, token):  # the runtime's own, noting which thread opened a client
        with lock:
            opened.append(threading.current_thread().name)
        return runtime.open_queue(mtype, token)

    drain = Drain(runtime.tokens, open_queue, FileSink(tmp_path), DrainOptions(wait_seconds=3, concurrency=12),
                  clock=SYSTEM_CLOCK)
    summary = drain.run(["SmsReport", "SmsUp", "VoiceReport"], Deadline(30.0))
    assert summary.ok and summary.stop_reason == "empty", summary
    assert len(set(opened)) == 36, sorted(set(opened))
    assert all(name.startswith("drain_") for name in opened), opened


def test_a_long_poll_is_cut_to_when_the_oldest_unwritten_batch_is_due(emulator, drain_env, tmp_path):
    """Unwritten messages must not wait out a long poll: with 5 buffered and due in 3 s, the
    next receive waits 2 s (whole seconds, rounded down), then polls without waiting until they
    are due and written; the long poll comes back once nothing is left unwritten."""
    from shared.sinks.file import FileSink

    drain_env()
    enqueue(emulator, "SmsUp", 5)
    runtime = drain_runtime()
    drain = Drain(runtime.tokens, runtime.open_queue, FileSink(tmp_path),
                  DrainOptions(wait_seconds=5, concurrency=1, coalesce_seconds=3.0), clock=SYSTEM_CLOCK)
    summary = drain.run(["SmsUp"], Deadline(30.0))
    assert summary.ok and summary.types["SmsUp"].stored == 5, summary
    waits = [wait for _, wait, _ in emulator.receives(emulator.queue_name("SmsUp"))]
    assert waits[:2] == [5, 2] and waits[-1] == 5 and set(waits[2:-1]) <= {0}, waits


class _FixedNowClock(_StillClock):
    """A still clock whose wall time is 2030-01-01T00:00:00Z (epoch 1,893,456,000 s)."""

    def now(self):
        from datetime import datetime, timezone

        return datetime(2030, 1, 1, tzinfo=timezone.utc)


def test_the_summary_reports_elapsed_time_rate_backlog_age_and_token_fetches(emulator, drain_env, tmp_path):
    """On a clock that moves only when the sink's write moves it (half a second): the run took
    0.5 s, so 5 messages are 10 a second; the oldest message's age is taken at the end of the
    run (2030-01-01, far after it was enqueued); the first run fetched one token, the second, on
    an empty queue, none and received nothing in no time, a rate of 0."""
    from shared.sinks.file import FileSink

    clock = _FixedNowClock()

    class HalfSecondFileSink(FileSink):
        def write(self, records, dead_letters, deadline=None):
            clock.t += 0.5
            return super().write(records, dead_letters, deadline)

    drain_env()
    enqueue(emulator, "SmsUp", 5)
    runtime = drain_runtime()
    drain = Drain(runtime.tokens, runtime.open_queue, HalfSecondFileSink(tmp_path),
                  DrainOptions(wait_seconds=0, concurrency=1), clock=clock)
    first = drain.run(["SmsUp"], Deadline(60.0, clock))
    stats = first.types["SmsUp"]
    assert stats.message_type == "SmsUp"
    assert (first.elapsed, stats.received, stats.rate_per_second, first.token_fetches) == (0.5, 5, 10.0, 1)
    assert stats.oldest_enqueue_ms is not None
    age = stats.oldest_age_seconds
    assert age == round((1_893_456_000_000 - stats.oldest_enqueue_ms) / 1000, 3) and 10**7 < age < 2 * 10**8, age
    second = drain.run(["SmsUp"], Deadline(60.0, clock))
    stats = second.types["SmsUp"]
    assert (second.elapsed, stats.received, stats.rate_per_second, second.token_fetches) == (0.0, 0, 0.0, 0)
    assert (stats.oldest_enqueue_ms, stats.oldest_age_seconds) == (None, None)


@pytest.mark.parametrize("owed,delete_threads,budget", [(0, 2, 27.5), (3, 2, 27.0), (3, 1, 26.75), (4, 2, 27.0)])
def test_the_receive_budget_keeps_back_the_margin_a_write_a_delete_and_the_owed_deletes(owed, delete_threads,
                                                                                      budget):
    """30 s left, a 2 s margin, the worst write 0.3 s and delete 0.2 s seen, deletes typically
    0.25 s: each delete thread works off its share of the owed deletes (rounded up) first."""
    from shared.coalesce import CoalesceBuffer
    from shared.drain import _Run

    clock = _StillClock()
    drain = Drain(None, None, None, DrainOptions(safety_margin=2.0, delete_threads=delete_threads), clock=clock)
    drain.timing.write, drain.timing.delete, drain.timing.delete_typical = 0.3, 0.2, 0.25
    run = _Run(["SmsUp"], 100, Deadline(30.0, clock), {"SmsUp": CoalesceBuffer(100, 1 << 20, 5.0, clock)},
               drain.options, None, clock)
    assert drain._budget(run, owed) == pytest.approx(budget)
    if owed == 0:
        assert drain._budget(run) == pytest.approx(budget)  # owing nothing is the default


def test_the_deletes_a_consumer_owes_are_its_unwritten_batches_and_its_deletes_still_running(emulator, drain_env):
    from concurrent.futures import Future

    from shared.coalesce import CoalesceBuffer
    from shared.drain import _Consumer, _Run

    drain_env()
    runtime = drain_runtime()
    drain = Drain(runtime.tokens, runtime.open_queue, runtime.sink, DrainOptions(), clock=SYSTEM_CLOCK)
    run = _Run(["SmsUp"], 100, Deadline(60.0), {"SmsUp": CoalesceBuffer(100, 1 << 20, 5.0, SYSTEM_CLOCK)},
               drain.options, None, SYSTEM_CLOCK)
    consumer = _Consumer(drain, "SmsUp", run)
    done, running = Future(), Future()
    done.set_result(None)
    try:
        consumer.pending = [object(), object()]  # type: ignore[list-item]  # only counted
        consumer.deletes = [done, running, Future()]
        assert consumer.owed_deletes() == 4
    finally:
        consumer.pending, consumer.deletes = [], []
        consumer.deleter.shutdown()


# -- the receive loop: tokens, time, the long poll ------------------------------------------------------

def test_a_hung_token_api_fails_the_run_before_its_deadline(emulator, drain_env, tmp_path):
    """The token fetch is bounded by the receive budget, not the token API's 5 s socket timeout."""
    from shared.sinks.file import FileSink

    drain_env()
    enqueue(emulator, "SmsReport", 3)
    emulator.set_faults(hang=1.0, apis=["token"])
    runtime = drain_runtime()
    drain = Drain(runtime.tokens, runtime.open_queue, FileSink(tmp_path),
                  DrainOptions(wait_seconds=0, concurrency=1, safety_margin=1.0), clock=SYSTEM_CLOCK)
    deadline = Deadline(4.0)
    try:
        summary = drain.run(["SmsReport"], deadline)
        left = deadline.remaining()
    finally:
        emulator.set_faults()
    assert (summary.ok, summary.stop_reason) == (False, "token_error"), summary
    assert left > 0, f"the run returned {-left:.2f} s after its deadline"


def test_a_throttled_token_api_is_tried_sixteen_times_and_fails_the_type_with_its_error(emulator, drain_env,
                                                                                     tmp_path):
    """Throttling is no failure: the token call is tried as long as THROTTLE_BACKOFF allows (16
    tries), and when it still throttles, the type fails as a token error (not as 'no time')."""
    drain_env()
    enqueue(emulator, "SmsReport", 3)
    emulator.set_faults(throttle=1.0, throttle_code="Throttling.User", apis=["token"])
    emulator.reset_stats()
    drain = file_drain(tmp_path, clock=_RecordingClock())
    try:
        summary = drain.run(["SmsReport"], Deadline(60.0))
    finally:
        emulator.set_faults()
    stats = summary.types["SmsReport"]
    assert (summary.ok, stats.stop_reason, stats.received) == (False, "token_error", 0)
    assert "Throttling.User" in (stats.error or ""), stats.error
    assert emulator.stats()["QueryTokenForMnsQueue"] == 16


def test_a_receive_refused_for_its_token_twice_running_gets_a_fresh_token_each_time(emulator, drain_env, tmp_path):
    drain_env()
    enqueue(emulator, "SmsReport", 5)
    emulator.expire_tokens_on("BatchReceiveMessage", times=2)
    emulator.reset_stats()
    drain = file_drain(tmp_path, clock=SYSTEM_CLOCK)
    summary = drain.run(["SmsReport"], Deadline(30.0))
    assert summary.ok and summary.types["SmsReport"].stored == 5, summary
    assert emulator.stats()["QueryTokenForMnsQueue"] == 3  # the first, then one after each refusal


def test_no_receive_is_made_without_time_for_its_round_trip(emulator, drain_env, tmp_path):
    """A receive needs its round trip (0.2 s until one is measured) and 0.1 s more: with 0.25 s of
    budget on a still clock none is made, and a run that received nothing for lack of time fails."""
    from shared.sinks.file import FileSink

    drain_env()
    enqueue(emulator, "SmsReport", 3)
    emulator.reset_stats()
    runtime = drain_runtime()
    clock = _StillClock()
    drain = Drain(runtime.tokens, runtime.open_queue, FileSink(tmp_path), DrainOptions(wait_seconds=0, concurrency=1),
                  clock=clock)
    # The budget: time left less the 2 s margin, a write's 0.2 s and a delete's 0.2 s.
    summary = drain.run(["SmsReport"], Deadline(2.0 + 0.4 + 0.25, clock))
    assert (summary.ok, summary.stop_reason) == (False, "no_time"), summary
    assert emulator.stats().get("BatchReceiveMessage", 0) == 0
    assert emulator.stats().get("QueryTokenForMnsQueue", 0) == 0  # not even the token


def test_a_token_fetch_that_leaves_no_time_for_a_receive_ends_the_run_without_one(emulator, drain_env, tmp_path):
    """0.8 s of budget before the token fetch; the fetch takes 0.6 s (injected latency): what is
    left is under a receive's 0.3 s, so no receive is made and the run fails for lack of time."""
    from shared.sinks.file import FileSink

    drain_env()
    enqueue(emulator, "SmsReport", 3)
    emulator.reset_stats()
    runtime = drain_runtime()
    drain = Drain(runtime.tokens, runtime.open_queue, FileSink(tmp_path),
                  DrainOptions(wait_seconds=0, concurrency=1, safety_margin=1.0), clock=SYSTEM_CLOCK)
    emulator.set_latency(0.6)
    try:
        summary = drain.run(["SmsReport"], Deadline(1.0 + 0.4 + 0.8))
    finally:
        emulator.set_latency(0.0)
    assert (summary.ok, summary.stop_reason) == (False, "no_time"), summary
    assert emulator.stats().get("BatchReceiveMessage", 0) == 0
    assert emulator.stats()["QueryTokenForMnsQueue"] == 1


def test_the_long_poll_ends_half_a_second_and_a_round_trip_before_the_budget(emulator, drain_env, tmp_path):
    """With 3.4 s of budget on a still clock, the long poll asked for is int(3.4 - 0.2 - 0.5) = 2 s,
    not the 10 s configured."""
    from shared.sinks.file import FileSink

    drain_env()
    runtime = drain_runtime()
    clock = _StillClock()
    drain = Drain(runtime.tokens, runtime.open_queue, FileSink(tmp_path),
                  DrainOptions(wait_seconds=10, concurrency=1), clock=clock)
    summary = drain.run(["SmsUp"], Deadline(2.0 + 0.4 + 3.4, clock))
    assert summary.types["SmsUp"].stop_reason == "empty", summary
    assert [wait for _, wait, _ in emulator.receives(emulator.queue_name("SmsUp"))] == [2]


def test_a_type_that_ran_out_of_time_while_its_token_failed_fails_with_the_token_error(emulator, drain_env, tmp_path):
    """A stalled host: the wait after a throttled token call ends (on a still clock that
    oversleeps by 10 s) with no time left. The type received nothing, so it fails, and with the
    error that kept it from receiving, not as 'no time'."""
    from shared.sinks.file import FileSink

    drain_env()
    enqueue(emulator, "SmsReport", 3)
    emulator.set_faults(throttle=1.0, throttle_code="Throttling.User", apis=["token"])
    runtime = drain_runtime()
    clock = _StillClock(oversleep=10.0)
    drain = Drain(runtime.tokens, runtime.open_queue, FileSink(tmp_path), DrainOptions(wait_seconds=0, concurrency=1),
                  clock=clock)
    try:
        summary = drain.run(["SmsReport"], Deadline(2.0 + 0.4 + 5.0, clock))
    finally:
        emulator.set_faults()
    stats = summary.types["SmsReport"]
    assert (summary.ok, summary.stop_reason, stats.received) == (False, "token_error", 0), summary
    assert "Throttling.User" in (stats.error or ""), stats.error


def test_an_unanswered_receive_with_little_time_left_is_given_up_within_the_budget(emulator, drain_env, tmp_path):
    """1.2 s of receive budget on a still clock: the hung receive's socket timeout is 1.2 s, not a
    floor above it (real time). Its wait then oversleeps past the deadline: the type received
    nothing and fails with the receive's error, the one failed call counted."""
    from shared.sinks.file import FileSink

    drain_env()
    enqueue(emulator, "SmsReport", 3)
    emulator.set_faults(hang=1.0, apis=["BatchReceiveMessage"])
    emulator.reset_stats()
    runtime = drain_runtime()
    clock = _StillClock(oversleep=10.0)
    drain = Drain(runtime.tokens, runtime.open_queue, FileSink(tmp_path), DrainOptions(wait_seconds=0, concurrency=1),
                  clock=clock)
    started = time.monotonic()
    try:
        summary = drain.run(["SmsReport"], Deadline(2.0 + 0.4 + 1.2, clock))
    finally:
        took = time.monotonic() - started
        emulator.set_faults()
    stats = summary.types["SmsReport"]
    assert (summary.ok, summary.stop_reason, stats.received) == (False, "queue_error", 0), summary
    assert "NetWorkException" in (stats.error or ""), stats.error
    assert stats.api_calls["BatchReceiveMessage"] == emulator.stats()["BatchReceiveMessage"] == 1
    assert took < 1.7, took  # a 2 s floor on the socket timeout: over 2 s


def test_a_third_auth_refusal_in_a_row_fails_the_type(emulator, drain_env, tmp_path):
    """Two fresh tokens are tried after a receive refused for its token; refused a third time
    running, the credentials are wrong, not the token's age: the type fails."""
    drain_env()
    enqueue(emulator, "SmsReport", 5)
    emulator.expire_tokens_on("BatchReceiveMessage", times=3)
    emulator.reset_stats()
    drain = file_drain(tmp_path, clock=SYSTEM_CLOCK)
    summary = drain.run(["SmsReport"], Deadline(30.0))
    stats = summary.types["SmsReport"]
    assert (summary.ok, stats.stop_reason, stats.received) == (False, "queue_error", 0), summary
    assert (emulator.stats()["QueryTokenForMnsQueue"], emulator.stats()["BatchReceiveMessage"]) == (3, 3)


def test_each_write_gets_the_deadline_less_half_the_margin_and_is_counted_and_logged(emulator, drain_env, tmp_path):
    """On a still clock with 60 s left and a 2 s margin, each write must end 59 s from now (the
    other half of the margin is for the deletes it releases); two batches, two writes."""
    from shared.sinks.file import FileSink

    given: list[float] = []

    class DeadlineFileSink(FileSink):
        def write(self, records, dead_letters, deadline=None):
            given.append(deadline.remaining())
            return super().write(records, dead_letters, deadline)

    drain_env()
    enqueue(emulator, "SmsUp", 20)
    runtime = drain_runtime()
    clock = _StillClock()
    logger, logged = recording_logger("test-write-log", logging.DEBUG)
    drain = Drain(runtime.tokens, runtime.open_queue, DeadlineFileSink(tmp_path),
                  DrainOptions(wait_seconds=0, concurrency=1, coalesce_seconds=0), clock=clock, logger=logger)
    stats = drain.run(["SmsUp"], Deadline(60.0, clock)).types["SmsUp"]
    assert (stats.stored, stats.sink_writes, given) == (20, 2, [59.0, 59.0])
    stored = [(r.getMessage(), r.message_type, r.records, r.dead_letters, r.first_key.startswith("SmsUp#"))
              for r in logged if r.levelno == logging.DEBUG and r.getMessage() == "stored batch"]
    assert stored == [("stored batch", "SmsUp", 16, 0, True), ("stored batch", "SmsUp", 4, 0, True)]


def test_a_queue_that_does_not_exist_fails_the_type_at_the_first_receive(emulator, drain_env, tmp_path):
    """QueueNotExist cannot change by asking again: no back-off, no second try."""
    drain_env()
    emulator.delete_queue(emulator.queue_name("SmsReport"))
    emulator.reset_stats()
    drain = file_drain(tmp_path, clock=_RecordingClock())
    summary = drain.run(["SmsReport"], Deadline(30.0))
    stats = summary.types["SmsReport"]
    assert (summary.ok, stats.stop_reason) == (False, "queue_error"), summary
    assert "QueueNotExist" in (stats.error or ""), stats.error
    assert emulator.stats()["BatchReceiveMessage"] == 1


def test_a_successful_receive_resets_the_count_of_failures_in_a_row(emulator, drain_env, tmp_path):
    """After a receive that worked, failures start counting afresh: six tries (ERROR_BACKOFF)
    after the success, seven receives in all."""
    from shared.sinks.file import FileSink

    drain_env()
    enqueue(emulator, "SmsReport", 5)
    emulator.reset_stats()
    runtime = drain_runtime()

    class FaultAfterWriteFileSink(FileSink):
        def write(self, records, dead_letters, deadline=None):
            report = super().write(records, dead_letters, deadline)
            emulator.set_faults(server_error=1.0, apis=["BatchReceiveMessage"])
            return report

    drain = Drain(runtime.tokens, runtime.open_queue, FaultAfterWriteFileSink(tmp_path),
                  DrainOptions(wait_seconds=0, concurrency=1, coalesce_seconds=0), clock=_RecordingClock())
    try:
        summary = drain.run(["SmsReport"], Deadline(30.0))
    finally:
        emulator.set_faults()
    assert (summary.ok, summary.types["SmsReport"].stop_reason) == (False, "queue_error"), summary
    assert emulator.stats()["BatchReceiveMessage"] == 7


def test_a_batch_of_only_dead_letters_is_stored_and_logged_without_a_first_key(emulator, drain_env, tmp_path):
    from shared.sinks.file import FileSink

    drain_env()
    bad_id = emulator.enqueue(emulator.queue_name("SmsUp"), "not base64 JSON")
    runtime = drain_runtime()
    logger, logged = recording_logger("test-dead-only", logging.DEBUG)
    drain = Drain(runtime.tokens, runtime.open_queue, FileSink(tmp_path),
                  DrainOptions(wait_seconds=0, concurrency=1, coalesce_seconds=0), clock=SYSTEM_CLOCK, logger=logger)
    summary = drain.run(["SmsUp"], Deadline(30.0))
    stats = summary.types["SmsUp"]
    assert (summary.ok, stats.stored, stats.dead_lettered, stats.deleted) == (True, 0, 1, 1), summary
    assert [(r.records, r.dead_letters, r.first_key) for r in logged if r.getMessage() == "stored batch"] == [
        (0, 1, None)]
    assert emulator.message_ids(emulator.queue_name("SmsUp")) == [] and bad_id
