"""Reconcile: ask QuerySendDetails about sends whose receipt is missing, store what it says.

Knows nothing of the platform. Two ways in:

- the ledger (`run_ledger`: a scheduled run, or any event without targets): every open
  ledger entry older than the grace period with no receipt row is one target
  (phone, send date, BizId); entries older than the query window are marked expired;
- explicit targets (`run_targets`: a manual event, validated by `ReconcileEvent`).

What comes back becomes `Record`s with `source=send_record`, body in SmsReport's field
names, keyed as the receipt would be — `SmsReport#<biz_id>#<phone_number>` — whenever the
BizId is known (from the ledger or the event). The table sinks' merge rule then holds: a
receipt overwrites a reconciled row, a reconciled row never overwrites a receipt.

Rows from a phone+date query without BizId cannot name their send (the API's rows carry
no BizId). They are keyed `SendRecord#<phone>#<YYYYMMDDHHMMSS send time>#<16 hex of
sha256(template_code, out_id, content)>`, message type SmsReport, and are matched to
receipts at query time by phone_number + send_time (a receipt carries both; it has no
content). Two identical messages to one number within one second share a key.

The run stops taking targets when the time left is below one more call (the slowest
call seen) plus the safety margin; what it did not reach comes back as `unreached`, in
the shape of a manual event, so the next invocation continues from there.
"""
from __future__ import annotations

import hashlib
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Optional, Sequence

from shared import ledger
from shared.clock import SYSTEM_CLOCK, Clock, Deadline
from shared.decode import TIME_FORMAT, format_time
from shared.platform import EventError
from shared.reconcile_event import FIELD_FORMS, MAX_PHONES, ReconcileEvent, parse_reconcile_event
from shared.records import SOURCE_SEND_RECORD, Record, canonical_json
from shared.send_records import (
    PHONE_FORMS,
    QUERY_WINDOW_DAYS,
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_WAITING,
    DeadlineReached,
    PhoneError,
    SendDateError,
    SendDetail,
    SendDetailsError,
    SendRecordClient,
    beijing_today,
    normalize_phone,
)
from shared.sinks.base import NoObjects, Sink

# --- targets -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """One QuerySendDetails question: a phone number on a Beijing date, maybe narrowed to one BizId."""

    phone: str
    day: date
    biz_id: Optional[str] = None
    entry: Optional[dict] = field(default=None, compare=False, hash=False, repr=False)  # its ledger entry


def expand_targets(event: ReconcileEvent, phones_from_file: Optional[list[str]] = None) -> list[Target]:
    """Every (date, phone[, biz_id]) the event names, deduplicated, date by date."""
    seen: dict[tuple, Target] = {}
    if event.is_ledger_run:
        return []
    if event.targets is not None:
        for group in event.targets:
            day = datetime.strptime(group.date, "%Y-%m-%d").date()
            for phone in group.phones:
                seen.setdefault((day, phone, group.biz_id), Target(phone, day, group.biz_id))
    else:
        phones = event.phones if event.phones is not None else (phones_from_file or [])
        for day in event.days():
            for phone in phones:
                seen.setdefault((day, phone, event.biz_id), Target(phone, day, event.biz_id))
    return list(seen.values())


def read_phones_file(spec: str, sink: Optional[Sink]) -> list[str]:
    """Phone numbers from a local file or, with 'sink:<key>', an object of the object sink."""
    if spec.startswith("sink:"):
        key = spec[len("sink:"):].lstrip("/")
        no_objects = EventError(f"invalid event: phones_file: {spec!r} names a sink object, but SINK="
                                f"{getattr(sink, 'name', '?')} holds no objects; expected {FIELD_FORMS['phones_file']}")
        if sink is None:
            raise no_objects
        try:
            data = sink.read_object(key)
        except NoObjects:
            raise no_objects from None
        except Exception as exc:  # each backend raises its own not-found error
            raise EventError(f"invalid event: phones_file: cannot read sink object {key!r} "
                             f"({type(exc).__name__})") from None
    else:
        try:
            data = Path(spec).read_bytes()
        except OSError as exc:
            raise EventError(f"invalid event: phones_file: cannot read {spec!r} ({exc.strerror or exc})") from None
    return parse_phone_list(data, spec)


def parse_phone_list(data: bytes, where: str) -> list[str]:
    import json

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise EventError(f"invalid event: phones_file: {where!r} is not UTF-8 text") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise EventError(f"invalid event: phones_file: {where!r} is not a JSON list ({exc})") from None
        lines = [(i + 1, item) for i, item in enumerate(items)]
    else:
        lines = [(n, line.split(",", 1)[0].strip()) for n, line in enumerate(text.splitlines(), 1)
                 if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise EventError(f"invalid event: phones_file: {where!r} lists no phone number; "
                         f"expected {FIELD_FORMS['phones']}")
    if len(lines) > MAX_PHONES:
        raise EventError(f"invalid event: phones_file: {len(lines)} phone numbers; at most {MAX_PHONES}")
    out = []
    for n, value in lines:
        try:
            out.append(normalize_phone(value))
        except PhoneError as exc:
            raise EventError(f"invalid event: phones_file: line {n}: {exc}; expected {PHONE_FORMS}") from None
    return list(dict.fromkeys(out))


def unreached_event(targets: Sequence[Target]) -> Optional[dict[str, Any]]:
    """Targets as a manual event: {"dates", "phones"[, "biz_id"]} when they form one grid, else {"targets": [...]}."""
    if not targets:
        return None
    groups: dict[tuple[date, Optional[str]], list[str]] = {}
    for t in targets:
        phones = groups.setdefault((t.day, t.biz_id), [])
        if t.phone not in phones:
            phones.append(t.phone)
    phone_sets = {tuple(sorted(p)) for p in groups.values()}
    biz_ids = {b for _, b in groups}
    if len(phone_sets) == 1 and len(biz_ids) == 1:
        event: dict[str, Any] = {"dates": sorted(d.isoformat() for d, _ in groups), "phones": list(phone_sets.pop())}
        biz_id = biz_ids.pop()
        if biz_id:
            event["biz_id"] = biz_id
        return event
    out = []
    for (day, biz_id), phones in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        group: dict[str, Any] = {"date": day.isoformat(), "phones": phones}
        if biz_id:
            group["biz_id"] = biz_id
        out.append(group)
    return {"targets": out}


# --- send records -> records ---------------------------------------------------------------

def send_record_key(phone: str, row: SendDetail) -> str:
    """Key of a row whose BizId is unknown (see the module docstring)."""
    stamp = "".join(ch for ch in row.send_time if ch.isdigit())[:14] or "unknown"
    digest = hashlib.sha256(canonical_json([row.template_code, row.out_id, row.content]).encode("utf-8")).hexdigest()
    return f"SendRecord#{phone}#{stamp}#{digest[:16]}"


def report_body(row: SendDetail, phone: str, biz_id: Optional[str], day: date) -> dict[str, Any]:
    """A send record in SmsReport's field names, plus what only the send record knows."""
    return {
        "phone_number": phone,
        "success": {STATUS_DELIVERED: True, STATUS_FAILED: False}.get(row.status),
        "biz_id": biz_id,
        "out_id": row.out_id,
        "send_time": row.send_time or None,
        "report_time": row.receive_time or None,
        "err_code": row.err_code,
        "send_status": row.status,
        "template_code": row.template_code,
        "content": row.content,
        "send_date": day.strftime("%Y%m%d"),
    }


def _event_time(row: SendDetail, day: date) -> str:
    for value in (row.receive_time, row.send_time):  # SmsReport's order: report_time, then send_time
        try:
            return format_time(datetime.strptime(value.strip()[:19], TIME_FORMAT))
        except (ValueError, AttributeError):
            continue
    return f"{day.isoformat()} 00:00:00"


def to_records(target: Target, rows: Sequence[SendDetail]) -> list[Record]:
    if target.biz_id:
        if not rows:
            return []
        # One send, one key: keep the most settled row (a report over "waiting"), then the latest.
        best = max(rows, key=lambda r: (r.status != STATUS_WAITING, r.receive_time, r.send_time))
        keyed = [(ledger.receipt_key(target.biz_id, target.phone), best)]
    else:
        keyed = [(send_record_key(target.phone, r), r) for r in rows]
    return [Record(message_type="SmsReport", key=key, body=report_body(row, target.phone, target.biz_id, target.day),
                   event_time=_event_time(row, target.day), source=SOURCE_SEND_RECORD)
            for key, row in keyed]


# --- the run ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReconcileOptions:
    grace_seconds: float = 3600
    lookback_days: int = QUERY_WINDOW_DAYS
    concurrency: int = 4
    max_targets: int = 5000
    safety_margin: float = 2.0


@dataclass
class ReconcileReport:
    mode: str  # "ledger" | "targets"
    targets: int = 0
    queried: int = 0
    delivered: int = 0
    failed: int = 0
    waiting: int = 0
    not_found: int = 0
    expired: int = 0
    already_received: int = 0  # ledger entries whose receipt arrived: closed without a query
    refused: int = 0  # ledger entries whose query the API refuses for good (isv.*): closed, not a failure
    records_written: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    unreached: list[Target] = field(default_factory=list)
    stop_reason: str = "done"
    sink_error: Optional[str] = None
    api_calls: int = 0
    retries: int = 0
    elapsed: float = 0.0
    remaining_at_exit: float = 0.0

    @property
    def ok(self) -> bool:
        """False when anything failed: the handler then raises, so the platform sees it. A ledger
        entry the API refuses for good is closed as `refused` instead (counted, not failed):
        otherwise one bad number would fail every scheduled run for 30 days."""
        return self.sink_error is None and not self.errors

    def as_dict(self) -> dict[str, Any]:
        codes = Counter(e["code"] for e in self.errors)
        return {
            "ok": self.ok,
            "mode": self.mode,
            "stop_reason": self.stop_reason,
            "targets": self.targets,
            "queried": self.queried,
            "delivered": self.delivered,
            "failed": self.failed,
            "waiting": self.waiting,
            "not_found": self.not_found,
            "expired": self.expired,
            "already_received": self.already_received,
            "refused": self.refused,
            "records_written": self.records_written,
            "errors": self.errors,
            "error_codes": dict(codes),
            "error": self.sink_error,
            "unreached": unreached_event(self.unreached),
            "unreached_count": len(self.unreached),
            "api_calls": {"QuerySendDetails": self.api_calls},
            "retries": self.retries,
            "elapsed_seconds": round(self.elapsed, 3),
            "remaining_seconds_at_exit": round(self.remaining_at_exit, 3),
        }


class _Run:
    def __init__(self, targets: list[Target], report: ReconcileReport, deadline: Deadline):
        self.targets = targets
        self.report = report
        self.deadline = deadline
        self.next = 0
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.stop = threading.Event()

    def take(self) -> Optional[Target]:
        with self.lock:
            if self.stop.is_set() or self.next >= len(self.targets):
                return None
            target = self.targets[self.next]
            self.next += 1
            return target

    def leave_rest(self, reason: str, target: Optional[Target] = None) -> None:
        """Stop: `target` and everything not yet taken become unreached."""
        with self.lock:
            if target is not None:
                self.report.unreached.append(target)
            if not self.stop.is_set():
                self.stop.set()
                self.report.stop_reason = reason
                self.report.unreached.extend(self.targets[self.next:])
                self.next = len(self.targets)


class Reconciler:
    def __init__(self, client: SendRecordClient, sink: Sink, options: ReconcileOptions = ReconcileOptions(),
                 clock: Clock = SYSTEM_CLOCK, logger: Any = None):
        self.client = client
        self.sink = sink
        self.options = options
        self.clock = clock
        self.logger = logger

    # -- entry points -----------------------------------------------------------------
    def run_ledger(self, deadline: Deadline, max_targets: Optional[int] = None) -> ReconcileReport:
        """Query every open ledger entry past the grace period that has no receipt."""
        report = ReconcileReport(mode="ledger")
        now = self.clock.now()
        scan = ledger.scan_ledger(self.sink, now - timedelta(seconds=self.options.grace_seconds))
        report.already_received = ledger.mark_all(self.sink, scan.received, "received", now.timestamp())
        today = beijing_today(self.clock)
        oldest = max(today - timedelta(days=self.options.lookback_days), today - timedelta(days=QUERY_WINDOW_DAYS))
        targets, expired = [], []
        for entry in scan.pending:
            day = datetime.strptime(entry["send_date"], "%Y%m%d").date()
            if day < oldest:
                expired.append(entry)
            elif day <= today:  # a send time in the future (a skewed clock) waits for its day
                targets.append(Target(entry["phone_number"], day, entry["biz_id"], entry))
        report.expired = ledger.mark_all(self.sink, expired, "expired", now.timestamp())
        return self._run(targets, deadline, report, max_targets)

    def run_targets(self, targets: list[Target], deadline: Deadline,
                    max_targets: Optional[int] = None) -> ReconcileReport:
        return self._run(targets, deadline, ReconcileReport(mode="targets"), max_targets)

    # -- the loop ---------------------------------------------------------------------
    def _run(self, targets: list[Target], deadline: Deadline, report: ReconcileReport,
             max_targets: Optional[int]) -> ReconcileReport:
        started = self.clock.monotonic()
        calls_before, retries_before = self.client.calls, self.client.retries
        report.targets = len(targets)
        cap = min(max_targets or self.options.max_targets, self.options.max_targets)
        run = _Run(targets[:cap], report, deadline)
        if len(targets) > cap:
            report.unreached.extend(targets[cap:])
            report.stop_reason = "max_targets"
        workers = max(1, min(self.options.concurrency, len(run.targets)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile") as pool:
            for f in [pool.submit(self._worker, run) for _ in range(workers)]:
                f.result()
        report.api_calls = self.client.calls - calls_before
        report.retries = self.client.retries - retries_before
        report.elapsed = self.clock.monotonic() - started
        report.remaining_at_exit = deadline.remaining()
        return report

    def _worker(self, run: _Run) -> None:
        while True:
            target = run.take()
            if target is None:
                return
            # Budget: one more call (the slowest seen) plus the margin; the client re-checks per page.
            if run.deadline.remaining() - self.options.safety_margin < self.client.timing.call:
                run.leave_rest("deadline", target)
                return
            try:
                result = self.client.query(target.phone, target.day, target.biz_id, run.deadline)
            except DeadlineReached:
                run.leave_rest("deadline", target)
                return
            except SendDateError as exc:
                if target.entry is not None:  # the day left the window since the scan (midnight in Beijing)
                    with run.write_lock:
                        ledger.mark(self.sink, target.entry, "expired")
                    with run.lock:
                        run.report.expired += 1
                    continue
                self._error(run, target, "InvalidSendDate", str(exc))
                continue
            except SendDetailsError as exc:
                if target.entry is not None and exc.about_the_target:
                    with run.write_lock:
                        ledger.mark(self.sink, target.entry, "refused", checked=True, err_code=exc.code)
                    with run.lock:
                        run.report.refused += 1
                    continue
                self._error(run, target, exc.code, exc.message)
                continue
            if not self._store(run, target, result.rows):
                return

    def _error(self, run: _Run, target: Target, code: str, message: str) -> None:
        with run.lock:
            run.report.errors.append({"phone": target.phone, "date": target.day.isoformat(), "biz_id": target.biz_id,
                                      "code": code, "message": message[:200]})

    def _store(self, run: _Run, target: Target, rows: list[SendDetail]) -> bool:
        records = to_records(target, rows)
        try:
            with run.write_lock:  # backends are not all thread-safe; writes are small
                if records:
                    self.sink.write(records, [])
                self._mark_ledger(target, rows)
        except Exception as exc:  # any sink failure ends the run; the targets stay open for the next one
            with run.lock:
                if run.report.sink_error is None:
                    run.report.sink_error = f"{type(exc).__name__}: {exc}"
            run.leave_rest("sink_error", target)
            return False
        statuses = Counter(r.status for r in rows)
        with run.lock:
            rep = run.report
            rep.queried += 1
            rep.records_written += len(records)
            rep.delivered += statuses[STATUS_DELIVERED]
            rep.failed += statuses[STATUS_FAILED]
            rep.waiting += statuses[STATUS_WAITING]
            rep.not_found += 0 if rows else 1
        return True

    def _mark_ledger(self, target: Target, rows: list[SendDetail]) -> None:
        entry = target.entry
        if entry is None and target.biz_id:
            entry = ledger.get_entry(self.sink, ledger.ledger_key(target.biz_id, target.phone))
        if entry is None:
            return
        if not rows:
            ledger.mark(self.sink, entry, "not_found", checked=True)
            return
        best = max(rows, key=lambda r: (r.status != STATUS_WAITING, r.receive_time, r.send_time))
        status = {STATUS_DELIVERED: "delivered", STATUS_FAILED: "failed"}.get(best.status, "waiting")
        ledger.mark(self.sink, entry, status, checked=True, send_status=best.status, err_code=best.err_code or None)


def log_safe(report: dict[str, Any]) -> dict[str, Any]:
    """The report for a log line: counts and codes, not the phone lists (they can be long)."""
    out = {k: v for k, v in report.items() if k not in ("errors", "unreached")}
    out["errors"] = [{"date": e["date"], "code": e["code"]} for e in report.get("errors", [])][:50]
    return out


__all__ = ["ReconcileEvent", "parse_reconcile_event", "FIELD_FORMS", "Target", "Reconciler", "ReconcileOptions",
           "ReconcileReport", "expand_targets", "read_phones_file", "unreached_event", "to_records", "send_record_key",
           "log_safe"]
