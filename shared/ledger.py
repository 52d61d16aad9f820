"""The send ledger: the customer's sending code records each send; reconcile checks the ones
whose receipt never came.

Call `record_sends(sink, sends)` right after `SendSms` / `SendBatchSms` answered OK (one
entry per phone number; `SendBatchSms` gives one BizId for all its numbers). The scheduled
reconcile then takes `pending_sends(sink, older_than)` — entries still open, sent before
`older_than` (now minus RECONCILE_GRACE_SECONDS), with no receipt row
`SmsReport#<biz_id>#<phone_number>` — and asks QuerySendDetails about each with its BizId.

Ledger row (built and read here; the table sink stores it as a row of kind "ledger" beside
the records, and `iter_records` never yields it):

    key           "SEND#<biz_id>#<phone_number>"  ('#' and '%' in a part escaped as %23, %25)
    kind          "ledger"
    message_type  "SmsReport"   source "ledger"
    event_time    send_time     event_date  its date
    body          JSON of the entry below
    message_id "", enqueue_time 0, dequeue_count 0; the sink adds stored_at (and ttl)

Entry (the row's body; what `pending_sends` returns):

    key, biz_id, phone_number   phone as the API takes it: 11 digits, or country code + number
    send_time                   "YYYY-MM-DD HH:MM:SS", Beijing time (naive values are taken as Beijing)
    send_date                   "YYYYMMDD", Beijing: the day QuerySendDetails is asked about
    out_id, template_code, sign_name   as passed to SendSms ("" when not given)
    status        pending | waiting | not_found   still open: asked again on the next run
                  delivered | failed              resolved from the send record (SendStatus 3 / 2)
                  received                        the receipt arrived: nothing to ask
                  expired                         older than the query window: never asked
                  refused                         QuerySendDetails refused the query itself (an isv.*
                                                  code such as isv.MOBILE_NUMBER_ILLEGAL): asking again
                                                  would fail every scheduled run until it expired
    checks        how many times reconcile asked QuerySendDetails about it
    send_status, err_code, checked_at (epoch seconds), recorded_at (epoch seconds)

Recording the same send again resets it to pending (idempotent for the customer's retries;
at worst one more query). Only table sinks (sqlite, dynamodb, tablestore) hold a ledger:
an object store cannot read one row by key.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

from shared.decode import SHANGHAI, TIME_FORMAT, business_key, format_time
from shared.records import SOURCE_RECEIPT, canonical_json
from shared.send_records import PhoneError, normalize_phone
from shared.sinks.base import Sink, TableSink

LEDGER_PREFIX = "SEND"
LEDGER_KIND = "ledger"  # the rows' kind: records reads never yield them
OPEN_STATUSES = ("pending", "waiting", "not_found")
CLOSED_STATUSES = ("delivered", "failed", "received", "expired", "refused")


class LedgerError(ValueError):
    """A send cannot be recorded (malformed field), or the sink holds no ledger."""


@dataclass(frozen=True)
class Send:
    """One SMS sent to one phone number, as the sending code knows it."""

    biz_id: str
    phone_number: str
    send_time: Union[str, datetime, int, float]  # Beijing "YYYY-MM-DD HH:MM:SS", a datetime, or epoch seconds
    out_id: str = ""
    template_code: str = ""
    sign_name: str = ""


@dataclass
class LedgerScan:
    """What one pass over the ledger found."""

    pending: list[dict[str, Any]] = field(default_factory=list)  # open, old enough, no receipt
    received: list[dict[str, Any]] = field(default_factory=list)  # open, but the receipt is there
    too_young: int = 0  # open, still inside the grace period
    closed: int = 0


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace("#", "%23")


def ledger_key(biz_id: str, phone_number: str) -> str:
    return f"{LEDGER_PREFIX}#{_escape(biz_id)}#{_escape(phone_number)}"


def receipt_key(biz_id: str, phone_number: str) -> str:
    """The business key the SmsReport receipt of this send has (shared/decode.py)."""
    return business_key("SmsReport", {"biz_id": biz_id, "phone_number": phone_number})


def require_ledger(sink: Sink) -> TableSink:
    if not isinstance(sink, TableSink):
        raise LedgerError(
            f"SINK={sink.name} cannot hold the send ledger: it needs a table sink (SINK=sqlite, dynamodb or "
            "tablestore), because an object store cannot look up one send by key")
    return sink


def ledger_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The table row that stores `entry` (the format in the module docstring)."""
    return {
        "key": entry["key"],
        "kind": LEDGER_KIND,
        "message_type": "SmsReport",  # the receipt the entry waits for
        "source": "ledger",
        "event_time": entry["send_time"],
        "event_date": entry["send_time"][:10],
        "body": canonical_json(entry),
        "message_id": "",
        "enqueue_time": 0,
        "dequeue_count": 0,
    }


def entry_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The entry a ledger row stores."""
    body = row["body"]
    return json.loads(body) if isinstance(body, str) else dict(body)


def put_entries(sink: Sink, entries: Iterable[Mapping[str, Any]], now: float) -> int:
    """Write (overwrite) entries in one batch; return the backend write calls made."""
    return require_ledger(sink).put_rows([ledger_row(e) for e in entries], now=now)


def get_entry(sink: Optional[Sink], key: str) -> Optional[dict[str, Any]]:
    """The ledger entry stored under `key`; None when there is none, or the sink holds no ledger."""
    if not isinstance(sink, TableSink):
        return None
    row = sink.get(key)
    return entry_of(row) if row is not None and row.get("kind") == LEDGER_KIND else None


def iter_entries(sink: Sink) -> Iterator[dict[str, Any]]:
    """Every ledger entry (reads the whole table)."""
    for row in require_ledger(sink).iter_rows(LEDGER_KIND):
        yield entry_of(row)


def beijing_time(value: Union[str, datetime, int, float]) -> str:
    """Normalise a send time to Beijing "YYYY-MM-DD HH:MM:SS"."""
    if isinstance(value, bool):
        raise LedgerError("send_time: expected a time, got a boolean")
    if isinstance(value, (int, float)):
        return format_time(datetime.fromtimestamp(value, timezone.utc).astimezone(SHANGHAI))
    if isinstance(value, datetime):
        when = value.astimezone(SHANGHAI) if value.tzinfo else value
        return format_time(when)
    try:
        return format_time(datetime.strptime(str(value).strip()[:19], TIME_FORMAT))
    except ValueError:
        raise LedgerError(f"send_time: {str(value)[:40]!r} is not 'YYYY-MM-DD HH:MM:SS' (Beijing time)") from None


def make_entry(send: Union[Send, Mapping[str, Any]], now: float) -> dict[str, Any]:
    data = asdict(send) if isinstance(send, Send) else dict(send)
    unknown = set(data) - {f for f in Send.__dataclass_fields__}
    if unknown:
        raise LedgerError(f"unknown send field(s) {sorted(unknown)}; expected {sorted(Send.__dataclass_fields__)}")
    biz_id = str(data.get("biz_id") or "").strip()
    if not biz_id or len(biz_id) > 256:
        raise LedgerError("biz_id: required, at most 256 characters (the BizId SendSms returned)")
    try:
        phone = normalize_phone(data.get("phone_number"))
    except PhoneError as exc:
        raise LedgerError(f"phone_number: {exc}") from None
    if data.get("send_time") in (None, ""):
        raise LedgerError("send_time: required")
    send_time = beijing_time(data["send_time"])
    return {
        "key": ledger_key(biz_id, phone),
        "biz_id": biz_id,
        "phone_number": phone,
        "send_time": send_time,
        "send_date": send_time[:10].replace("-", ""),
        "out_id": str(data.get("out_id") or ""),
        "template_code": str(data.get("template_code") or ""),
        "sign_name": str(data.get("sign_name") or ""),
        "status": "pending",
        "checks": 0,
        "send_status": None,
        "err_code": None,
        "checked_at": None,
        "recorded_at": int(now),
    }


def record_sends(sink: Sink, sends: Iterable[Union[Send, Mapping[str, Any]]], now: Optional[float] = None) -> int:
    """Record sends as pending ledger entries; return how many. All are validated before any write."""
    require_ledger(sink)
    now = time.time() if now is None else now
    entries = {}
    for send in sends:
        entry = make_entry(send, now)
        entries[entry["key"]] = entry
    put_entries(sink, entries.values(), now)
    return len(entries)


def _cutoff(older_than: Union[datetime, str, int, float]) -> str:
    return beijing_time(older_than)


def scan_ledger(sink: Sink, older_than: Union[datetime, str, int, float]) -> LedgerScan:
    """Open entries sent before `older_than`, split by whether their receipt arrived meanwhile."""
    table = require_ledger(sink)
    cutoff = _cutoff(older_than)
    scan = LedgerScan()
    for entry in iter_entries(table):
        if entry.get("status") not in OPEN_STATUSES:
            scan.closed += 1
            continue
        if entry["send_time"] >= cutoff:  # same fixed-width Beijing format: text order is time order
            scan.too_young += 1
            continue
        row = table.get(receipt_key(entry["biz_id"], entry["phone_number"]))
        (scan.received if row is not None and row.get("source") == SOURCE_RECEIPT else scan.pending).append(entry)
    scan.pending.sort(key=lambda e: (e["send_time"], e["key"]))  # oldest first: closest to expiring
    return scan


def pending_sends(sink: Sink, older_than: Union[datetime, str, int, float, None] = None,
                  grace_seconds: float = 3600, now: Optional[float] = None) -> list[dict[str, Any]]:
    """Open ledger entries sent before `older_than` (default: now - grace) that have no receipt."""
    if older_than is None:
        now_utc = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
        older_than = now_utc - timedelta(seconds=grace_seconds)
    return scan_ledger(sink, older_than).pending


def mark(sink: Sink, entry: Mapping[str, Any], status: str, now: Optional[float] = None, checked: bool = False,
         **fields: Any) -> dict[str, Any]:
    """Store `entry` with a new status (and fields); returns the stored entry."""
    if status not in OPEN_STATUSES + CLOSED_STATUSES:
        raise LedgerError(f"unknown ledger status {status!r}")
    now = time.time() if now is None else now
    updated = dict(entry, status=status, **fields)
    if checked:
        updated["checks"] = int(entry.get("checks") or 0) + 1
        updated["checked_at"] = int(now)
    put_entries(sink, [updated], now)
    return updated


def mark_all(sink: Sink, entries: Iterable[Mapping[str, Any]], status: str, now: Optional[float] = None) -> int:
    """Close or reopen many entries with one batch write; returns how many."""
    if status not in OPEN_STATUSES + CLOSED_STATUSES:
        raise LedgerError(f"unknown ledger status {status!r}")
    updated = [dict(e, status=status) for e in entries]
    put_entries(sink, updated, time.time() if now is None else now)
    return len(updated)
