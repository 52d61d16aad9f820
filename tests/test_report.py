"""The delivery report: its figures against an independent count over generated data, the
sources (file and SQLite sinks), bad input, and the HTML page in headless Chromium.

The generator writes down, for every record it makes, the fact it stands for (day, status,
error code, latency, or why one of them is unknown). The expected figures are computed from
those facts with plain Counters and a sorted list, not with the report's code.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import struct
import subprocess
import tracemalloc
from collections import Counter
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest

from scripts import report as rep
from shared import delivery_report as model
from shared.records import SOURCE_SEND_RECORD, Record
from shared.sinks.file import FileSink
from shared.sinks.sqlite import SqliteSink
from tests.fakes.moto_server import moto, moto_server  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = "apt-get update && apt-get install -y chromium"
FMT = "%Y-%m-%d %H:%M:%S"
FROM, TO = date(2026, 11, 20), date(2026, 11, 26)
CODES = ["MK:0001", "IC:0015", "UNKNOWN", "MI:0029", "MN:0001"]
TEMPLATES = [("ShopCo", "SMS_100001"), ("ShopCo", "SMS_100002"), ("BankX", "SMS_200001")]


def ts(moment: datetime) -> str:
    return moment.strftime(FMT)


class Data:
    """Generated records (with duplicates, shadows, out-of-range days) and the facts they stand for."""

    def __init__(self, seed: int = 1, per_day: int = 60):
        self.rng = random.Random(seed)
        self.records: list[Record] = []  # what a sink would hold
        self.bad_time: list[Record] = []  # no usable event_time (in-memory only: a sink cannot partition them)
        self.sends: list[dict] = []  # one fact per unique in-range send that counts
        self.replies: Counter = Counter()
        self.others: Counter = Counter()
        self.duplicates = 0
        self.outside = 0
        self.n = 0
        dups = []
        for day in [FROM - timedelta(days=1)] + [FROM + timedelta(days=i) for i in range(7)] + [TO + timedelta(days=1)]:
            inside = FROM <= day <= TO
            for _ in range(per_day):
                record, fact = self.receipt(day)
                shadow = self.rng.random() < 0.06
                shadow_first = shadow and self.rng.random() < 0.5
                if shadow_first:  # reconcile wrote it before the late receipt arrived
                    self.add(self.send_record(day, key_of=record), inside, duplicate=True)
                self.add(record, inside, fact)
                if shadow and not shadow_first:
                    self.add(self.send_record(day, key_of=record), inside, duplicate=True)
                if self.rng.random() < 0.05:
                    dups.append((record, inside))
            for _ in range(per_day // 10):  # gaps that only reconcile filled
                record, fact = self.send_record(day)
                self.add(record, inside, fact)
            for i in range(self.rng.randrange(3, 12)):
                self.n += 1
                sent = datetime.combine(day, time(9)) + timedelta(minutes=self.rng.randrange(600))
                body = {"phone_number": self.phone(), "content": "TD", "sign_name": "ShopCo",
                        "send_time": ts(sent), "dest_code": "1234", "sequence_id": self.n}
                reply = Record("SmsUp", f"SmsUp#{body['phone_number']}#{self.n}#{ts(sent)}", body, ts(sent))
                self.add(reply, inside)
                if inside:
                    self.replies[day.isoformat()] += 1
                if i == 0:
                    dups.append((reply, inside))
            if day.day == 22:
                for i in range(3):
                    self.n += 1
                    voice = Record("VoiceReport", f"VoiceReport#call-{self.n}", {"call_id": f"call-{self.n}"},
                                   ts(datetime.combine(day, time(12))))
                    self.add(voice, inside)
                    self.others["VoiceReport"] += 1
        for record, inside in dups:  # redeliveries arrive later, identical
            self.add(record, inside, duplicate=True)
        for event_time in ("not a time", "2026-13-45 99:00:00", ""):
            self.bad_time.append(Record("SmsReport", f"SmsReport#bad-{event_time}#13800000000",
                                        {"success": True}, event_time))
        self.unplaced = Counter({"unparseable event_time": 2, "missing event_time": 1})

    def phone(self) -> str:
        return "1" + self.rng.choice("3456789") + "".join(self.rng.choice("0123456789") for _ in range(9))

    def add(self, record: Record, inside: bool, fact: dict | None = None, duplicate: bool = False) -> None:
        self.records.append(record)
        if not inside:
            self.outside += 1
        elif duplicate:
            self.duplicates += 1
        elif fact is not None:
            self.sends.append(fact)

    def receipt(self, day: date) -> tuple[Record, dict]:
        self.n += 1
        rng = self.rng
        sent = datetime.combine(day, time(8)) + timedelta(seconds=rng.randrange(12 * 3600))
        latency = min(600, int(rng.expovariate(1 / 8)))
        body = {"phone_number": self.phone(), "biz_id": f"{rng.randrange(10**11, 10**12)}^{self.n}",
                "out_id": f"order-{self.n}", "send_time": ts(sent), "report_time": ts(sent + timedelta(seconds=latency)),
                "sms_size": "1"}
        fact = {"day": day.isoformat(), "status": None, "reason": None, "err": None, "sign": "unknown",
                "template": "unknown", "latency": latency, "latency_reason": None, "source": "receipt"}
        kind = rng.random()
        if kind < 0.78:
            body.update(success=True, err_code="DELIVERED", err_msg="ok")
            fact.update(status="delivered", err="DELIVERED")
        elif kind < 0.92:
            code = rng.choice(CODES)
            body.update(success=False, err_code=code, err_msg="failed")
            fact.update(status="failed", err=code)
        elif kind < 0.945:  # no success field, a failure code: status unknown
            code = rng.choice(CODES)
            body.update(err_code=code)
            fact.update(status="unknown", reason="missing success", err=code)
        elif kind < 0.96:
            body.update(success="yes", err_code="DELIVERED")
            fact.update(status="unknown", reason="unparseable success", err="DELIVERED")
        elif kind < 0.975:
            body.update(success=True, err_code="DELIVERED", send_time=sent.strftime("%Y/%m/%d %H:%M"))
            fact.update(status="delivered", err="DELIVERED", latency=None, latency_reason="unparseable send_time")
        elif kind < 0.99:
            body.pop("report_time")
            body.update(success=False, err_code="MK:0001")
            fact.update(status="failed", err="MK:0001", latency=None, latency_reason="missing report_time")
        else:
            body.update(success=True, err_code="DELIVERED", report_time=ts(sent - timedelta(seconds=5)))
            fact.update(status="delivered", err="DELIVERED", latency=None, latency_reason="report_time before send_time")
        event_time = body.get("report_time") or body["send_time"]  # as shared/decode.py picks it
        if event_time[:10] != day.isoformat():  # "report_time before send_time" at 08:00:0x stays the same day
            event_time = body["send_time"]
        key = f"SmsReport#{body['biz_id']}#{body['phone_number']}"
        return Record("SmsReport", key, body, event_time), fact

    def send_record(self, day: date, key_of: Record | None = None) -> tuple[Record, dict] | Record:
        """A row reconcile wrote from QuerySendDetails (API-style or snake_case field names)."""
        self.n += 1
        rng = self.rng
        sent = datetime.combine(day, time(9)) + timedelta(seconds=rng.randrange(10 * 3600))
        latency = rng.randrange(1, 90)
        status = rng.choice([1, 2, 3, 3, 3])
        sign, template = rng.choice(TEMPLATES)
        code = {1: "", 2: rng.choice(CODES), 3: "DELIVERED"}[status]
        received = ts(sent + timedelta(seconds=latency)) if status != 1 else ""
        if rng.random() < 0.5:
            body = {"PhoneNum": self.phone(), "SendStatus": status, "ErrCode": code, "TemplateCode": template,
                    "SignName": sign, "SendDate": ts(sent), "ReceiveDate": received, "Content": "hello"}
        else:
            body = {"phone_number": self.phone(), "send_status": str(status), "err_code": code, "template_code": template,
                    "sign_name": sign, "send_time": ts(sent), "report_time": received}
        event_time = received or ts(sent)
        if key_of is not None:  # the same send as a receipt: the receipt must win
            return Record("SmsReport", key_of.key, body, key_of.event_time, source=SOURCE_SEND_RECORD)
        record = Record("SmsReport", f"SmsReport#rec-{self.n}#{body.get('PhoneNum') or body.get('phone_number')}",
                        body, event_time, source=SOURCE_SEND_RECORD)
        fact = {"day": day.isoformat(), "status": {1: "unknown", 2: "failed", 3: "delivered"}[status],
                "reason": "waiting for receipt (send_status 1)" if status == 1 else None,
                "err": code or "unknown", "sign": sign, "template": template,
                "latency": latency if status != 1 else None,
                "latency_reason": "missing report_time" if status == 1 else None, "source": "send_record"}
        return record, fact


def expected(data: Data) -> dict:
    """The report's figures, counted straight from the generator's facts."""
    sends = data.sends
    status = Counter(f["status"] for f in sends)
    n = len(sends)
    days = [(FROM + timedelta(days=i)).isoformat() for i in range(7)]
    per_day = {d: Counter(f["status"] for f in sends if f["day"] == d) for d in days}
    per_template = {}
    for f in sends:
        per_template.setdefault((f["sign"], f["template"]), Counter())[f["status"]] += 1
    per_err = {}
    for f in sends:
        per_err.setdefault(f["err"], Counter())[f["status"]] += 1
    failed = Counter(f["err"] for f in sends if f["status"] == "failed")
    latencies = sorted(f["latency"] for f in sends if f["latency"] is not None)
    pct = {p: latencies[math.ceil(p / 100 * len(latencies)) - 1] for p in (50, 90, 99)}
    return {
        "sends": n, "delivered": status["delivered"], "failed": status["failed"], "unknown": status["unknown"],
        "rate": status["delivered"] / n,
        "from_send_records": sum(1 for f in sends if f["source"] == "send_record"),
        "per_day": {d: (sum(c.values()), c["delivered"], c["failed"], c["unknown"]) for d, c in per_day.items()},
        "per_template": {k: (sum(c.values()), c["delivered"], c["failed"], c["unknown"]) for k, c in per_template.items()},
        "per_err": {k: (sum(c.values()), c["delivered"], c["failed"], c["unknown"]) for k, c in per_err.items()},
        "top_errors": sorted(failed.items(), key=lambda kv: (-kv[1], kv[0]))[:10],
        "latency": {"count": len(latencies), "p50": pct[50], "p90": pct[90], "p99": pct[99],
                    "min": latencies[0], "max": latencies[-1], "mean": sum(latencies) / len(latencies)},
        "unknown_status": Counter(f["reason"] for f in sends if f["reason"]),
        "unknown_latency": Counter(f["latency_reason"] for f in sends if f["latency_reason"]),
        "replies": {d: data.replies.get(d, 0) for d in days},
        "others": dict(data.others),
        "in_range": n + sum(data.replies.values()) + sum(data.others.values()),
    }


def check_figures(report: dict, want: dict, data: Data, read_types: tuple = ()) -> None:
    """read_types: a sink read takes only these types (the report skips voice partitions)."""
    sms = report["sms"]
    assert (sms["sends"], sms["delivered"], sms["failed"], sms["unknown"]) == \
        (want["sends"], want["delivered"], want["failed"], want["unknown"])
    assert sms["delivery_rate"] == pytest.approx(want["rate"], abs=1e-6)
    assert sms["from_send_records"] == want["from_send_records"] > 0
    assert {d["date"]: (d["sends"], d["delivered"], d["failed"], d["unknown"]) for d in report["per_day"]} == want["per_day"]
    for d in report["per_day"]:
        assert d["delivery_rate"] == pytest.approx(want["per_day"][d["date"]][1] / want["per_day"][d["date"]][0], abs=1e-6)
        assert d["replies"] == want["replies"][d["date"]]
    assert {(t["sign_name"], t["template_code"]): (t["sends"], t["delivered"], t["failed"], t["unknown"])
            for t in report["per_template"]} == want["per_template"]
    assert {e["err_code"]: (e["sends"], e["delivered"], e["failed"], e["unknown"])
            for e in report["per_err_code"]} == want["per_err"]
    assert [(e["err_code"], e["count"]) for e in report["top_errors"]] == want["top_errors"]
    lat = report["latency_seconds"]
    for name in ("count", "p50", "p90", "p99", "min", "max"):
        assert lat[name] == want["latency"][name], name
    assert lat["mean"] == pytest.approx(want["latency"]["mean"], abs=1e-3)
    assert report["data_quality"]["unknown_status"] == dict(want["unknown_status"])
    assert report["data_quality"]["unknown_latency"] == dict(want["unknown_latency"])
    assert report["sms_up"]["replies"] == sum(want["replies"].values())
    assert {d["date"]: d["replies"] for d in report["sms_up"]["per_day"]} == want["replies"]
    others = {} if read_types else want["others"]
    assert report["other_types"] == others
    assert report["records_in_range"] == want["in_range"] - sum(want["others"].values()) + sum(others.values())
    assert not report["empty"]


@pytest.fixture(scope="module")
def data() -> Data:
    return Data(seed=20261125)


# -- figures ---------------------------------------------------------------------------------

def test_figures_equal_an_independent_count(data):
    records = data.records + data.bad_time
    random.Random(3).shuffle(records)  # any order: shadows before or after their receipt, duplicates anywhere
    report = model.build_report(iter(records), FROM, TO)
    check_figures(report, expected(data), data)
    assert report["duplicates_skipped"] == data.duplicates
    assert report["records_outside_range"] == data.outside
    assert report["data_quality"]["unplaced_records"] == dict(data.unplaced)
    assert report["records_read"] == len(records)
    assert report["latency_seconds"]["histogram"] and sum(n for _, n in report["latency_seconds"]["histogram"]) == \
        report["latency_seconds"]["count"]


def test_file_sink_and_sqlite_sink_give_the_same_figures(data, tmp_path, capsys):
    want = expected(data)
    files, db = FileSink(tmp_path / "receipts"), SqliteSink(str(tmp_path / "r.db"))
    receipts = [r for r in data.records if r.source != SOURCE_SEND_RECORD]
    for sink in (files, db):
        # A reconcile run first (its shadows precede their late receipts), then the drain, batch by batch.
        sink.write([r for r in data.records if r.source == SOURCE_SEND_RECORD], [])
        for i in range(0, len(receipts), 100):
            sink.write(receipts[i:i + 100], [])
    db.close()
    stored = {r.key for r in files.iter_records(["SmsReport"]) if r.source != SOURCE_SEND_RECORD}
    assert stored == {r.key for r in receipts if r.message_type == "SmsReport"}
    for argv in (["--sink", "file", "--path", str(tmp_path / "receipts")], ["--sink", "sqlite", "--path", str(tmp_path / "r.db")]):
        assert rep.main(argv + ["--from", FROM.isoformat(), "--to", TO.isoformat(), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        check_figures(report, want, data, read_types=("SmsReport", "SmsUp"))
        assert report["source"].startswith(argv[1])


def test_sink_from_the_environment_like_the_functions(data, tmp_path, monkeypatch, capsys):
    sink = FileSink(tmp_path / "env-receipts")
    sink.write([r for r in data.records if r.source == SOURCE_SEND_RECORD], [])
    sink.write([r for r in data.records if r.source != SOURCE_SEND_RECORD], [])
    for name in ("ALICOM_UID", "ALICOM_QUEUE_NAMES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SINK", "file")
    monkeypatch.setenv("SINK_PATH", str(tmp_path / "env-receipts"))
    assert rep.main(["--from", FROM.isoformat(), "--to", TO.isoformat()]) == 0
    text = capsys.readouterr().out
    want = expected(data)
    assert f"sends {want['sends']}  delivered {want['delivered']}  failed {want['failed']}" in text
    assert "Per sign / template" in text and "Top error codes" in text and "missing success" in text


def test_sqlite_report_counts_no_ledger_row_as_a_send_and_changes_nothing(tmp_path, capsys):
    from shared.ledger import Send, record_sends

    path = tmp_path / "r.db"
    db = SqliteSink(str(path))
    # The send ledger shares the records table: type SmsReport, dated the send's day.
    record_sends(db, [Send("700^0", "13800000001", "2026-11-25 09:00:00"),
                      Send("701^0", "13800000002", "2026-11-25 09:00:01")])
    db.write([Record("SmsReport", "SmsReport#700^0#13800000001",
                     {"success": True, "err_code": "DELIVERED", "send_time": "2026-11-25 09:00:00",
                      "report_time": "2026-11-25 09:00:07"}, "2026-11-25 09:00:07")], [])
    db.close()
    before = path.read_bytes()
    assert rep.main(["--sink", "sqlite", "--path", str(path), "--from", "2026-11-25", "--to", "2026-11-25", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["records_read"], report["sms"]["sends"], report["sms"]["delivered"], report["sms"]["unknown"]) == \
        (1, 1, 1, 0)
    assert path.read_bytes() == before  # a report only reads


def test_a_sink_that_fails_the_read_is_a_clear_error(moto, monkeypatch, capsys):
    from tests.fakes.moto_server import CREDENTIALS, REGION

    for name, value in {"SINK": "s3", "SINK_BUCKET": "missing-bucket", "SINK_ENDPOINT": moto.endpoint,
                        "SINK_REGION": REGION, "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
                        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"]}.items():
        monkeypatch.setenv(name, value)
    assert rep.main(["--from", "2026-11-25", "--to", "2026-11-26"]) == 1
    err = capsys.readouterr().err
    assert "report: s3 sink: list of bucket missing-bucket failed: NoSuchBucket (HTTP 404)" in err
    assert CREDENTIALS["aws_secret_access_key"] not in err


def test_records_are_streamed_not_held(tmp_path):
    """50,000 records from a generator through a table-sink read (no dedupe): memory stays flat."""
    def records():
        for i in range(50_000):
            sent = datetime(2026, 11, 21, 8) + timedelta(seconds=i % 40000)
            yield Record("SmsReport", f"SmsReport#{i}#13800000000",
                         {"success": i % 10 != 0, "err_code": "DELIVERED" if i % 10 else "MK:0001",
                          "send_time": ts(sent), "report_time": ts(sent + timedelta(seconds=i % 97))}, ts(sent))

    tracemalloc.start()
    try:
        report = model.build_report(records(), "2026-11-21", "2026-11-21", dedupe=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report["sms"]["sends"] == 50_000 and report["sms"]["failed"] == 5_000
    assert peak < 3 * 1024 * 1024, f"peak {peak} bytes for 50k records"


# -- bad input ------------------------------------------------------------------------------------

def test_empty_range_gives_an_empty_report_that_says_so(data, tmp_path, capsys):
    report = model.build_report(iter(data.records), "2025-01-01", "2025-01-31")
    assert report["empty"] and "No SMS records between 2025-01-01 and 2025-01-31" in report["note"]
    assert report["sms"]["sends"] == 0 and report["sms"]["delivery_rate"] is None
    assert report["per_day"] == [] and report["latency_seconds"]["p50"] is None
    assert report["records_outside_range"] == len(data.records)
    assert "No SMS records" in rep.format_text(report)
    page = rep.write_html(report, tmp_path / "empty.html").read_text()
    assert "No SMS records between 2025-01-01 and 2025-01-31" in page and "<img" not in page
    assert rep.main(["--sink", "sqlite", "--path", str(tmp_path / "missing.db"), "--from", "2025-01-01"]) == 2
    assert "no SQLite database" in capsys.readouterr().err
    (tmp_path / "empty-sink").mkdir()
    assert rep.main(["--sink", "file", "--path", str(tmp_path / "empty-sink"), "--from", "2025-01-01",
                     "--to", "2025-01-02", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["empty"] is True
    assert model.build_report([], "2026-11-25", "2026-11-25")["empty"]


def test_missing_and_unparseable_fields_are_unknown_with_reasons():
    def sms(key, body, event_time="2026-11-25 10:00:10", source="receipt"):
        return Record("SmsReport", f"SmsReport#{key}#13800000000", body, event_time, source=source)

    base = {"send_time": "2026-11-25 10:00:00", "report_time": "2026-11-25 10:00:10"}
    records = [
        sms("ok", dict(base, success=True, err_code="DELIVERED")),
        sms("no-report", {"success": False, "err_code": "MK:0001", "send_time": "2026-11-25 10:00:00"}),
        sms("bad-send", dict(base, success=True, send_time="yesterday")),
        sms("no-send", {"success": True, "report_time": "2026-11-25 10:00:10"}),
        sms("no-status", dict(base, err_code="IC:0015")),
        sms("bad-status", dict(base, success=1)),
        sms("bad-send-status", dict(base, send_status="n/a"), source=SOURCE_SEND_RECORD),
        sms("no-time", {"success": True}, event_time=""),
        sms("bad-time", {"success": True}, event_time="25/11/2026"),
    ]
    report = model.build_report(records, "2026-11-25", "2026-11-25")
    sms = report["sms"]
    assert (sms["sends"], sms["delivered"], sms["failed"], sms["unknown"]) == (7, 3, 1, 3)
    assert report["data_quality"]["unknown_status"] == {
        "missing success": 1, "unparseable success": 1, "unparseable send_status": 1}
    assert report["data_quality"]["unknown_latency"] == {
        "missing report_time": 1, "unparseable send_time": 1, "missing send_time": 1}
    assert report["data_quality"]["unplaced_records"] == {"missing event_time": 1, "unparseable event_time": 1}
    assert report["latency_seconds"]["count"] == 4
    assert {e["err_code"] for e in report["per_err_code"]} >= {"unknown", "DELIVERED", "MK:0001", "IC:0015"}
    assert model.classify({"SendStatus": "3"}) == ("delivered", None)
    assert model.classify({"success": "false"}) == ("failed", None)
    with pytest.raises(ValueError, match="before"):
        model.build_report([], "2026-11-26", "2026-11-25")
    with pytest.raises(ValueError, match="expected a date"):
        model.build_report([], "25.11.2026", "2026-11-25")


# -- the HTML page in headless Chromium --------------------------------------------------------

def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found: the HTML report test needs Debian's chromium package ({INSTALL_HINT})"
        if os.environ.get("CI"):  # .ci/run installs it: absent there means the install broke
            pytest.fail(message)
        pytest.skip(message)  # -ra in pyproject.toml prints the reason
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={user_data}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", header[16:24])


def screenshot(page: Path, png: Path, user_data: Path) -> subprocess.CompletedProcess:
    return chromium("--window-size=1200,1600", f"--screenshot={png}", page.resolve().as_uri(), user_data=user_data)


def test_html_report_renders_in_headless_chromium(data, tmp_path):
    report = model.build_report(data.records, FROM, TO)
    page = rep.write_html(report, tmp_path / "report.html")
    text = page.read_text()
    assert "http://" not in text and "https://" not in text, "self-contained: nothing to fetch"
    assert text.count("data:image/png;base64,") == 4

    dom = chromium("--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri(), user_data=tmp_path / "ud1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not console_messages(dom.stderr), console_messages(dom.stderr)
    assert 'data-charts="4/4"' in dom.stdout, "every chart image decoded"
    sends = report["sms"]["sends"]
    assert f"<b>{sends}</b>" in dom.stdout and "Per carrier error code" in dom.stdout
    assert "Top error codes" in dom.stdout and "missing success" in dom.stdout

    png = tmp_path / "report.png"
    shot = screenshot(page, png, tmp_path / "ud2")
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    assert not console_messages(shot.stderr)
    assert png_size(png) == (1200, 1600) and png.stat().st_size > 50_000


def test_empty_html_report_renders_too(tmp_path):
    page = rep.write_html(model.build_report([], "2026-11-01", "2026-11-02"), tmp_path / "empty.html")
    dom = chromium("--virtual-time-budget=3000", "--dump-dom", page.resolve().as_uri(), user_data=tmp_path / "ud")
    assert dom.returncode == 0 and not console_messages(dom.stderr)
    assert 'data-charts="0/0"' in dom.stdout and "No SMS records between 2026-11-01 and 2026-11-02" in dom.stdout
