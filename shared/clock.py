"""Time, behind a small interface so tests can move it and the drain can budget it."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware current time (UTC)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for deadlines and durations)."""

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class Deadline:
    """The moment the platform will stop the function, on the monotonic clock."""

    def __init__(self, seconds_left: float, clock: Clock = SYSTEM_CLOCK):
        self.clock = clock
        self.at = clock.monotonic() + seconds_left

    def remaining(self) -> float:
        return self.at - self.clock.monotonic()

    def earlier(self, seconds: float) -> "Deadline":
        """The moment `seconds` before this one (e.g. the deadline less half the safety margin)."""
        deadline = Deadline(0.0, self.clock)
        deadline.at = self.at - seconds
        return deadline

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}s)"
