"""Coalescing: received batches of one message type wait together for one sink write.

Objects are billed per PUT and read best when large, and a table write per 16 rows wastes
round trips: the drain gathers many received batches into one `Sink.write`, bounded by the
sink's batch size and bytes and by time (`max_age`, which the drain keeps well inside the
queue's visibility timeout). Batches written together share one outcome (`Flush`), which
the consumers that received them wait on before deleting.
"""
from __future__ import annotations

import threading

from shared.clock import Clock
from shared.records import DeadLetter, Record


class Flush:
    """The outcome of one coalesced sink write, shared by the batches it carried."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class Batch:
    """One received batch: its decoded content, its handles, and the write that will carry it."""

    __slots__ = ("records", "dead", "handles", "size", "flush")

    def __init__(self, records: list[Record], dead: list[DeadLetter], handles: list[str], size: int):
        self.records, self.dead, self.handles, self.size = records, dead, handles, size
        self.flush = Flush()


class CoalesceBuffer:
    """Batches of one message type waiting for a coalesced write."""

    def __init__(self, max_messages: int, max_bytes: int, max_age: float, clock: Clock):
        self.max_messages, self.max_bytes, self.max_age, self.clock = max_messages, max_bytes, max_age, clock
        self.lock = threading.Lock()
        self.batches: list[Batch] = []
        self.messages = self.bytes = 0
        self.first_at = 0.0

    def add(self, batch: Batch) -> list[Batch]:
        """Queue a batch; return everything buffered if a bound is reached (the caller writes it)."""
        with self.lock:
            if not self.batches:
                self.first_at = self.clock.monotonic()
            self.batches.append(batch)
            self.messages += len(batch.handles)
            self.bytes += batch.size
            if self.messages >= self.max_messages or self.bytes >= self.max_bytes or self.max_age <= 0:
                return self._take()
            return []

    def take_if_due(self, force: bool = False) -> list[Batch]:
        with self.lock:
            if self.batches and (force or self.clock.monotonic() - self.first_at >= self.max_age):
                return self._take()
            return []

    def due_in(self) -> float:
        """Seconds until the oldest buffered batch is due to be written (0 when none waits)."""
        with self.lock:
            if not self.batches:
                return 0.0
            return max(0.0, self.max_age - (self.clock.monotonic() - self.first_at))

    def holds(self, batch: Batch) -> bool:
        with self.lock:
            return any(b is batch for b in self.batches)

    def limit_age(self, seconds: float) -> bool:
        """Lower the time bound (never raise it); True if it was lowered."""
        with self.lock:
            if seconds < self.max_age:
                self.max_age = max(0.0, seconds)
                return True
            return False

    def _take(self) -> list[Batch]:
        taken, self.batches = self.batches, []
        self.messages = self.bytes = 0
        shared = Flush()  # batches taken together share one outcome
        for b in taken:
            b.flush = shared
        return taken
