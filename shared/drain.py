"""The drain loop: receive a batch, store it, delete exactly what was stored, repeat.

Knows nothing of the platform or the backends: it is given a token cache, a way to open
a queue with a token, a sink and a clock. Invariants (DESIGN.md):
1. a message is deleted only after `sink.write` returned for it (or its dead letter);
3. no batch starts unless receive + write + delete (measured) + margin fit before the deadline;
4. undecodable bodies become dead letters and are deleted like any stored message;
5. tokens come from the cache (refreshed before expiry) and are replaced after an auth error.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
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
    concurrency: int = 2
    mns_timeout: float = 10.0
    max_consecutive_errors: int = 5


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
    """Worst observed durations, to budget the next batch against the deadline."""

    def __init__(self) -> None:
        self.receive_overhead = 0.2  # round trip beyond the long-poll wait
        self.write = 0.2
        self.delete = 0.2
        self._lock = threading.Lock()

    def observe(self, name: str, seconds: float) -> None:
        with self._lock:
            setattr(self, name, max(getattr(self, name), seconds))


class _Run:
    """State shared by the worker threads of one run."""

    def __init__(self, message_types: Sequence[str], max_messages: int, deadline: Deadline):
        self.deadline = deadline
        self.stats = {t: TypeStats(t) for t in message_types}
        self.empty = {t: False for t in message_types}
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
        run = _Run(message_types, max_messages or self.options.max_messages, deadline)
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
    def _budget(self, run: _Run) -> float:
        """Seconds left for a receive, after reserving a write, a delete and the margin."""
        t = self.timing
        return run.deadline.remaining() - self.options.safety_margin - t.write - t.delete

    def _worker(self, mtype: str, run: _Run) -> None:
        stats = run.stats[mtype]
        queue: Optional[Queue] = None
        errors_in_row = 0
        auth_retries = 0
        while not run.stop.is_set() and not run.empty[mtype]:
            budget = self._budget(run)
            if budget < self.timing.receive_overhead + 0.1:
                stats.stop_reason = "deadline"
                return
            wanted = run.reserve(MAX_BATCH)
            if wanted == 0:
                stats.stop_reason = "max_messages"
                return
            try:
                token = self.tokens.get(mtype)
            except TokenError as exc:
                run.release(wanted)
                stats.errors[exc.code] += 1
                if exc.retryable and errors_in_row < self.options.max_consecutive_errors:
                    errors_in_row += 1
                    self.clock.sleep(min(0.2 * 2 ** errors_in_row, max(0.0, budget - 1)))
                    continue
                stats.stop_reason = "token_error"
                run.fail("token_error", str(exc))
                return
            if queue is None or queue.token is not token:
                queue = self.open_queue(mtype, token)
            wait = int(max(0, min(self.options.wait_seconds, budget - self.timing.receive_overhead - 0.5)))
            # A hung connection must not carry the run past its deadline.
            queue.set_timeout(max(1.0, min(wait + self.options.mns_timeout, budget)))
            t0 = self.clock.monotonic()
            try:
                messages = queue.receive(wanted, wait)
            except QueueError as exc:
                run.release(wanted)
                stats.api_calls["BatchReceiveMessage"] += 1
                stats.errors[exc.code] += 1
                if exc.auth and auth_retries < 2:
                    # The token was refused (expired early, revoked): fetch a fresh one at once.
                    auth_retries += 1
                    self.tokens.invalidate(mtype, token)
                    queue = None
                    continue
                errors_in_row += 1
                if exc.fatal or exc.auth or errors_in_row > self.options.max_consecutive_errors:
                    stats.stop_reason = "queue_error"
                    run.fail("queue_error", str(exc))
                    return
                self.clock.sleep(min(0.1 * 2 ** errors_in_row, max(0.0, self._budget(run) - 1)))
                continue
            stats.api_calls["BatchReceiveMessage"] += 1
            self.timing.observe("receive_overhead", self.clock.monotonic() - t0 - wait if messages else 0.0)
            run.release(wanted - len(messages))
            errors_in_row = auth_retries = 0
            if not messages:
                run.empty[mtype] = True
                stats.stop_reason = stats.stop_reason or "empty"
                return
            queue = self._store_and_delete(mtype, queue, messages, run)
            if queue is None:
                return

    def _delete(self, mtype: str, queue: Queue, handles: list[str]) -> tuple[DeleteOutcome, Queue]:
        """Delete stored messages; after an auth refusal retry once with a fresh token.

        Receipt handles outlive the token that received them, so a token that expired
        between receive and delete must not leave stored messages in the queue.
        """
        calls = 0
        for attempt in range(2):
            try:
                outcome = queue.delete(handles)
                outcome.calls += calls
                return outcome, queue
            except QueueError as exc:
                calls += 1
                if not exc.auth or attempt == 1:
                    # Stored but not deleted: they reappear after the visibility timeout and dedupe.
                    return DeleteOutcome(failed={h: exc.code for h in handles}, calls=calls), queue
                self.tokens.invalidate(mtype, queue.token)
                try:
                    queue = self.open_queue(mtype, self.tokens.get(mtype))
                except TokenError as token_exc:
                    return DeleteOutcome(failed={h: token_exc.code for h in handles}, calls=calls), queue
        raise AssertionError("unreachable")

    def _store_and_delete(self, mtype: str, queue: Queue, messages: list[ReceivedMessage], run: _Run) -> Optional[Queue]:
        stats = run.stats[mtype]
        records: list[Record] = []
        dead: list[DeadLetter] = []
        for m in messages:
            decoded = decode_message(mtype, m.body, m.meta)
            (records if isinstance(decoded, Record) else dead).append(decoded)
        with run.lock:
            stats.received += len(messages)
            stats.batches += 1
            oldest = min(m.meta.enqueue_time for m in messages)
            if stats.oldest_enqueue_ms is None or oldest < stats.oldest_enqueue_ms:
                stats.oldest_enqueue_ms = oldest
        t0 = self.clock.monotonic()
        try:
            report = self.sink.write(records, dead)
        except Exception as exc:  # any sink failure: keep the messages (they come back)
            with run.lock:
                stats.errors["sink"] += 1
            stats.stop_reason = "sink_error"
            run.fail("sink_error", f"{type(exc).__name__}: {exc}")
            return None
        self.timing.observe("write", self.clock.monotonic() - t0)
        if self.logger is not None:
            # Keys hold phone numbers: the log formatter masks them (shared/logs.py).
            self.logger.debug("stored batch", extra={"message_type": mtype, "records": len(records),
                                                     "first_key": records[0].key if records else None})
            if dead:
                self.logger.warning("dead-lettered messages", extra={
                    "message_type": mtype, "message_ids": [d.mns.message_id for d in dead],
                    "errors": sorted({d.error for d in dead})})
        t1 = self.clock.monotonic()
        outcome, queue = self._delete(mtype, queue, [m.receipt_handle for m in messages])
        self.timing.observe("delete", self.clock.monotonic() - t1)
        with run.lock:
            stats.stored += report.records
            stats.dead_lettered += report.dead_letters
            stats.sink_writes += report.write_calls
            stats.deleted += outcome.deleted
            stats.delete_failures += len(outcome.failed)
            stats.api_calls["BatchDeleteMessage"] += outcome.calls
            for code in outcome.failed.values():
                stats.errors[f"delete:{code}"] += 1
        if outcome.failed and self.logger is not None:
            self.logger.warning("delete failures (messages will be redelivered and deduplicated)",
                                extra={"message_type": mtype, "failed": len(outcome.failed),
                                       "codes": sorted(set(outcome.failed.values()))})
        return queue
