"""What the drain stores: decoded receipts (`Record`) and undecodable messages (`DeadLetter`).

Both are plain, immutable values. Every record carries a business key that names the
fact it reports (docs/ARCHITECTURE.md, invariant 2), so a redelivered receipt maps to the same key
and every sink can deduplicate by it.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

import msgspec

# Where a record came from. A receipt (pushed by Alicom through MNS) is the authority;
# a send record (pulled from QuerySendDetails by reconcile) only fills a gap and never
# overwrites a receipt with the same key.
SOURCE_RECEIPT = "receipt"
SOURCE_SEND_RECORD = "send_record"


class MnsMeta(msgspec.Struct, frozen=True):
    """The queue's facts about one message: kept with what we store, for audit and lag."""

    message_id: str = ""
    enqueue_time: int = 0  # epoch milliseconds, as MNS reports it
    dequeue_count: int = 0
    first_dequeue_time: int = 0
    next_visible_time: int = 0  # epoch ms; with first_dequeue_time it tells the queue's visibility timeout

    def visibility_seconds(self) -> Optional[float]:
        """The queue's visibility timeout, on the service's clock, when this was the first receive."""
        if self.dequeue_count == 1 and self.first_dequeue_time and self.next_visible_time > self.first_dequeue_time:
            return (self.next_visible_time - self.first_dequeue_time) / 1000.0
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "enqueue_time": self.enqueue_time,
            "dequeue_count": self.dequeue_count,
        }


class _Dated:
    """Partition parts of `event_time` (`YYYY-MM-DD HH:MM:SS`, Beijing)."""

    __slots__ = ()  # a Struct's mixin may add no instance dict
    event_time: str

    @property
    def event_date(self) -> str:
        return self.event_time[:10]

    @property
    def event_hour(self) -> str:
        return self.event_time[11:13] or "00"


class Record(msgspec.Struct, _Dated, frozen=True):
    """One decoded receipt (or reconciled send record) with its business key."""

    message_type: str
    key: str  # e.g. "SmsReport#<biz_id>#<phone_number>"
    body: dict[str, Any]  # every field Alicom sent, unknown ones included
    event_time: str  # "YYYY-MM-DD HH:MM:SS", Asia/Shanghai (the vendor's clock)
    source: str = SOURCE_RECEIPT
    mns: MnsMeta = msgspec.field(default_factory=MnsMeta)

    def as_dict(self) -> dict[str, Any]:
        """The stored form: one JSON object per record, key first for query-time dedupe."""
        return {
            "key": self.key,
            "message_type": self.message_type,
            "source": self.source,
            "event_time": self.event_time,
            "body": self.body,
            "mns": self.mns.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        mns = data.get("mns") or {}
        return cls(
            message_type=data["message_type"],
            key=data["key"],
            body=data["body"],
            event_time=data["event_time"],
            source=data.get("source", SOURCE_RECEIPT),
            mns=MnsMeta(
                message_id=mns.get("message_id", ""),
                enqueue_time=int(mns.get("enqueue_time") or 0),
                dequeue_count=int(mns.get("dequeue_count") or 0),
            ),
        )


class DeadLetter(msgspec.Struct, _Dated, frozen=True):
    """A message that could not become a record: kept whole with the reason, then deleted."""

    message_type: str
    raw_body: str  # exactly what MNS delivered (base64 text, or whatever arrived)
    error: str
    event_time: str  # enqueue time in Asia/Shanghai, for partitioning
    mns: MnsMeta = msgspec.field(default_factory=MnsMeta)

    @property
    def key(self) -> str:
        # MessageId survives redelivery, so a redelivered bad message maps to the same entry.
        ident = self.mns.message_id or hashlib.sha256(self.raw_body.encode("utf-8", "replace")).hexdigest()[:32]
        return f"DLQ#{self.message_type}#{ident}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "message_type": self.message_type,
            "error": self.error,
            "raw_body": self.raw_body,
            "event_time": self.event_time,
            "mns": self.mns.as_dict(),
        }


_CANONICAL = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def canonical_json(value: Any) -> str:
    """Stable JSON text: the same value always gives the same bytes (for hashing and names)."""
    # One encoder for every call (json.dumps with options builds one per call: a quarter of its cost).
    return _CANONICAL.encode(value)
