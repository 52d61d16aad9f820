"""The drain loop: receive batches, store them, delete exactly what was stored, repeat.

Knows nothing of the platform or the backends: it is given a token cache, a way to open
a queue with a token (shared/queues.py), a sink and a clock. Invariants
(docs/ARCHITECTURE.md):
1. a message is deleted only after `sink.write` returned for it (or its dead letter);
3. no batch starts unless receive + write + delete (measured) + margin fit before the
   deadline; every call is bounded by the time left, and a write by the deadline less half
   the margin;
4. undecodable bodies become dead letters and are deleted like any stored message;
5. tokens come from the cache (refreshed before expiry) and are replaced after an auth error;
8. a run that failed says so (the handler raises).

Failures stay with their message type: a token or queue failure stops that type's
consumers only, the other types finish their run, and the run fails naming the type. A
sink failure stops every type (they share the sink). Throttling is retried with backoff
for as long as the budget allows; other transient errors a few times.

Throughput: `concurrency` consumers per queue, each with its own MNS client (the SDK is
not thread-safe) and its own delete threads, so a consumer's next receive overlaps the
deletes of what it stored before. Received batches are coalesced per message type into
one sink write, bounded by the sink's batch size and bytes, and by time: a received batch
waits at most `coalesce_seconds` (and at most a third of the queue's visibility timeout,
as the messages report it) to be written. A consumer holding unwritten batches shortens
its long poll to come back in time.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Optional, Sequence

import msgspec

from shared.backlog import BacklogWatch
from shared.clock import SYSTEM_CLOCK, Clock, Deadline
from shared.coalesce import Batch, CoalesceBuffer
from shared.decode import decode_message
from shared.fan_out import FanOut
from shared.queues import (
    BUFFERS_PER_RUN,
    MAX_BATCH,
    UNDELETED_BUDGET,
    DeleteOutcome,
    Queue,
    QueueError,
    QueueOpener,
    ReceivedMessage,
)
from shared.records import DeadLetter, Record
from shared.retry import Backoff
from shared.run_summary import FAILURES, RunSummary, TypeStats, overall
from shared.sinks.base import Sink
from shared.tokens import TokenCache, TokenError

__all__ = ["Drain", "DrainOptions", "RunSummary", "TypeStats", "FAILURES", "Queue", "QueueOpener"]

# Between tries of a failing token or receive call (each sleep also capped by the budget).
ERROR_BACKOFF = Backoff(attempts=6, base=0.2, cap=2.0)  # 5 retries of a 5xx or a dropped connection
THROTTLE_BACKOFF = Backoff(attempts=16, base=0.25, cap=4.0)  # "slow down" is no failure: keep at it
# Tries of one batch delete: a refused token once, then throttling; the deadline usually ends it first.
DELETE_ATTEMPTS = 4


class DrainOptions(msgspec.Struct, frozen=True):
    max_messages: int = 100_000
    wait_seconds: int = 3
    safety_margin: float = 2.0
    concurrency: int = 3
    mns_timeout: float = 10.0
    coalesce_seconds: float = 5.0  # oldest received-but-unwritten batch waits at most this long
    # Deletes per consumer in parallel: a coalesced write releases many batches at once, and
    # their deletes (one call per 16) must finish before the deadline.
    delete_threads: int = 2
    # A full receive whose oldest message waited longer than this: the queue is behind.
    backlog_seconds: float = 60.0
    # Runs that may drain the same queues at once (DRAIN_MAX_WORKERS): they share its limit of
    # received-but-undeleted messages, so each buffers less (`coalesce_cap`).
    runs_at_once: int = 1


def coalesce_cap(sink_limit: int, options: DrainOptions) -> int:
    """Most messages one run buffers per queue before writing them.

    MNS throttles a queue that holds more than UNDELETED_LIMIT received-but-undeleted messages
    ("abnormal consumption"). One run holds, per queue, the batches its consumers are taking in,
    the buffer, and up to twice as many again while written buffers wait for their deletes and
    the next one fills; `runs_at_once` runs hold that each. So the buffer is what keeps all of
    them within UNDELETED_BUDGET, never above the sink's own limit, never below one batch.
    """
    per_run = UNDELETED_BUDGET // max(1, options.runs_at_once)
    # Settings refuse more runs than undeleted_footprint allows, so the floor of one batch still
    # keeps every run within its share.
    return max(MAX_BATCH, min(sink_limit, (per_run - options.concurrency * MAX_BATCH) // BUFFERS_PER_RUN))


class _Timing:
    """Worst (and, for deletes, typical) observed durations, to budget against the deadline."""

    def __init__(self) -> None:
        self.receive_overhead = 0.2  # round trip beyond the long-poll wait
        self.write = 0.2
        self.delete = 0.2
        self.delete_typical = 0.2  # moving average: a backlog of deletes costs about this each
        self._lock = threading.Lock()

    def observe(self, name: str, seconds: float) -> None:
        with self._lock:
            setattr(self, name, max(getattr(self, name), seconds))
            if name == "delete":
                self.delete_typical += 0.2 * (seconds - self.delete_typical)


class _Run:
    """State shared by the worker threads of one run."""

    def __init__(self, message_types: Sequence[str], max_messages: int, deadline: Deadline,
                 buffers: dict[str, CoalesceBuffer], options: DrainOptions, fan_out: Optional[FanOut], clock: Clock):
        self.deadline = deadline
        self.stats = {t: TypeStats(t) for t in message_types}
        self.empty = {t: False for t in message_types}
        self.buffers = buffers
        self.stop = threading.Event()  # every type stops (the shared sink failed)
        self.type_stop = {t: threading.Event() for t in message_types}
        self.lock = threading.Lock()
        self.allowance = max_messages
        self.failure: Optional[tuple[str, str]] = None
        self.watch = BacklogWatch(self.stats, self.lock, deadline, options.backlog_seconds, fan_out, clock)

    def stopped(self, message_type: str) -> bool:
        return self.stop.is_set() or self.type_stop[message_type].is_set()

    def reserve(self, wanted: int) -> int:
        with self.lock:
            n = min(wanted, self.allowance)
            self.allowance -= n
            return n

    def release(self, n: int) -> None:
        with self.lock:
            self.allowance += n

    def fail(self, reason: str, error: str) -> None:
        """Stop every type: what they share failed."""
        with self.lock:
            if self.failure is None:  # the first failure is the cause; later ones follow from the stop
                self.failure = (reason, error)
        self.stop.set()

    def fail_type(self, message_type: str, reason: str, error: str) -> None:
        """Stop this type's consumers only; the first failure of the type is its cause."""
        stats = self.stats[message_type]
        with self.lock:
            if stats.stop_reason not in FAILURES:
                stats.stop_reason, stats.error = reason, error
        self.type_stop[message_type].set()


class Drain:
    def __init__(self, tokens: TokenCache, open_queue: QueueOpener, sink: Sink,
                 options: DrainOptions = DrainOptions(), clock: Clock = SYSTEM_CLOCK, logger: Any = None):
        self.tokens = tokens
        self.open_queue = open_queue
        self.sink = sink
        self.options = options
        self.clock = clock
        self.logger = logger
        self.timing = _Timing()

    # -- public ---------------------------------------------------------------
    def run(self, message_types: Sequence[str], deadline: Deadline, max_messages: Optional[int] = None,
            fan_out: Optional[FanOut] = None) -> RunSummary:
        """Drain the queues of `message_types` until empty, `max_messages`, or the deadline; with
        `fan_out`, start workers early if the queues are behind (a scheduled run's choice)."""
        started = self.clock.monotonic()
        fetches_before = self.tokens.fetches
        self.tokens.forget_refusals()  # a refusal is an answer for one run, not for the container's life
        limits = self.sink.coalesce_limits()
        cap = coalesce_cap(limits.messages, self.options)
        buffers = {t: CoalesceBuffer(cap, limits.bytes, self.options.coalesce_seconds, self.clock)
                   for t in message_types}
        run = _Run(message_types, max_messages or self.options.max_messages, deadline, buffers, self.options,
                   fan_out, self.clock)
        workers = [t for t in message_types for _ in range(self.options.concurrency)]
        pool = ThreadPoolExecutor(max_workers=len(workers), thread_name_prefix="drain")
        futures = [pool.submit(self._worker, t, run) for t in workers]
        self._join(pool, futures, run)
        for stats in run.stats.values():
            if stats.stop_reason == "deadline" and not stats.received:
                # Time ran out before anything was received: messages age in the queue, unseen.
                # That is a failure, of the call that kept failing if there was one.
                stats.stop_reason, stats.error = stats.last_failure or ("no_time", (
                    f"no time for one receive: {deadline.remaining():.1f} s left at the end, the safety margin is "
                    f"{self.options.safety_margin:g} s (DRAIN_SAFETY_MARGIN_SECONDS)"))
        elapsed = self.clock.monotonic() - started
        now_ms = self.clock.now().timestamp() * 1000
        for stats in run.stats.values():
            stats.rate_per_second = stats.received / elapsed if elapsed > 0 else 0.0
            if stats.oldest_enqueue_ms is not None:
                stats.oldest_age_seconds = round(max(0.0, now_ms - stats.oldest_enqueue_ms) / 1000, 3)
        reason, error, failed = overall(run.failure, run.stats)
        # Before the time left is taken, so that the summary counts the wait for the invoke calls.
        fanned = fan_out.finish() if fan_out is not None else None
        return RunSummary(
            ok=run.failure is None and not failed,
            stop_reason=reason,
            elapsed=self.clock.monotonic() - started,
            remaining_at_exit=deadline.remaining(),
            types=run.stats,
            error=error,
            token_fetches=self.tokens.fetches - fetches_before,
            failed_types=failed,
            fan_out=fanned,
        )

    def _join(self, pool: ThreadPoolExecutor, futures: list[Future], run: _Run) -> None:
        """Wait for the consumers, but not past the deadline less a quarter of the margin.

        Every call has its own timeout from the time left; this is the backstop for one that
        does not keep it (a server trickling bytes): the run then returns and fails, and the
        stuck thread, whatever it finishes later, can only store or delete what was stored.
        """
        _, stuck = wait(futures, timeout=max(0.0, run.deadline.remaining() - self.options.safety_margin / 4))
        if stuck:
            run.fail("stuck", f"{len(stuck)} consumer(s) still inside a call at the deadline; their messages "
                              "come back after the visibility timeout")
            pool.shutdown(wait=False, cancel_futures=True)
            return
        pool.shutdown(wait=True)
        for future in futures:
            future.result()  # surface a bug in a consumer

    def _budget(self, run: _Run, owed_deletes: int = 0) -> float:
        """Seconds left for a receive, after reserving a flush, the deletes still owed
        (this batch's and the backlog's) and the margin."""
        t = self.timing
        backlog = -(-owed_deletes // max(1, self.options.delete_threads)) * t.delete_typical
        return run.deadline.remaining() - self.options.safety_margin - t.write - t.delete - backlog

    def _worker(self, mtype: str, run: _Run) -> None:
        consumer = _Consumer(self, mtype, run)
        try:
            consumer.loop()
        finally:
            consumer.finish()


class _Consumer:
    """One receive loop on one queue, with its own MNS clients and delete threads."""

    def __init__(self, drain: Drain, mtype: str, run: _Run):
        self.drain, self.mtype, self.run = drain, mtype, run
        self.stats = run.stats[mtype]
        self.buffer = run.buffers[mtype]
        self.queue: Optional[Queue] = None
        self.pending: list[Batch] = []  # received by this consumer, not yet handed to a delete
        self.deleter = ThreadPoolExecutor(max_workers=max(1, drain.options.delete_threads),
                                          thread_name_prefix=f"delete-{mtype}")
        self.delete_clients = threading.local()  # one MNS client per delete thread
        self.deletes: list[Future] = []
        self.errors_in_row = 0

    def owed_deletes(self) -> int:
        """Delete calls this consumer still has to make: written or unwritten batches it holds."""
        return len(self.pending) + sum(1 for f in self.deletes if not f.done())

    # -- the receive loop -----------------------------------------------------
    def loop(self) -> None:
        d, run, stats = self.drain, self.run, self.stats
        auth_retries = 0
        while not run.stopped(self.mtype) and not run.empty[self.mtype]:
            self._flush(self.buffer.take_if_due())
            self._settle(block=False)
            run.watch.tick()
            budget = d._budget(run, self.owed_deletes())
            if budget < d.timing.receive_overhead + 0.1:
                return self._end("deadline")
            wanted = run.reserve(MAX_BATCH)
            if wanted == 0:
                return self._end("max_messages")
            try:
                # Bounded like the receive below: a hung token API must not hold the run past its deadline.
                token = d.tokens.get(self.mtype, timeout=budget)
            except TokenError as exc:
                run.release(wanted)
                self._count_error(exc.code)
                stats.last_failure = ("token_error", str(exc))
                if not self._back_off(exc.retryable, exc.throttled, budget):
                    run.fail_type(self.mtype, "token_error", str(exc))
                    return
                continue
            budget = d._budget(run, self.owed_deletes())  # what the token fetch left
            if budget < d.timing.receive_overhead + 0.1:
                run.release(wanted)
                return self._end("deadline")
            if self.queue is None or self.queue.token is not token:
                self.queue = d.open_queue(self.mtype, token)
            wait_seconds = int(max(0, min(d.options.wait_seconds, budget - d.timing.receive_overhead - 0.5)))
            hold = self._hold()
            shortened = hold is not None and hold < wait_seconds
            if shortened:  # unwritten batches must not wait out a long poll
                wait_seconds = int(hold or 0)
            # A hung connection must not carry the run past its deadline.
            self.queue.set_timeout(max(1.0, min(wait_seconds + d.options.mns_timeout, budget)))
            t0 = d.clock.monotonic()
            try:
                messages = self.queue.receive(wanted, wait_seconds)
            except QueueError as exc:
                run.release(wanted)
                self._count_call("BatchReceiveMessage")
                self._count_error(exc.code)
                stats.last_failure = ("queue_error", str(exc))
                if exc.auth and auth_retries < 2:
                    # The token was refused (expired early, revoked): fetch a fresh one at once.
                    auth_retries += 1
                    d.tokens.invalidate(self.mtype, token)
                    self.queue = None
                    continue
                if exc.fatal or exc.auth or not self._back_off(True, exc.throttled, d._budget(run)):
                    run.fail_type(self.mtype, "queue_error", str(exc))
                    return
                continue
            self._count_call("BatchReceiveMessage")
            if messages:
                d.timing.observe("receive_overhead", d.clock.monotonic() - t0 - wait_seconds)
            run.watch.observe(self.mtype, messages, wanted)
            run.release(wanted - len(messages))
            self.errors_in_row = auth_retries = 0
            if not messages:
                if shortened:  # not a full long poll: the queue may hold more; write what is due first
                    self._await_pending()
                    continue
                run.empty[self.mtype] = True
                return self._end("empty")
            batch = self._decode(messages)
            self.pending.append(batch)
            self._flush(self.buffer.add(batch))

    def _end(self, reason: str) -> None:
        """This consumer stops for `reason`, which never hides a failure of its type."""
        with self.run.lock:
            if self.stats.stop_reason not in FAILURES and (reason != "empty" or not self.stats.stop_reason):
                self.stats.stop_reason = reason

    def _back_off(self, retryable: bool, throttled: bool, budget: float) -> bool:
        """Sleep before the next try of a failed call; False when it should not be tried again."""
        self.errors_in_row += 1
        policy = THROTTLE_BACKOFF if throttled else ERROR_BACKOFF
        if not retryable or self.errors_in_row >= policy.attempts:
            return False
        delay = policy.delay(self.errors_in_row - 1)
        if budget - delay < self.drain.timing.receive_overhead + 0.1:
            return False  # no time for the try after the sleep: stop now, with the error
        self.drain.clock.sleep(delay)
        return True

    def _hold(self) -> Optional[float]:
        """Seconds until this consumer's oldest unwritten batch is due (0: being written now);
        None if it holds none."""
        if not self.pending:
            return None
        return self.buffer.due_in() if self.buffer.holds(self.pending[0]) else 0.0

    def _await_pending(self) -> None:
        """Wait until the oldest pending batch is written or due (at most a second), not busy-polling."""
        if self.pending:
            oldest = self.pending[0]
            timeout = self.buffer.due_in() if self.buffer.holds(oldest) else 1.0
            oldest.flush.done.wait(timeout=min(1.0, max(0.02, timeout)))

    def finish(self) -> None:
        """Leave nothing in flight: write what is buffered, delete what was written."""
        self._flush(self.buffer.take_if_due(force=True))
        self._settle(block=True)
        for future in self.deletes:
            future.result()
        self.deleter.shutdown(wait=True)

    # -- decode, write, delete ------------------------------------------------
    def _decode(self, messages: list[ReceivedMessage]) -> Batch:
        records: list[Record] = []
        dead: list[DeadLetter] = []
        for m in messages:
            decoded = decode_message(self.mtype, m.body, m.meta)
            if isinstance(decoded, Record):
                records.append(decoded)
            else:
                dead.append(decoded)
        with self.run.lock:
            self.stats.received += len(messages)
            self.stats.batches += 1
            oldest = min(m.meta.enqueue_time for m in messages)
            if self.stats.oldest_enqueue_ms is None or oldest < self.stats.oldest_enqueue_ms:
                self.stats.oldest_enqueue_ms = oldest
        self._respect_visibility(messages)
        size = sum(len(m.body) for m in messages)
        if dead and self.drain.logger is not None:
            self.drain.logger.warning("dead-lettered messages", extra={
                "message_type": self.mtype, "message_ids": [x.mns.message_id for x in dead],
                "errors": sorted({x.error for x in dead})})
        return Batch(records, dead, [m.receipt_handle for m in messages], size)

    def _respect_visibility(self, messages: list[ReceivedMessage]) -> None:
        """Keep the coalesce window within a third of the queue's visibility timeout.

        A batch written and deleted after its messages became visible again is received twice
        and its deletes fail with stale handles. The timeout is not a setting of ours (Alicom
        owns the queue), but a first receive tells it: NextVisibleTime - FirstDequeueTime.
        """
        visibility = next((v for v in (m.meta.visibility_seconds() for m in messages) if v), None)
        if visibility and self.buffer.limit_age(visibility / 3) and self.drain.logger is not None:
            self.drain.logger.warning("coalesce window shortened to a third of the queue's visibility timeout",
                                      extra={"message_type": self.mtype, "visibility_timeout_seconds": visibility,
                                             "coalesce_seconds": round(visibility / 3, 3)})

    def _flush(self, batches: list[Batch]) -> None:
        """Write coalesced batches in one sink call; mark their shared outcome."""
        if not batches:
            return
        d = self.drain
        outcome = batches[0].flush
        records = [r for b in batches for r in b.records]
        dead = [x for b in batches for x in b.dead]
        t0 = d.clock.monotonic()
        try:
            # The write, retries included, ends before the deadline less half the margin; the
            # other half is for the deletes it releases.
            report = d.sink.write(records, dead, deadline=self.run.deadline.earlier(d.options.safety_margin / 2))
        except Exception as exc:  # any sink failure: keep the messages (they come back)
            with self.run.lock:
                self.stats.errors["sink"] += 1
            self.stats.stop_reason, self.stats.error = "sink_error", f"{type(exc).__name__}: {exc}"
            self.run.fail("sink_error", f"{type(exc).__name__}: {exc}")
            outcome.done.set()
            return
        d.timing.observe("write", d.clock.monotonic() - t0)
        with self.run.lock:
            self.stats.stored += report.records
            self.stats.dead_lettered += report.dead_letters
            self.stats.sink_writes += report.write_calls
        if d.logger is not None:
            # Keys hold phone numbers: the log formatter masks them (shared/logs.py).
            d.logger.debug("stored batch", extra={"message_type": self.mtype, "records": len(records),
                                                  "dead_letters": len(dead),
                                                  "first_key": records[0].key if records else None})
        outcome.ok = True
        outcome.done.set()

    def _settle(self, block: bool) -> None:
        """Hand written batches to the delete threads; never delete what was not written."""
        still = []
        for batch in self.pending:
            flush = batch.flush
            if block and not flush.done.is_set():
                # Another consumer is writing it; its write is bounded by the same deadline.
                flush.done.wait(timeout=max(0.0, self.run.deadline.remaining()))
            if not flush.done.is_set():
                still.append(batch)
            elif flush.ok:
                self.deletes.append(self.deleter.submit(self._delete, batch.handles))
        self.pending = still
        running = []
        for future in self.deletes:
            if future.done():
                future.result()  # surface an unexpected error from the delete thread
            else:
                running.append(future)
        self.deletes = running

    def _delete(self, handles: list[str]) -> None:
        """On a delete thread: batch-delete; after an auth refusal retry with a fresh token, after
        throttling retry with backoff, all within the time left.

        Receipt handles outlive the token that received them, so a token that expired
        between receive and delete must not leave stored messages in the queue. Anything left
        undeleted reappears after the visibility timeout and dedupes.
        """
        d = self.drain
        t0 = d.clock.monotonic()
        calls = 0
        outcome: Optional[DeleteOutcome] = None

        def left() -> float:  # a hung delete (or token fetch) must not carry the run past its deadline
            return self.run.deadline.remaining() - d.options.safety_margin / 2

        for attempt in range(DELETE_ATTEMPTS):
            if left() <= 0.1:
                outcome = DeleteOutcome(failed={h: "deadline" for h in handles}, calls=calls)
                break
            try:
                token = d.tokens.get(self.mtype, timeout=left())
                queue = getattr(self.delete_clients, "queue", None)
                if queue is None or queue.token is not token:
                    queue = self.delete_clients.queue = d.open_queue(self.mtype, token)
                queue.set_timeout(max(0.1, min(d.options.mns_timeout, left())))
                outcome = queue.delete(handles)
                outcome.calls += calls
                break
            except (TokenError, QueueError) as exc:
                calls += isinstance(exc, QueueError)
                outcome = DeleteOutcome(failed={h: exc.code for h in handles}, calls=calls)
                auth = isinstance(exc, QueueError) and exc.auth and attempt == 0
                if auth and queue is not None:  # once: the receipt handles are still good, the token was not
                    d.tokens.invalidate(self.mtype, queue.token)
                    self.delete_clients.queue = None
                    continue
                # Throttled, or a token fetch that may work on the next try: a throttled delete was
                # not applied, so trying again cannot delete twice.
                retryable = exc.throttled or (isinstance(exc, TokenError) and exc.retryable)
                if not retryable or attempt == DELETE_ATTEMPTS - 1:
                    break  # no wait that no try follows
                delay = THROTTLE_BACKOFF.delay(attempt)
                if left() - delay <= 0.2:
                    break
                d.clock.sleep(delay)
        d.timing.observe("delete", d.clock.monotonic() - t0)
        assert outcome is not None
        with self.run.lock:
            self.stats.deleted += outcome.deleted
            self.stats.delete_failures += len(outcome.failed)
            self.stats.api_calls["BatchDeleteMessage"] += outcome.calls
            for code in outcome.failed.values():
                self.stats.errors[f"delete:{code}"] += 1
        if outcome.failed and d.logger is not None:
            d.logger.warning("delete failures (messages will be redelivered and deduplicated)",
                             extra={"message_type": self.mtype, "failed": len(outcome.failed),
                                    "codes": sorted(set(outcome.failed.values()))})

    def _count_call(self, name: str) -> None:
        with self.run.lock:
            self.stats.api_calls[name] += 1

    def _count_error(self, code: str) -> None:
        with self.run.lock:
            self.stats.errors[code] += 1
