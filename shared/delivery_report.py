"""The delivery report's model: figures over stored SMS records for a range of Beijing dates.

Built from any iterable of records (`build_report`) or from a sink and a date range
(`report_from_sink`); rendering (terminal, JSON, HTML) is the caller's. The result is a plain
dict of figures, so a scheduled function can produce and store it as well as a CLI can print it.

What it counts (Beijing dates of each record's `event_time`, both ends included):
- SMS sends (SmsReport receipts, and records reconcile wrote with source=send_record):
  delivered, failed, unknown; the delivery rate (delivered / sends) per day, per
  sign/template (SmsReport carries neither: "unknown" unless a send record names them)
  and per carrier error code (`err_code`); the top error codes of failed sends.
- Latency from send_time to report_time: p50/p90/p99, exact. The vendor's times have
  whole seconds, so a histogram of whole seconds (one counter per distinct value) is a
  bounded, exact summary; percentiles are nearest-rank.
- SmsUp replies per day.
- Data quality: why a send's status or latency is unknown (missing/unparseable fields).

Streaming: records are read one at a time and only running counters are kept. A sink that may
hold a key more than once (object sinks: a redelivered receipt) is deduplicated with an 8-byte
digest per distinct key in the range (about 70 bytes each: 1 M receipts ~ 70 MB); table sinks
hold one row per key and skip that set. A receipt outranks a reconciled send record with the
same key, as in the table sinks.
"""
from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from shared.decode import SHANGHAI, format_time
from shared.records import SOURCE_SEND_RECORD, Record
from shared.sinks.base import Sink

SMS_SEND_TYPES = ("SmsReport",)
REPLY_TYPE = "SmsUp"
REPORT_TYPES = SMS_SEND_TYPES + (REPLY_TYPE,)  # what a report reads from a sink
PERCENTILES = (50, 90, 99)
TOP_ERRORS = 10
UNKNOWN = "unknown"
DELIVERED, FAILED = "delivered", "failed"
STATUSES = (DELIVERED, FAILED, UNKNOWN)

DateLike = Union[date, str]


# ==========================================================================================
# Reading one record
# ==========================================================================================

def _field(body: dict[str, Any], *names: str) -> Any:
    for name in names:
        value = body.get(name)
        if value is not None and value != "":
            return value
    return None


def parse_time(text: Any) -> Optional[datetime]:
    """"yyyy-MM-dd HH:mm:ss" exactly (the vendor's form), else None. fromisoformat is C-fast;
    the length and separator checks keep it as strict as strptime(shared.decode.TIME_FORMAT)."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if len(text) != 19 or text[10] != " " or text[4] != "-" or text[7] != "-":
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _time(body: dict[str, Any], label: str, *names: str) -> tuple[Optional[datetime], Optional[str]]:
    """A vendor timestamp ("yyyy-MM-dd HH:mm:ss", Beijing), or why there is none."""
    value = _field(body, *names)
    if value is None:
        return None, f"missing {label}"
    parsed = parse_time(value)
    return (parsed, None) if parsed is not None else (None, f"unparseable {label}")


def classify(body: dict[str, Any]) -> tuple[str, Optional[str]]:
    """delivered | failed | unknown, and the reason when unknown.

    A receipt says `success` (bool); a send record from QuerySendDetails says SendStatus
    (1 waiting for a receipt, 2 failed, 3 delivered). Without either, err_code DELIVERED
    still means delivered; anything else is unknown.
    """
    success = body.get("success")
    if isinstance(success, bool):
        return (DELIVERED if success else FAILED), None
    if isinstance(success, str) and success.strip().lower() in ("true", "false"):
        return (DELIVERED if success.strip().lower() == "true" else FAILED), None
    if success is not None:
        return UNKNOWN, "unparseable success"
    status = _field(body, "send_status", "SendStatus")
    if status is not None:
        try:
            code = int(status)
        except (TypeError, ValueError):
            return UNKNOWN, "unparseable send_status"
        if code == 3:
            return DELIVERED, None
        if code == 2:
            return FAILED, None
        if code == 1:
            return UNKNOWN, "waiting for receipt (send_status 1)"
        return UNKNOWN, "unparseable send_status"
    if _field(body, "err_code", "ErrCode") == "DELIVERED":
        return DELIVERED, None
    return UNKNOWN, "missing success"


def event_day(record: Record) -> tuple[Optional[date], Optional[str]]:
    text = record.event_time or ""
    if not text.strip():
        return None, "missing event_time"
    parsed = parse_time(text.strip()[:19])
    return (parsed.date(), None) if parsed is not None else (None, "unparseable event_time")


# ==========================================================================================
# Running aggregates
# ==========================================================================================

class _Tally:
    __slots__ = ("delivered", "failed", "unknown")

    def __init__(self) -> None:
        self.delivered = self.failed = self.unknown = 0

    def add(self, status: str, n: int = 1) -> None:
        setattr(self, status, getattr(self, status) + n)

    @property
    def sends(self) -> int:
        return self.delivered + self.failed + self.unknown

    def as_dict(self) -> dict[str, Any]:
        return {"sends": self.sends, "delivered": self.delivered, "failed": self.failed, "unknown": self.unknown,
                "delivery_rate": rate(self.delivered, self.sends)}


def rate(part: int, whole: int) -> Optional[float]:
    return round(part / whole, 6) if whole else None


def nearest_rank(histogram: Counter, p: float) -> Optional[int]:
    """The p-th percentile (nearest rank) of the values a histogram counts."""
    n = sum(histogram.values())
    if n == 0:
        return None
    rank = max(1, math.ceil(p / 100 * n))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return None  # pragma: no cover - the loop always reaches rank


class ReportBuilder:
    """Feed records one by one (`add`), then `result()`; memory does not grow with the data
    except for the dedupe digests (object sinks only) and one counter per distinct value."""

    def __init__(self, date_from: DateLike, date_to: DateLike, dedupe: bool = True):
        self.date_from, self.date_to = as_date(date_from), as_date(date_to)
        if self.date_to < self.date_from:
            raise ValueError(f"date_to {self.date_to} is before date_from {self.date_from}")
        self.dedupe = dedupe
        self.seen: set[bytes] = set()
        self.pending: dict[bytes, tuple] = {}  # send records, applied at the end unless a receipt came
        self.read = self.in_range = self.outside = self.duplicates = 0
        self.unplaced: Counter = Counter()
        self.total = _Tally()
        self.by_source: Counter = Counter()
        self.by_day: dict[date, _Tally] = defaultdict(_Tally)
        self.by_template: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
        self.by_err: dict[str, _Tally] = defaultdict(_Tally)
        self.failed_codes: Counter = Counter()
        self.unknown_status: Counter = Counter()
        self.unknown_latency: Counter = Counter()
        self.latency: Counter = Counter()
        self.replies_by_day: Counter = Counter()
        self.other_types: Counter = Counter()

    # -- input --------------------------------------------------------------------------
    def add(self, record: Record) -> None:
        self.read += 1
        day, why = event_day(record)
        if day is None:
            self.unplaced[why] += 1
            return
        if not self.date_from <= day <= self.date_to:
            self.outside += 1
            return
        identity = f"{record.message_type}\n{record.key}".encode("utf-8", "replace")
        digest = hashlib.blake2b(identity, digest_size=8).digest()
        if record.message_type in SMS_SEND_TYPES and record.source == SOURCE_SEND_RECORD:
            if self.dedupe and (digest in self.seen or digest in self.pending):
                self.duplicates += 1
                return
            self.in_range += 1
            contribution = self._send(record, day)
            if self.dedupe:
                self.pending[digest] = contribution  # a receipt with the same key may still come
            else:
                self._apply(*contribution)
            return
        if self.dedupe:
            if digest in self.seen:
                self.duplicates += 1
                return
            self.seen.add(digest)
            if digest in self.pending:  # the receipt outranks the send record counted so far
                del self.pending[digest]
                self.in_range -= 1
                self.duplicates += 1
        self.in_range += 1
        if record.message_type in SMS_SEND_TYPES:
            self._apply(*self._send(record, day))
        elif record.message_type == REPLY_TYPE:
            self.replies_by_day[day] += 1
        else:
            self.other_types[record.message_type] += 1

    def _send(self, record: Record, day: date) -> tuple:
        body = record.body if isinstance(record.body, dict) else {}
        status, why = classify(body)
        sign = str(_field(body, "sign_name", "SignName") or UNKNOWN)
        template = str(_field(body, "template_code", "TemplateCode") or UNKNOWN)
        err = str(_field(body, "err_code", "ErrCode") or UNKNOWN)
        sent, why_sent = _time(body, "send_time", "send_time", "SendDate")
        reported, why_reported = _time(body, "report_time", "report_time", "ReceiveDate", "receive_time")
        latency, why_latency = None, why_sent or why_reported
        if sent and reported:
            seconds = int((reported - sent).total_seconds())
            if seconds < 0:
                why_latency = "report_time before send_time"
            else:
                latency = seconds
        return (day, status, why, sign, template, err, latency, why_latency, record.source)

    def _apply(self, day, status, why, sign, template, err, latency, why_latency, source) -> None:
        self.total.add(status)
        self.by_source[source] += 1
        self.by_day[day].add(status)
        self.by_template[(sign, template)].add(status)
        self.by_err[err].add(status)
        if status == FAILED:
            self.failed_codes[err] += 1
        if why:
            self.unknown_status[why] += 1
        if latency is not None:
            self.latency[latency] += 1
        elif why_latency:
            self.unknown_latency[why_latency] += 1

    # -- output -------------------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        for contribution in self.pending.values():
            self._apply(*contribution)
        self.pending.clear()
        days = [self.date_from + timedelta(days=i) for i in range((self.date_to - self.date_from).days + 1)]
        empty = self.in_range == 0
        total = self.total.as_dict()
        total["from_receipts"] = sum(n for s, n in self.by_source.items() if s != SOURCE_SEND_RECORD)
        total["from_send_records"] = self.by_source.get(SOURCE_SEND_RECORD, 0)
        latency_n = sum(self.latency.values())
        return {
            "title": "Alicom SMS delivery report",
            "date_from": self.date_from.isoformat(),
            "date_to": self.date_to.isoformat(),
            "timezone": "Asia/Shanghai",
            "generated_at": format_time(datetime.now(SHANGHAI)),
            "empty": empty,
            "note": (f"No SMS records between {self.date_from} and {self.date_to} (Beijing dates)."
                     if empty else ""),
            "records_read": self.read,
            "records_in_range": self.in_range,
            "records_outside_range": self.outside,
            "duplicates_skipped": self.duplicates,
            "sms": total,
            "latency_seconds": {
                "count": latency_n,
                **{f"p{p}": nearest_rank(self.latency, p) for p in PERCENTILES},
                "min": min(self.latency) if latency_n else None,
                "max": max(self.latency) if latency_n else None,
                "mean": round(sum(v * n for v, n in self.latency.items()) / latency_n, 3) if latency_n else None,
                "method": "exact: histogram of whole seconds, nearest-rank percentiles",
                "histogram": sorted([v, n] for v, n in self.latency.items()),
            },
            "per_day": [dict(date=d.isoformat(), **self.by_day[d].as_dict(), replies=self.replies_by_day.get(d, 0))
                        for d in days] if not empty else [],
            "per_template": [dict(sign_name=s, template_code=t, **tally.as_dict())
                             for (s, t), tally in sorted(self.by_template.items(),
                                                         key=lambda kv: (-kv[1].sends, kv[0]))],
            "per_err_code": [dict(err_code=code, **tally.as_dict(), share=rate(tally.sends, self.total.sends))
                             for code, tally in sorted(self.by_err.items(), key=lambda kv: (-kv[1].sends, kv[0]))],
            "top_errors": [{"err_code": code, "count": n}
                           for code, n in sorted(self.failed_codes.items(),
                                                 key=lambda kv: (-kv[1], kv[0]))[:TOP_ERRORS]],
            "sms_up": {"replies": sum(self.replies_by_day.values()),
                       "per_day": [{"date": d.isoformat(), "replies": self.replies_by_day.get(d, 0)} for d in days]
                       if not empty else []},
            "other_types": dict(sorted(self.other_types.items())),
            "data_quality": {
                "unknown_status": dict(self.unknown_status.most_common()),
                "unknown_latency": dict(self.unknown_latency.most_common()),
                "unplaced_records": dict(self.unplaced.most_common()),
            },
        }


def as_date(value: DateLike) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a date like 2026-11-25, got {value!r}") from None


def build_report(records: Iterable[Record], date_from: DateLike, date_to: DateLike, *,
                 dedupe: bool = True) -> dict[str, Any]:
    """The report over `records` (any iterable, read once) for Beijing dates date_from..date_to."""
    builder = ReportBuilder(date_from, date_to, dedupe=dedupe)
    for record in records:
        builder.add(record)
    return builder.result()


def report_from_sink(sink: Sink, date_from: DateLike, date_to: DateLike, *,
                     message_types: Optional[Iterable[str]] = REPORT_TYPES,
                     progress: Callable[[Iterator[Record]], Iterable[Record]] = iter) -> dict[str, Any]:
    """The report over what `sink` stored for Beijing dates date_from..date_to, read as a stream
    (object sinks read only the partitions of those dates). `message_types` None reads every
    type (others are counted under `other_types`); `progress` may wrap the stream (a CLI's bar)."""
    first, last = as_date(date_from), as_date(date_to)
    records = progress(sink.iter_records(message_types, first, last))
    return build_report(records, first, last, dedupe=not sink.unique_keys)
