"""Delivery report over stored receipts: a terminal table, JSON, or a self-contained HTML page.

    python -m scripts.report --from 2026-11-25 --to 2026-11-26             # the sink of SINK=... (env)
    python -m scripts.report --sink file --path demo-output/receipts --html report.html
    python -m scripts.report --sink sqlite --path receipts.db --json

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

Streaming: records are read one at a time and only running counters are kept. Object
sinks (file, s3, oss) may hold a key more than once (a redelivered receipt), so their
keys are deduplicated with an 8-byte digest per distinct key in the range (about 70
bytes each: 1 M receipts ~ 70 MB); table sinks hold one row per key and skip that set.
A receipt outranks a reconciled send record with the same key, as in the table sinks.

Operator/dev tool: needs matplotlib (HTML charts) and tqdm (progress on cloud sinks),
which the function packages do not ship.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import math
import os
import re
import sqlite3
import sys
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union
from zoneinfo import ZoneInfo

from shared.records import SOURCE_SEND_RECORD, Record

SHANGHAI = ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SMS_SEND_TYPES = ("SmsReport",)
REPLY_TYPE = "SmsUp"
READ_TYPES = SMS_SEND_TYPES + (REPLY_TYPE,)
CLOUD_SINKS = ("s3", "oss", "dynamodb", "tablestore")
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
    the length and separator checks keep it as strict as strptime(TIME_FORMAT)."""
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
            raise ValueError(f"--to {self.date_to} is before --from {self.date_from}")
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
        digest = hashlib.blake2b(f"{record.message_type}\n{record.key}".encode("utf-8", "replace"), digest_size=8).digest()
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
            "generated_at": datetime.now(SHANGHAI).strftime(TIME_FORMAT),
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
                             for (s, t), tally in sorted(self.by_template.items(), key=lambda kv: (-kv[1].sends, kv[0]))],
            "per_err_code": [dict(err_code=code, **tally.as_dict(), share=rate(tally.sends, self.total.sends))
                             for code, tally in sorted(self.by_err.items(), key=lambda kv: (-kv[1].sends, kv[0]))],
            "top_errors": [{"err_code": code, "count": n}
                           for code, n in sorted(self.failed_codes.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ERRORS]],
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


def build_report(records: Iterable[Record], date_from: DateLike, date_to: DateLike, *, dedupe: bool = True) -> dict[str, Any]:
    """The report over `records` (any iterable, read once) for Beijing dates date_from..date_to."""
    builder = ReportBuilder(date_from, date_to, dedupe=dedupe)
    for record in records:
        builder.add(record)
    return builder.result()


# ==========================================================================================
# Sources
# ==========================================================================================

def _days(date_from: date, date_to: date) -> Iterator[str]:
    day = date_from
    while day <= date_to:
        yield day.isoformat()
        day += timedelta(days=1)


def iter_object_sink(sink, date_from: date, date_to: date, types: Iterable[str] = READ_TYPES) -> Iterator[Record]:
    """Only the dt= partitions of the range (object sinks partition by event date)."""
    for mtype in types:
        for day in _days(date_from, date_to):
            for path in sorted(sink._list_objects(f"{sink.prefix}type={mtype}/dt={day}/")):
                for entry in sink._decode(sink._get_object(path)):
                    yield Record.from_dict(entry)


def iter_sqlite(path: str, date_from: date, date_to: date, types: Iterable[str] = READ_TYPES) -> Iterator[Record]:
    """Rows of the range through a read-only cursor (streams: no fetchall)."""
    from shared.sinks.base import item_to_record

    if not Path(path).is_file():
        raise FileNotFoundError(f"no SQLite database at {path}")
    db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        types = list(types)
        marks = ", ".join("?" for _ in types)
        cursor = db.execute(f"SELECT * FROM records WHERE message_type IN ({marks}) AND event_date BETWEEN ? AND ?",
                            [*types, date_from.isoformat(), date_to.isoformat()])
        names = [d[0] for d in cursor.description]
        for row in cursor:
            yield item_to_record(dict(zip(names, row)))
    finally:
        db.close()


def open_records(sink_name: Optional[str], path: Optional[str], date_from: DateLike, date_to: DateLike,
                 environ: Optional[dict[str, str]] = None) -> tuple[Iterator[Record], bool, str]:
    """(records, dedupe?, label) from --sink/--path, or from the sink settings in the environment."""
    from shared.sinks.base import ObjectSink

    date_from, date_to = as_date(date_from), as_date(date_to)
    if sink_name == "sqlite" and path:
        return iter_sqlite(path, date_from, date_to), False, f"sqlite {path}"
    if sink_name == "file" and path:
        from shared.sinks.file import FileSink

        if not Path(path).is_dir():
            raise FileNotFoundError(f"no file sink directory at {path}")
        return iter_object_sink(FileSink(path), date_from, date_to), True, f"file {path}"
    from shared.settings import load_settings
    from shared.sinks import make_sink

    env = dict(os.environ if environ is None else environ)
    if sink_name:
        env["SINK"] = sink_name
    if path:
        env["SINK_PATH"] = path
    # The report reads the sink only: queue names are irrelevant but the loader wants one source of them.
    if not env.get("ALICOM_UID") and not env.get("ALICOM_QUEUE_NAMES"):
        env["ALICOM_UID"] = "0"
    settings = load_settings(env)
    sink = make_sink(settings)
    label = f"{settings.sink} {settings.sink_bucket or settings.sink_table or settings.sink_path}"
    if isinstance(sink, ObjectSink):
        records = iter_object_sink(sink, date_from, date_to)
    else:
        records = sink.iter_records(READ_TYPES)
    if settings.sink in CLOUD_SINKS:
        from tqdm import tqdm

        records = tqdm(records, desc=f"reading {settings.sink}", unit=" records", file=sys.stderr, mininterval=0.5)
    return records, isinstance(sink, ObjectSink), label


# ==========================================================================================
# Output: terminal, JSON, HTML
# ==========================================================================================

def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_text(report: dict[str, Any]) -> str:
    out = [f"{report['title']}: {report['date_from']} .. {report['date_to']} (Beijing dates)"]
    if report["empty"]:
        out.append(report["note"])
        out.append(f"({report['records_read']} records read, {report['records_outside_range']} outside the range)")
        return "\n".join(out) + "\n"
    s, lat = report["sms"], report["latency_seconds"]
    out.append(f"sends {s['sends']}  delivered {s['delivered']}  failed {s['failed']}  unknown {s['unknown']}  "
               f"delivery rate {_pct(s['delivery_rate'])}  (receipts {s['from_receipts']}, "
               f"send records {s['from_send_records']}; duplicates skipped {report['duplicates_skipped']})")
    out.append(f"latency send->report: p50 {lat['p50']}s  p90 {lat['p90']}s  p99 {lat['p99']}s  "
               f"(n={lat['count']}, max {lat['max']}s)")
    out.append("\nPer day")
    out.append(_table(["date", "sends", "delivered", "failed", "unknown", "rate", "replies"],
                      [[d["date"], d["sends"], d["delivered"], d["failed"], d["unknown"], _pct(d["delivery_rate"]),
                        d["replies"]] for d in report["per_day"]]))
    out.append("\nPer sign / template")
    out.append(_table(["sign", "template", "sends", "delivered", "failed", "unknown", "rate"],
                      [[t["sign_name"], t["template_code"], t["sends"], t["delivered"], t["failed"], t["unknown"],
                        _pct(t["delivery_rate"])] for t in report["per_template"]]))
    out.append("\nPer error code")
    out.append(_table(["err_code", "sends", "delivered", "failed", "unknown", "share"],
                      [[e["err_code"], e["sends"], e["delivered"], e["failed"], e["unknown"], _pct(e["share"])]
                       for e in report["per_err_code"]]))
    if report["top_errors"]:
        out.append("\nTop error codes (failed sends)")
        out.append(_table(["err_code", "count"], [[e["err_code"], e["count"]] for e in report["top_errors"]]))
    out.append(f"\nSmsUp replies: {report['sms_up']['replies']}")
    quality = report["data_quality"]
    for title, key in (("Status unknown because", "unknown_status"), ("Latency unknown because", "unknown_latency"),
                       ("Records without a usable event_time", "unplaced_records")):
        if quality[key]:
            out.append(f"\n{title}")
            out.append(_table(["reason", "records"], [[k, v] for k, v in quality[key].items()]))
    return "\n".join(out) + "\n"


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def charts(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, PNG data URI) for each chart the data supports."""
    if report["empty"]:
        return []
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = []
    days = report["per_day"]
    labels = [d["date"][5:] for d in days]
    x = range(len(days))
    fig, ax = plt.subplots(figsize=(9, 3.6))
    delivered = [d["delivered"] for d in days]
    failed = [d["failed"] for d in days]
    unknown = [d["unknown"] for d in days]
    ax.bar(x, delivered, color="#2e7d32", label="delivered")
    ax.bar(x, failed, bottom=delivered, color="#c62828", label="failed")
    ax.bar(x, unknown, bottom=[a + b for a, b in zip(delivered, failed)], color="#9e9e9e", label="unknown")
    ax.set_xlim(-0.5 - max(0, 4 - len(days)) / 2, len(days) - 0.5 + max(0, 4 - len(days)) / 2)
    ax.set_ylabel("sends")
    ax.set_xticks(list(x), labels, rotation=45 if len(days) > 10 else 0, ha="right" if len(days) > 10 else "center")
    rate_axis = ax.twinx()
    rate_axis.plot(list(x), [None if d["delivery_rate"] is None else d["delivery_rate"] * 100 for d in days],
                   color="#1565c0", marker="o", label="delivery rate")
    rate_axis.set_ylim(0, 105)
    rate_axis.set_ylabel("delivery rate %")
    handles = ax.get_legend_handles_labels()[0] + rate_axis.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper center", bbox_to_anchor=(0.5, -0.14 if len(days) <= 10 else -0.24),
              fontsize=8, ncol=4, frameon=False)
    ax.set_title("Sends per day and delivery rate")
    out.append(("Sends per day", _png(fig)))

    lat = report["latency_seconds"]
    if lat["count"]:
        fig, ax = plt.subplots(figsize=(9, 3.2))
        values = [v for v, _ in lat["histogram"]]
        counts = [n for _, n in lat["histogram"]]
        ax.bar(values, counts, width=0.9 if len(values) < 200 else 1.0, color="#5c6bc0")
        for p, style in zip(PERCENTILES, ("--", "-.", ":")):
            ax.axvline(lat[f"p{p}"], color="#d84315", linestyle=style, label=f"p{p} = {lat[f'p{p}']} s")
        ax.set_xlabel("seconds from send_time to report_time")
        ax.set_ylabel("receipts")
        ax.legend(fontsize=8)
        ax.set_title("Delivery latency")
        out.append(("Delivery latency", _png(fig)))

    if report["top_errors"]:
        top = list(reversed(report["top_errors"]))
        fig, ax = plt.subplots(figsize=(9, 0.5 + 0.35 * len(top)))
        ax.barh([e["err_code"] for e in top], [e["count"] for e in top], color="#c62828")
        ax.set_xlabel("failed sends")
        ax.set_title("Top error codes")
        out.append(("Top error codes", _png(fig)))

    if report["sms_up"]["replies"]:
        fig, ax = plt.subplots(figsize=(9, 2.8))
        ax.bar(list(x), [d["replies"] for d in report["sms_up"]["per_day"]], color="#00897b")
        ax.set_xlim(-0.5 - max(0, 4 - len(days)) / 2, len(days) - 0.5 + max(0, 4 - len(days)) / 2)
        ax.set_xticks(list(x), labels, rotation=45 if len(days) > 10 else 0, ha="right" if len(days) > 10 else "center")
        ax.set_ylabel("replies")
        ax.set_title("SmsUp replies per day")
        out.append(("SmsUp replies per day", _png(fig)))
    return out


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif;margin:24px auto;max-width:1080px;color:#212121;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#616161;font-size:13px}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}
.card{border:1px solid #e0e0e0;border-radius:6px;padding:10px 14px;min-width:110px}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#616161}
.empty{background:#fff8e1;border:1px solid #ffe082;padding:14px;border-radius:6px;font-size:15px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{padding:4px 10px;border-bottom:1px solid #eee;text-align:left}
th.n,td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#fafafa}
img{max-width:100%;display:block;margin:10px 0}.ok{color:#2e7d32}.bad{color:#c62828}
"""

# Marks the page once every chart image has decoded (the rendering test reads it back).
_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, decoded = 0;
  for (var i = 0; i < images.length; i++) { if (images[i].complete && images[i].naturalWidth > 0) decoded++; }
  document.body.setAttribute("data-charts", decoded + "/" + images.length);
});
"""


def _numeric(value: Any) -> bool:
    return value is None or isinstance(value, (int, float)) or bool(re.fullmatch(r"-?[\d.]+%?|-", str(value)))


def _html_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Numbers right-aligned, text left-aligned (a column follows its first row)."""
    numeric = [all(_numeric(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]
    cls = [" class=n" if n else "" for n in numeric]
    head = "".join(f"<th{c}>{html.escape(h)}</th>" for h, c in zip(headers, cls))
    body = "".join("<tr>" + "".join(f"<td{c}>{html.escape('-' if v is None else str(v))}</td>" for v, c in zip(row, cls))
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict[str, Any]) -> str:
    esc = html.escape
    parts = [f"<h1>{esc(report['title'])}</h1>",
             f"<div class=sub>{esc(report['date_from'])} to {esc(report['date_to'])} (Beijing dates) · "
             f"generated {esc(report['generated_at'])} · {report['records_read']} records read, "
             f"{report['records_in_range']} in range, {report['duplicates_skipped']} duplicates skipped</div>"]
    if report["empty"]:
        parts.append(f"<p class=empty id=empty>{esc(report['note'])}</p>")
    else:
        s, lat = report["sms"], report["latency_seconds"]
        cards = [("sends", s["sends"]), ("delivered", s["delivered"]), ("failed", s["failed"]),
                 ("unknown", s["unknown"]), ("delivery rate", _pct(s["delivery_rate"])),
                 ("latency p50", "-" if lat["p50"] is None else f"{lat['p50']} s"),
                 ("latency p90", "-" if lat["p90"] is None else f"{lat['p90']} s"),
                 ("latency p99", "-" if lat["p99"] is None else f"{lat['p99']} s"),
                 ("SmsUp replies", report["sms_up"]["replies"])]
        parts.append("<div class=cards id=summary>" + "".join(
            f"<div class=card><b>{esc(str(v))}</b><span>{esc(k)}</span></div>" for k, v in cards) + "</div>")
        parts.append(f"<div class=sub>{s['from_receipts']} from receipts, {s['from_send_records']} from reconciled "
                     f"send records. Latency: {esc(lat['method'])}, n={lat['count']}.</div>")
        for title, uri in charts(report):
            parts.append(f"<h2>{esc(title)}</h2><img alt=\"{esc(title)}\" src=\"{uri}\">")
        parts.append("<h2>Per day</h2>" + _html_table(
            ["date", "sends", "delivered", "failed", "unknown", "delivery rate", "SmsUp replies"],
            [[d["date"], d["sends"], d["delivered"], d["failed"], d["unknown"], _pct(d["delivery_rate"]), d["replies"]]
             for d in report["per_day"]]))
        parts.append("<h2>Per sign / template</h2>" + _html_table(
            ["sign", "template", "sends", "delivered", "failed", "unknown", "delivery rate"],
            [[t["sign_name"], t["template_code"], t["sends"], t["delivered"], t["failed"], t["unknown"],
              _pct(t["delivery_rate"])] for t in report["per_template"]]))
        parts.append("<h2>Per carrier error code</h2>" + _html_table(
            ["err_code", "sends", "delivered", "failed", "unknown", "share of sends"],
            [[e["err_code"], e["sends"], e["delivered"], e["failed"], e["unknown"], _pct(e["share"])]
             for e in report["per_err_code"]]))
        if report["top_errors"]:
            parts.append("<h2>Top error codes</h2>" + _html_table(
                ["err_code", "failed sends"], [[e["err_code"], e["count"]] for e in report["top_errors"]]))
        if report["other_types"]:
            parts.append("<h2>Other message types in range</h2>" + _html_table(
                ["type", "records"], [[k, v] for k, v in report["other_types"].items()]))
    quality = report["data_quality"]
    rows = [[what, reason, n] for what, key in (("status", "unknown_status"), ("latency", "unknown_latency"),
                                                ("event_time", "unplaced_records"))
            for reason, n in quality[key].items()]
    parts.append("<h2>Data quality</h2>" + (_html_table(["unknown", "because", "records"], rows) if rows
                                            else "<p class=ok>Every record had the fields the report needs.</p>"))
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content=\"width=device-width,initial-scale=1\"><title>{esc(report['title'])} "
            f"{esc(report['date_from'])}..{esc(report['date_to'])}</title><style>{_CSS}</style></head>"
            f"<body>{''.join(parts)}<script>{_SCRIPT}</script></body></html>")


def write_html(report: dict[str, Any], path: Union[str, os.PathLike]) -> Path:
    """Write the self-contained page (charts embedded as data URIs); returns its path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(report), encoding="utf-8")
    return target


# ==========================================================================================
# Command line
# ==========================================================================================

def beijing_today() -> date:
    return datetime.now(timezone.utc).astimezone(SHANGHAI).date()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="date_from", help="first Beijing date, YYYY-MM-DD (default: 6 days before --to)")
    parser.add_argument("--to", dest="date_to", help="last Beijing date, YYYY-MM-DD (default: today in Beijing)")
    parser.add_argument("--sink", choices=["file", "sqlite", "s3", "oss", "dynamodb", "tablestore"],
                        help="read this sink (default: SINK from the environment, as the functions do)")
    parser.add_argument("--path", help="file sink directory or SQLite file (with --sink file|sqlite)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    parser.add_argument("--html", type=Path, help="also write a self-contained HTML page with charts here")
    args = parser.parse_args(argv)
    try:
        date_to = as_date(args.date_to) if args.date_to else beijing_today()
        date_from = as_date(args.date_from) if args.date_from else date_to - timedelta(days=6)
        records, dedupe, label = open_records(args.sink, args.path, date_from, date_to)
        report = build_report(records, date_from, date_to, dedupe=dedupe)
    except (ValueError, FileNotFoundError) as exc:  # SettingsError is a ValueError
        print(f"report: {exc}", file=sys.stderr)
        return 2
    report["source"] = label
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(format_text(report))
    sys.stdout.flush()
    if args.html:
        print(f"HTML report: {write_html(report, args.html)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
