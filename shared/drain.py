"""The drain loop: receive batches, store them, delete exactly what was stored, repeat.

Knows nothing of the platform or the backends: it is given a token cache, a way to open
a queue with a token, a sink and a clock. Invariants (DESIGN.md):
1. a message is deleted only after `sink.write` returned for it (or its dead letter);
3. no batch starts unless receive + flush + delete (measured) + margin fit before the deadline;
4. undecodable bodies become dead letters and are deleted like any stored message;
5. tokens come from the cache (refreshed before expiry) and are replaced after an auth error.

Throughput (DESIGN.md "Performance model"): `concurrency` consumers per queue, each with
its own MNS client (the SDK is not thread-safe) and its own delete threads (each with its
own client), so a consumer's next receive overlaps the deletes of what it stored before.
Received batches are coalesced per message type into one sink write (bounded by the
sink's batch size, bytes and a time window kept well inside the visibility timeout), so
an object sink writes a few large objects instead of one per 16 messages.
"""
from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

from shared.clock import SYSTEM_CLOCK, Clock, Deadline
from shared.decode import decode_message
from shared.mns_queue import MAX_BATCH, DeleteOutcome, QueueError, ReceivedMessage
from shared.records import DeadLetter, Record
from shared.sinks.base import Sink
from shared.tokens import MnsToken, TokenCache, TokenError

# Stop reasons, in the order they outrank each other in the run's overall reason.
FAILURES = ("sink_error", "token_error", "queue_error")


class Queue(Protocol):
    token: MnsToken

    def receive(self, max_messages: int, wait_seconds: int) -> list[ReceivedMessage]: ...

    def delete(self, handles: Sequence[str]) -> DeleteOutcome: ...

    def set_timeout(self, seconds: float) -> None: ...


QueueOpener = Callable[[str, MnsToken], Queue]


@dataclass(frozen=True)
class DrainOptions:
    max_messages: int = 100_000
    wait_seconds: int = 3
    safety_margin: float = 2.0
    concurrency: int = 3
    mns_timeout: float = 10.0
    max_consecutive_errors: int = 5
    coalesce_seconds: float = 5.0  # oldest received-but-unwritten batch waits at most this long
    # Deletes per consumer in parallel: a coalesced write releases many batches at once, and
    # their deletes (one call per 16) must finish before the deadline.
    delete_threads: int = 2


@dataclass
class TypeStats:
    """Counts for one message type (one queue) in one run."""

    message_type: str
    received: int = 0
    stored: int = 0
    dead_lettered: int = 0
    deleted: int = 0
    delete_failures: int = 0
    batches: int = 0
    sink_writes: int = 0
    api_calls: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    oldest_enqueue_ms: Optional[int] = None
    stop_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "stored": self.stored,
            "dead_lettered": self.dead_lettered,
            "deleted": self.deleted,
            "delete_failures": self.delete_failures,
            "batches": self.batches,
            "sink_writes": self.sink_writes,
            "api_calls": dict(self.api_calls),
            "errors": dict(self.errors),
            "oldest_enqueue_ms": self.oldest_enqueue_ms,
            "stop_reason": self.stop_reason,
        }


@dataclass
class RunSummary:
    ok: bool
    stop_reason: str
    elapsed: float
    remaining_at_exit: float
    types: dict[str, TypeStats]
    error: Optional[str] = None
    token_fetches: int = 0

    def total(self, name: str) -> int:
        return sum(getattr(t, name) for t in self.types.values())

    def as_dict(self) -> dict[str, Any]:
        totals = {n: self.total(n) for n in ("received", "stored", "dead_lettered", "deleted", "delete_failures", "sink_writes")}
        calls: Counter = Counter()
        for t in self.types.values():
            calls.update(t.api_calls)
        calls["QueryTokenForMnsQueue"] += self.token_fetches
        totals["api_calls"] = dict(calls)
        return {
            "ok": self.ok,
            "stop_reason": self.stop_reason,
            "error": self.error,
            "elapsed_seconds": round(self.elapsed, 3),
            "remaining_seconds_at_exit": round(self.remaining_at_exit, 3),
            "totals": totals,
            "types": {k: v.as_dict() for k, v in self.types.items()},
        }



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


class _Flush:
    """The outcome of one coalesced sink write, shared by the batches it carried."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class _Batch:
    """One received batch: its decoded content, its handles, and the write that will carry it."""

    __slots__ = ("records", "dead", "handles", "size", "flush")

    def __init__(self, records: list[Record], dead: list[DeadLetter], handles: list[str], size: int):
        self.records, self.dead, self.handles, self.size = records, dead, handles, size
        self.flush: Optional[_Flush] = None


class _Buffer:
    """Batches of one message type waiting for a coalesced write."""

    def __init__(self, max_messages: int, max_bytes: int, max_age: float, clock: Clock):
        self.max_messages, self.max_bytes, self.max_age, self.clock = max_messages, max_bytes, max_age, clock
        self.lock = threading.Lock()
        self.batches: list[_Batch] = []
        self.messages = self.bytes = 0
        self.first_at = 0.0

    def add(self, batch: _Batch) -> list[_Batch]:
        """Queue a batch; return everything buffered if a bound is reached (the caller writes it)."""
        with self.lock:
            if not self.batches:
                self.first_at = self.clock.monotonic()
            batch.flush = _Flush()
            self.batches.append(batch)
            self.messages += len(batch.handles)
            self.bytes += batch.size
            if self.messages >= self.max_messages or self.bytes >= self.max_bytes or self.max_age <= 0:
                return self._take()
            return []

    def take_if_due(self, force: bool = False) -> list[_Batch]:
        with self.lock:
            if self.batches and (force or self.clock.monotonic() - self.first_at >= self.max_age):
                return self._take()
            return []

    def _take(self) -> list[_Batch]:
        taken, self.batches = self.batches, []
        self.messages = self.bytes = 0
        # Batches taken together share one flush outcome.
        shared = _Flush()
        for b in taken:
            b.flush = shared
        return taken


class _Run:
    """State shared by the worker threads of one run."""

    def __init__(self, message_types: Sequence[str], max_messages: int, deadline: Deadline, buffers: dict[str, _Buffer]):
        self.deadline = deadline
        self.stats = {t: TypeStats(t) for t in message_types}
        self.empty = {t: False for t in message_types}
        self.buffers = buffers
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.allowance = max_messages
        self.reason: Optional[str] = None
        self.error: Optional[str] = None

    def reserve(self, wanted: int) -> int:
        with self.lock:
            n = min(wanted, self.allowance)
            self.allowance -= n
            return n

    def release(self, n: int) -> None:
        with self.lock:
            self.allowance += n

    def fail(self, reason: str, error: str) -> None:
        with self.lock:
            if self.reason is None:  # the first failure is the cause; later ones follow from the stop
                self.reason, self.error = reason, error
        self.stop.set()


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
    def run(self, message_types: Sequence[str], deadline: Deadline, max_messages: Optional[int] = None) -> RunSummary:
        started = self.clock.monotonic()
        fetches_before = self.tokens.fetches
        limits = self.sink.coalesce_limits()
        buffers = {t: _Buffer(limits.messages, limits.bytes, self.options.coalesce_seconds, self.clock)
                   for t in message_types}
        run = _Run(message_types, max_messages or self.options.max_messages, deadline, buffers)
        workers = [(t, i) for t in message_types for i in range(self.options.concurrency)]
        with ThreadPoolExecutor(max_workers=len(workers), thread_name_prefix="drain") as pool:
            futures = [pool.submit(self._worker, t, run) for t, _ in workers]
            for f in futures:
                f.result()
        reasons = [s.stop_reason for s in run.stats.values()]
        reason = run.reason or next((r for r in ("deadline", "max_messages") if r in reasons), "empty")
        return RunSummary(
            ok=run.reason not in FAILURES,
            stop_reason=reason,
            elapsed=self.clock.monotonic() - started,
            remaining_at_exit=deadline.remaining(),
            types=run.stats,
            error=run.error,
            token_fetches=self.tokens.fetches - fetches_before,
        )

    # -- one consumer -----------------------------------------------------------
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
    """One receive loop on one queue, with its own MNS clients and delete thread."""

    def __init__(self, drain: Drain, mtype: str, run: _Run):
        self.drain, self.mtype, self.run = drain, mtype, run
        self.stats = run.stats[mtype]
        self.buffer = run.buffers[mtype]
        self.queue: Optional[Queue] = None
        self.pending: list[_Batch] = []  # received by this consumer, not yet handed to a delete
        self.deleter = ThreadPoolExecutor(max_workers=max(1, drain.options.delete_threads),
                                          thread_name_prefix=f"delete-{mtype}")
        self.delete_clients = threading.local()  # one MNS client per delete thread
        self.deletes: list[Future] = []

    def owed_deletes(self) -> int:
        """Delete calls this consumer still has to make: written or unwritten batches it holds."""
        return len(self.pending) + sum(1 for f in self.deletes if not f.done())

    # -- the receive loop -----------------------------------------------------
    def loop(self) -> None:
        d, run, stats = self.drain, self.run, self.stats
        errors_in_row = auth_retries = 0
        while not run.stop.is_set() and not run.empty[self.mtype]:
            self._flush(self.buffer.take_if_due())
            self._settle(block=False)
            budget = d._budget(run, self.owed_deletes())
            if budget < d.timing.receive_overhead + 0.1:
                stats.stop_reason = "deadline"
                return
            wanted = run.reserve(MAX_BATCH)
            if wanted == 0:
                stats.stop_reason = "max_messages"
                return
            try:
                # Bounded like the receive below: a hung token API must not hold the run past its deadline.
                token = d.tokens.get(self.mtype, timeout=budget)
            except TokenError as exc:
                run.release(wanted)
                self._count_error(exc.code)
                if exc.retryable and errors_in_row < d.options.max_consecutive_errors:
                    errors_in_row += 1
                    d.clock.sleep(min(0.2 * 2 ** errors_in_row, max(0.0, budget - 1)))
                    continue
                stats.stop_reason = "token_error"
                run.fail("token_error", str(exc))
                return
            budget = d._budget(run, self.owed_deletes())  # what the token fetch left
            if budget < d.timing.receive_overhead + 0.1:
                run.release(wanted)
                stats.stop_reason = "deadline"
                return
            if self.queue is None or self.queue.token is not token:
                self.queue = d.open_queue(self.mtype, token)
            wait = int(max(0, min(d.options.wait_seconds, budget - d.timing.receive_overhead - 0.5)))
            # A hung connection must not carry the run past its deadline.
            self.queue.set_timeout(max(1.0, min(wait + d.options.mns_timeout, budget)))
            t0 = d.clock.monotonic()
            try:
                messages = self.queue.receive(wanted, wait)
            except QueueError as exc:
                run.release(wanted)
                self._count_call("BatchReceiveMessage")
                self._count_error(exc.code)
                if exc.auth and auth_retries < 2:
                    # The token was refused (expired early, revoked): fetch a fresh one at once.
                    auth_retries += 1
                    d.tokens.invalidate(self.mtype, token)
                    self.queue = None
                    continue
                errors_in_row += 1
                if exc.fatal or exc.auth or errors_in_row > d.options.max_consecutive_errors:
                    stats.stop_reason = "queue_error"
                    run.fail("queue_error", str(exc))
                    return
                d.clock.sleep(min(0.1 * 2 ** errors_in_row, max(0.0, d._budget(run) - 1)))
                continue
            self._count_call("BatchReceiveMessage")
            if messages:
                d.timing.observe("receive_overhead", d.clock.monotonic() - t0 - wait)
            run.release(wanted - len(messages))
            errors_in_row = auth_retries = 0
            if not messages:
                run.empty[self.mtype] = True
                stats.stop_reason = stats.stop_reason or "empty"
                return
            batch = self._decode(messages)
            self.pending.append(batch)
            self._flush(self.buffer.add(batch))

    def finish(self) -> None:
        """Leave nothing in flight: write what is buffered, delete what was written."""
        self._flush(self.buffer.take_if_due(force=True))
        self._settle(block=True)
        for future in self.deletes:
            future.result()
        self.deleter.shutdown(wait=True)

    # -- decode, write, delete ------------------------------------------------
    def _decode(self, messages: list[ReceivedMessage]) -> _Batch:
        records: list[Record] = []
        dead: list[DeadLetter] = []
        for m in messages:
            decoded = decode_message(self.mtype, m.body, m.meta)
            (records if isinstance(decoded, Record) else dead).append(decoded)
        with self.run.lock:
            self.stats.received += len(messages)
            self.stats.batches += 1
            oldest = min(m.meta.enqueue_time for m in messages)
            if self.stats.oldest_enqueue_ms is None or oldest < self.stats.oldest_enqueue_ms:
                self.stats.oldest_enqueue_ms = oldest
        size = sum(len(m.body) for m in messages)
        if dead and self.drain.logger is not None:
            self.drain.logger.warning("dead-lettered messages", extra={
                "message_type": self.mtype, "message_ids": [x.mns.message_id for x in dead],
                "errors": sorted({x.error for x in dead})})
        return _Batch(records, dead, [m.receipt_handle for m in messages], size)

    def _flush(self, batches: list[_Batch]) -> None:
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
            write_by = self.run.deadline.earlier(d.options.safety_margin / 2)
            d.sink.limit_wait(write_by.remaining())
            report = d.sink.write(records, dead, deadline=write_by)
        except Exception as exc:  # any sink failure: keep the messages (they come back)
            with self.run.lock:
                self.stats.errors["sink"] += 1
            self.stats.stop_reason = "sink_error"
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
        """Hand written batches to the delete thread; never delete what was not written."""
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
        """On a delete thread: batch-delete; after an auth refusal retry once with a fresh token.

        Receipt handles outlive the token that received them, so a token that expired
        between receive and delete must not leave stored messages in the queue.
        """
        d = self.drain
        t0 = d.clock.monotonic()
        calls = 0
        outcome: Optional[DeleteOutcome] = None

        def left() -> float:
            # A hung delete (or token fetch) must not carry the run past its deadline (receives
            # are bounded the same way); what is left undeleted reappears and dedupes.
            return self.run.deadline.remaining() - d.options.safety_margin / 2

        for attempt in range(2):
            try:
                if left() <= 0.1:
                    outcome = DeleteOutcome(failed={h: "deadline" for h in handles}, calls=calls)
                    break
                token = d.tokens.get(self.mtype, timeout=left())
                queue = getattr(self.delete_clients, "queue", None)
                if queue is None or queue.token is not token:
                    queue = self.delete_clients.queue = d.open_queue(self.mtype, token)
                if left() <= 0.1:
                    outcome = DeleteOutcome(failed={h: "deadline" for h in handles}, calls=calls)
                    break
                queue.set_timeout(min(d.options.mns_timeout, left()))
                outcome = queue.delete(handles)
                outcome.calls += calls
                break
            except TokenError as exc:
                outcome = DeleteOutcome(failed={h: exc.code for h in handles}, calls=calls)
                break
            except QueueError as exc:
                calls += 1
                # Stored but not deleted: they reappear after the visibility timeout and dedupe.
                outcome = DeleteOutcome(failed={h: exc.code for h in handles}, calls=calls)
                if not exc.auth:
                    break
                queue = getattr(self.delete_clients, "queue", None)
                d.tokens.invalidate(self.mtype, queue.token if queue else None)
                self.delete_clients.queue = None
        d.timing.observe("delete", d.clock.monotonic() - t0)
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
