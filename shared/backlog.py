"""Backlog: is a queue keeping up? Told early in a run, so that a fan-out gets most of it."""
from __future__ import annotations

import threading
from typing import Optional

from shared.clock import Clock, Deadline
from shared.fan_out import FanOut
from shared.queues import MAX_BATCH, ReceivedMessage
from shared.run_summary import TypeStats


class BacklogWatch:
    """Tells, as early in a run as it can, which queues are behind, and starts the fan-out for them.

    A type is behind when a receive came back full and its oldest message had waited longer than
    `backlog_seconds` (more than a schedule period: the last run did not get to it). The decision
    is taken once, when every type has answered its first receive or after a short probe, so
    workers get most of the run's time. An empty or partly filled first receive is not behind:
    no worker is started for a queue that was not full.
    """

    def __init__(self, types: dict[str, TypeStats], lock: threading.Lock, deadline: Deadline, backlog_seconds: float,
                 fan_out: Optional[FanOut], clock: Clock):
        self.types, self.stats_lock, self.fan_out, self.clock = types, lock, fan_out, clock
        self.backlog_ms = backlog_seconds * 1000
        self.started = clock.monotonic()
        self.probe = min(2.0, max(0.2, deadline.remaining() / 10))
        self.answered: set[str] = set()
        self.decided = fan_out is None
        self.lock = threading.Lock()

    def observe(self, mtype: str, messages: list[ReceivedMessage], wanted: int) -> None:
        stats = self.types[mtype]
        full = len(messages) >= wanted == MAX_BATCH
        with self.stats_lock:
            stats.full_receives += full
            stats.last_receive_full = full
            if full and not stats.behind:
                oldest = min(m.meta.enqueue_time for m in messages)
                stats.behind = self.clock.now().timestamp() * 1000 - oldest >= self.backlog_ms
        if not self.decided:
            with self.lock:
                self.answered.add(mtype)
            self.tick()

    def tick(self) -> None:
        """Decide once every type has answered, or the probe is over."""
        if self.decided:
            return
        with self.lock:
            if self.decided or (len(self.answered) < len(self.types)
                                and self.clock.monotonic() - self.started < self.probe):
                return
            self.decided = True
        behind = [t for t, s in self.types.items() if s.behind]
        if behind and self.fan_out is not None:
            self.fan_out.start(behind)
