"""What one drain run did: counts per message type, and the run's outcome.

The handler logs it, returns it (or raises `RunFailed` carrying it) and turns it into
metrics (shared/metrics.py), so its dict form is a contract: fields are added, never renamed.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Optional

import msgspec

from shared.structs import repr_hiding

# Why a run or a type stopped and failed, most telling first: a run's overall reason is the
# first of these that any type (or the run) hit.
FAILURES = ("sink_error", "stuck", "token_error", "queue_error", "no_time")
# Why it stopped without failing, in the same spirit.
ENDINGS = ("deadline", "max_messages", "empty")


class TypeStats(msgspec.Struct):
    """Counts for one message type (one queue) in one run."""

    message_type: str
    received: int = 0
    stored: int = 0
    dead_lettered: int = 0
    deleted: int = 0
    delete_failures: int = 0
    batches: int = 0
    sink_writes: int = 0
    api_calls: Counter = msgspec.field(default_factory=Counter)
    errors: Counter = msgspec.field(default_factory=Counter)
    oldest_enqueue_ms: Optional[int] = None
    full_receives: int = 0  # receives that came back with a whole batch
    last_receive_full: bool = False
    behind: bool = False  # early in the run: a full receive whose oldest message was older than the threshold
    oldest_age_seconds: Optional[float] = None  # at the end of the run
    rate_per_second: float = 0.0  # received / the run's time
    stop_reason: str = ""
    error: Optional[str] = None  # the failure that stopped this type, if one did
    last_failure: Optional[tuple[str, str]] = None  # (reason, error) of the last failed call

    __repr__ = repr_hiding("last_failure")

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
            "backlog": {"detected": self.backlog, "oldest_age_seconds": self.oldest_age_seconds,
                        "rate_per_second": round(self.rate_per_second, 1), "full_receives": self.full_receives},
            "stop_reason": self.stop_reason,
            "error": self.error,
        }

    @property
    def backlog(self) -> bool:
        """The queue is not keeping up: it was behind early in the run, or the run stopped (time or
        message cap) while its receives still came back full."""
        return self.behind or (self.stop_reason in ("deadline", "max_messages") and self.last_receive_full)


class RunSummary(msgspec.Struct):
    ok: bool
    stop_reason: str
    elapsed: float
    remaining_at_exit: float
    types: dict[str, TypeStats]
    error: Optional[str] = None
    token_fetches: int = 0
    failed_types: list[str] = msgspec.field(default_factory=list)
    fan_out: Optional[dict[str, Any]] = None  # what a fan-out did (shared/fan_out.py), if it happened

    def total(self, name: str) -> int:
        return sum(getattr(t, name) for t in self.types.values())

    def as_dict(self) -> dict[str, Any]:
        totals: dict[str, Any] = {n: self.total(n) for n in ("received", "stored", "dead_lettered", "deleted",
                                                             "delete_failures", "sink_writes")}
        calls: Counter = Counter()
        for t in self.types.values():
            calls.update(t.api_calls)
        calls["QueryTokenForMnsQueue"] += self.token_fetches
        totals["api_calls"] = dict(calls)
        return {
            "ok": self.ok,
            "stop_reason": self.stop_reason,
            "error": self.error,
            "failed_types": list(self.failed_types),
            "elapsed_seconds": round(self.elapsed, 3),
            "remaining_seconds_at_exit": round(self.remaining_at_exit, 3),
            "totals": totals,
            "types": {k: v.as_dict() for k, v in self.types.items()},
            "fan_out": self.fan_out,
        }


def overall(run_failure: Optional[tuple[str, str]],
            types: dict[str, TypeStats]) -> tuple[str, Optional[str], list[str]]:
    """(stop reason, error, failed types) of a run from its own failure and its types' outcomes."""
    failed = [t for t, s in types.items() if s.stop_reason in FAILURES]
    reasons = [s.stop_reason for s in types.values()] + ([run_failure[0]] if run_failure else [])
    reason = next((r for r in FAILURES + ENDINGS if r in reasons), "empty")
    if run_failure is not None:
        error: Optional[str] = run_failure[1]
    elif failed:
        error = "; ".join(f"{t}: {types[t].error}" for t in failed)
    else:
        error = None
    return reason, error, failed
