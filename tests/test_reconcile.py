"""Reconcile end to end: the real drain and reconcile handlers, the SDKs over real sockets to the
emulator, one sqlite sink (object sinks where the test says so)."""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from functions.drain import handler as drain
from functions.reconcile import handler as reconcile
from shared.ledger import LedgerError, Send, get_entry, iter_entries, ledger_key, pending_sends, receipt_key, record_sends
from shared.platform import EventError, RunFailed
from shared.sinks.sqlite import SqliteSink
from tests.contexts import LambdaContext, fc_context

BEIJING = ZoneInfo("Asia/Shanghai")


def beijing(days: float = 0, hours: float = 0) -> datetime:
    return datetime.now(BEIJING) - timedelta(days=days, hours=hours)


def ymd(when: datetime) -> str:
    return when.strftime("%Y%m%d")


def timer_event() -> bytes:
    return json.dumps({"triggerTime": "2026-11-25T18:00:00Z", "triggerName": "reconcile-daily", "payload": "{}"}).encode()


def receipt(biz_id: str, phone: str, sent: datetime, ok: bool = True) -> dict:
    return {"phone_number": phone, "success": ok, "biz_id": biz_id, "out_id": f"out-{biz_id}",
            "send_time": sent.strftime("%Y-%m-%d %H:%M:%S"),
            "report_time": (sent + timedelta(seconds=9)).strftime("%Y-%m-%d %H:%M:%S"),
            "err_code": "DELIVERED" if ok else "MK:0001", "err_msg": "用户接收成功", "sms_size": "1"}


def drain_receipts(emulator, bodies) -> dict:
    for body in bodies:
        emulator.enqueue_receipt(emulator.queue_name("SmsReport"), body)
    result = drain({"message_types": ["SmsReport"]}, LambdaContext(timeout=30))
    assert result["ok"] and result["totals"]["stored"] == len(bodies), result
    return result


def sqlite(env) -> SqliteSink:
    return SqliteSink(env["SINK_PATH"])


def calls(emulator) -> int:
    return emulator.stats()["QuerySendDetails"]


def test_scheduled_reconcile_fills_exactly_the_missing_receipts_and_a_late_receipt_merges(emulator, reconcile_env):
    env = reconcile_env()
    sent = beijing(hours=3)
    sends = [Send(f"9006{i:014d}^0", f"1380000{i:04d}", sent + timedelta(seconds=i), out_id=f"order-{i}",
                  template_code="SMS_123", sign_name="Alicom") for i in range(8)]
    young = Send("9007^0", "13900000077", beijing(hours=0.1))  # inside the grace period
    old = Send("9008^0", "13900000088", beijing(days=40))  # beyond what the API answers for
    sink = sqlite(env)
    assert record_sends(sink, sends + [young, old]) == 10
    # Every send has a send record; receipts arrive for the even ones only.
    statuses = {1: 3, 3: 2, 5: 1, 7: 3}
    for i, s in enumerate(sends):
        emulator.add_send_record(s.phone_number, ymd(sent), s.biz_id, statuses.get(i, 3),
                                 err_code="MK:0001" if statuses.get(i) == 2 else "DELIVERED",
                                 template_code="SMS_123", content=f"code {i}",
                                 send_time=(sent + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S"),
                                 out_id=f"order-{i}")
    drain_receipts(emulator, [receipt(s.biz_id, s.phone_number, sent) for s in sends[::2]])
    # Oldest first; the 40-day-old one too (reconcile marks it expired rather than asking).
    assert [e["key"] for e in pending_sends(sink, grace_seconds=3600)] == [ledger_key(s.biz_id, s.phone_number)
                                                                            for s in [old] + sends[1::2]]
    emulator.reset_stats()

    result = reconcile(timer_event(), fc_context(timeout=60))
    assert result["ok"] and result["mode"] == "ledger" and result["trigger"] == "timer", result
    assert (result["queried"], result["delivered"], result["failed"], result["waiting"]) == (4, 2, 1, 1)
    assert (result["already_received"], result["expired"], result["not_found"], result["unreached"]) == (4, 1, 0, None)
    assert calls(emulator) == 4  # exactly the missing ones, each with its BizId
    rows = {r.key: r for r in sink.iter_records()}
    assert set(rows) == {receipt_key(s.biz_id, s.phone_number) for s in sends}  # ledger rows are not records
    for i, s in enumerate(sends):
        row = rows[receipt_key(s.biz_id, s.phone_number)]
        if i % 2 == 0:
            assert row.source == "receipt"
        else:
            assert row.source == "send_record" and row.body["biz_id"] == s.biz_id
            assert row.body["send_status"] == statuses[i] and row.body["content"] == f"code {i}"
            assert row.body["success"] is {3: True, 2: False, 1: None}[statuses[i]]
    status = {e["phone_number"]: e["status"] for e in iter_entries(sink)}
    assert [status[s.phone_number] for s in sends] == ["received", "delivered", "received", "failed",
                                                       "received", "waiting", "received", "delivered"]
    assert (status["13900000077"], status["13900000088"]) == ("pending", "expired")

    # The next run asks only about the one still waiting.
    emulator.reset_stats()
    again = reconcile(timer_event(), fc_context(timeout=60))
    assert (again["queried"], again["waiting"], calls(emulator)) == (1, 1, 1)

    # Its receipt arrives late: it merges into the reconciled row (one row, the receipt's data).
    late = receipt(sends[5].biz_id, sends[5].phone_number, sent, ok=False)
    drain_receipts(emulator, [late])
    assert len(list(sink.iter_records())) == 8  # (the table also holds the 10 ledger rows)
    row = sink.get(receipt_key(sends[5].biz_id, sends[5].phone_number))
    assert row["source"] == "receipt" and json.loads(row["body"]) == late
    # A reconcile after that does not overwrite the receipt.
    emulator.reset_stats()
    third = reconcile({"dates": [sent.strftime("%Y-%m-%d")], "phones": [sends[5].phone_number],
                       "biz_id": sends[5].biz_id}, LambdaContext(timeout=30))
    assert third["queried"] == 1 and json.loads(sink.get(row["key"])["body"]) == late


def test_manual_range_pages_through_every_phone_day(emulator, reconcile_env):
    env = reconcile_env()
    days = [beijing(days=d) for d in (3, 2, 1)]
    phones = {"13800000001": 101, "13800000002": 51, "13800000003": 0}  # pages: 3, 2, 1 (empty)
    for day in days:
        for phone, n in phones.items():
            for i in range(n):
                emulator.add_send_record(phone, ymd(day), f"b{i}", 3 if i % 10 else 1, content=f"m{i}",
                                         send_time=day.strftime("%Y-%m-%d ") + f"08:{i // 60:02d}:{i % 60:02d}")
    event = {"date_from": days[0].strftime("%Y-%m-%d"), "date_to": days[-1].strftime("%Y-%m-%d"),
             "phones": list(phones)}
    result = reconcile(json.dumps(event).encode(), fc_context(timeout=60))
    assert result["ok"] and result["unreached"] is None, result
    assert calls(emulator) == 3 * (3 + 2 + 1) == result["api_calls"]["QuerySendDetails"]
    assert (result["queried"], result["not_found"]) == (9, 3)
    assert result["delivered"] + result["waiting"] == 3 * (101 + 51) == result["records_written"]
    keys = [r.key for r in sqlite(env).iter_records()]
    assert len(keys) == len(set(keys)) == 3 * 152
    assert all(k.startswith("SendRecord#1380000000") for k in keys)
    # Rerunning a day stores nothing twice.
    reconcile({"dates": [days[1].strftime("%Y-%m-%d")], "phones": ["13800000002"]}, LambdaContext(timeout=60))
    assert sqlite(env).count("records") == 3 * 152


def test_deadline_too_short_leaves_unreached_targets_a_second_run_completes(emulator, reconcile_env):
    env = reconcile_env(RECONCILE_CONCURRENCY="2", RECONCILE_SAFETY_MARGIN_SECONDS="0.5")
    day = beijing(days=1)
    phones = [f"1370000{i:04d}" for i in range(16)]
    for p in phones:
        emulator.add_send_record(p, ymd(day), "b", 3)
    emulator.set_latency(0.25)
    started = time.monotonic()
    first = reconcile({"dates": [day.strftime("%Y-%m-%d")], "phones": phones}, LambdaContext(timeout=2.0))
    elapsed = time.monotonic() - started
    assert elapsed < 2.0 and first["stop_reason"] == "deadline", first
    assert 0 < first["queried"] < 16 and first["queried"] + first["unreached_count"] == 16
    follow_up = first["unreached"]
    assert set(follow_up) <= {"dates", "phones", "targets"}
    emulator.set_latency(0)
    second = reconcile(follow_up, LambdaContext(timeout=30))
    assert second["ok"] and second["unreached"] is None and second["queried"] == first["unreached_count"]
    assert {r.body["phone_number"] for r in sqlite(env).iter_records()} == set(phones)


def test_one_phone_refused_the_rest_continue_and_throttling_that_clears_is_retried(emulator, reconcile_env):
    reconcile_env()
    day = beijing(days=2)
    phones = ["13800000011", "13800000012", "13800000013"]
    for p in phones:
        emulator.add_send_record(p, ymd(day), "b", 3)
    emulator.set_send_details_error("isv.BUSINESS_LIMIT_CONTROL", phones=["13800000012"])
    event = {"dates": [day.strftime("%Y-%m-%d")], "phones": phones}
    with pytest.raises(RunFailed, match="reconcile run failed") as failed:
        reconcile(event, LambdaContext(timeout=30))
    result = failed.value.summary
    assert not result["ok"] and result["queried"] == 2 and result["delivered"] == 2
    assert result["error_codes"] == {"isv.BUSINESS_LIMIT_CONTROL": 1}
    assert [(e["phone"], e["code"]) for e in result["errors"]] == [("13800000012", "isv.BUSINESS_LIMIT_CONTROL")]
    assert result["retries"] == 4  # RECONCILE_MAX_ATTEMPTS=5 tries for the refused one

    emulator.set_send_details_error(None)
    emulator.set_faults(throttle=1.0, apis=["sms"])
    emulator.reset_stats()

    def clear():
        while emulator.stats()["QuerySendDetails"] < 3:
            time.sleep(0.002)
        emulator.set_faults()

    threading.Thread(target=clear, daemon=True).start()
    retried = reconcile(event, LambdaContext(timeout=30))
    assert retried["ok"] and retried["queried"] == 3 and retried["retries"] >= 3, retried


BAD_EVENTS = [
    ({"dates": ["2020-01-01"], "phones": ["13800000000"]}, "dates"),
    ({"dates": [(datetime.now(BEIJING) + timedelta(days=2)).strftime("%Y-%m-%d")], "phones": ["13800000000"]}, "future"),
    ({"dates": ["2026/11/01"], "phones": ["13800000000"]}, "YYYY-MM-DD"),
    ({"date_from": "2026-11-01", "phones": ["13800000000"]}, "date_to"),
    ({"dates": ["TODAY"], "phones": []}, "phones"),
    ({"dates": ["TODAY"], "phones": ["1380000000"]}, "phones: item 0: malformed phone number"),
    ({"dates": ["TODAY"], "phones": [13800000000]}, "phones.0"),
    ({"dates": ["TODAY"]}, "phones: required"),
    ({"phones": ["13800000000"]}, "dates: required"),
    ({"dates": ["TODAY"], "phones": ["13800000000"], "bizid": "x"}, "bizid: unknown field"),
    ({"targets": [{"date": "TODAY", "phones": ["+44"]}]}, "targets.0.phones"),
    ({"dates": ["TODAY"], "phones_file": "PHONES_FILE"}, "phones_file: line 3"),
    ({"dates": ["TODAY"], "phones_file": "/nonexistent/phones.txt"}, "phones_file: cannot read"),
    ({"dates": ["TODAY"], "phones_file": "sink:phones.txt"}, "names a sink object, but SINK=sqlite holds no objects"),
    (b"{not json", "not valid JSON"),
]


@pytest.mark.parametrize("event, says", BAD_EVENTS, ids=[s for _, s in BAD_EVENTS])
def test_bad_events_rejected_before_any_api_call(emulator, reconcile_env, tmp_path, event, says):
    reconcile_env()
    phones_file = tmp_path / "phones.txt"
    phones_file.write_text("# customers\n13800000001\n1380000000X\n")
    today = datetime.now(BEIJING).strftime("%Y-%m-%d")
    if isinstance(event, dict):
        event = json.loads(json.dumps(event).replace("TODAY", today).replace("PHONES_FILE", str(phones_file)))
    with pytest.raises(EventError) as exc:
        reconcile(event if isinstance(event, dict) else event, fc_context(timeout=30) if isinstance(event, bytes)
                  else LambdaContext(timeout=30))
    assert says in str(exc.value)
    assert any(w in str(exc.value) for w in ("expected", "accepted fields", "JSON", "cannot read"))
    assert "13800000001" not in str(exc.value)
    assert emulator.stats()["rpc_total"] == 0


def test_phones_file_from_the_object_sink_and_ledger_needs_a_table_sink(emulator, reconcile_env, tmp_path):
    root = tmp_path / "files"
    reconcile_env(SINK="file", SINK_PATH=str(root))
    day = beijing(days=1)
    (root / "reconcile").mkdir(parents=True)
    (root / "reconcile" / "phones.txt").write_text("13800000021\n+8613800000022, vip\n\n# done\n")
    emulator.add_send_record("13800000022", ymd(day), "biz-22", 3)
    result = reconcile({"dates": [day.strftime("%Y-%m-%d")], "phones_file": "sink:reconcile/phones.txt"},
                       LambdaContext(timeout=30))
    assert result["ok"] and (result["queried"], result["delivered"], result["not_found"]) == (2, 1, 1)
    assert calls(emulator) == 2
    with pytest.raises(LedgerError) as exc:
        reconcile({"_trigger": "schedule"}, LambdaContext(timeout=30))
    assert "SINK=file" in str(exc.value)


def test_biz_id_from_the_event_keys_like_the_receipt_and_closes_its_ledger_entry(emulator, reconcile_env):
    env = reconcile_env()
    sent = beijing(hours=2)
    sink = sqlite(env)
    record_sends(sink, [{"biz_id": "77^1", "phone_number": "+8613800000031", "send_time": sent}])
    emulator.add_send_record("13800000031", ymd(sent), "77^1", 2, err_code="MK:0001")
    emulator.add_send_record("13800000031", ymd(sent), "other", 3)
    result = reconcile({"dates": [sent.strftime("%Y-%m-%d")], "phones": ["13800000031"], "biz_id": "77^1"},
                       LambdaContext(timeout=30))
    assert result["ok"] and result["failed"] == 1 and result["records_written"] == 1
    row = sink.get(receipt_key("77^1", "13800000031"))
    assert row["source"] == "send_record" and json.loads(row["body"])["err_code"] == "MK:0001"
    assert get_entry(sink, ledger_key("77^1", "13800000031"))["status"] == "failed"
    # The scheduled run (Lambda, EventBridge Scheduler input) has nothing left to ask.
    emulator.reset_stats()
    ledger_run = reconcile({"_trigger": "schedule"}, LambdaContext(timeout=30))
    assert ledger_run["trigger"] == "timer" and ledger_run["targets"] == 0 and calls(emulator) == 0


def test_ledger_is_validated_and_kept_out_of_records(reconcile_env):
    env = reconcile_env()
    sink = sqlite(env)
    for bad, says in [({"biz_id": "", "phone_number": "13800000000", "send_time": 0}, "biz_id"),
                      ({"biz_id": "1", "phone_number": "12", "send_time": 0}, "phone_number"),
                      ({"biz_id": "1", "phone_number": "13800000000", "send_time": "soon"}, "send_time"),
                      ({"biz_id": "1", "phone_number": "13800000000", "send_time": 0, "to": "x"}, "unknown")]:
        with pytest.raises(LedgerError, match=says):
            record_sends(sink, [bad])
    when = datetime(2026, 11, 24, 17, 30, tzinfo=timezone.utc)  # 01:30 on the 25th in Beijing
    record_sends(sink, [Send("1#2", "13800000000", when)])
    entry = get_entry(sink, ledger_key("1#2", "13800000000"))
    assert entry["key"] == "SEND#1%232#13800000000"
    assert (entry["send_time"], entry["send_date"], entry["status"]) == ("2026-11-25 01:30:00", "20261125", "pending")
    assert list(sink.iter_records()) == [] and sink.count("records") == 1
    assert pending_sends(sink, older_than=when) == []
    assert [e["key"] for e in pending_sends(sink, older_than=when + timedelta(seconds=1))] == [entry["key"]]


def test_reconcile_run_emits_its_counts_as_a_metric_line(emulator, reconcile_env, capsys):
    reconcile_env()
    day = beijing(days=1)
    for i in range(3):
        emulator.add_send_record("13800000009", ymd(day), f"m{i}", 3, content=f"c{i}",
                                 send_time=day.strftime("%Y-%m-%d ") + f"09:00:0{i}")
    result = reconcile(json.dumps({"dates": [day.strftime("%Y-%m-%d")], "phones": ["13800000009"]}).encode(),
                       fc_context(timeout=60))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"metric_set"' in line]
    metric = next(line for line in lines if line["metric_set"] == "alicom_reconcile_run")
    assert metric["delivered"] == result["delivered"] == 3
    assert metric["queried"] == result["queried"] == 1
    assert metric["run_failed"] == 0
    assert "13800000009" not in json.dumps(lines)


def test_a_ledger_entry_the_api_refuses_for_good_is_closed_not_failed_every_night(emulator, reconcile_env):
    """isv.MOBILE_NUMBER_ILLEGAL answers the same query the same way forever: on the ledger path it
    closes that entry as `refused` (the run succeeds), while a refusal that may pass (5xx) fails the
    run and keeps the entry open; a manual target refused the same way fails the run."""
    env = reconcile_env(RECONCILE_MAX_ATTEMPTS="2")
    sent = beijing(hours=3)
    good, bad = Send("7001^0", "13800000071", sent), Send("7002^0", "13800000072", sent)
    sink = sqlite(env)
    record_sends(sink, [good, bad])
    emulator.add_send_record(good.phone_number, ymd(sent), good.biz_id, 3)
    emulator.set_send_details_error("isv.MOBILE_NUMBER_ILLEGAL", phones=[bad.phone_number])
    result = reconcile(timer_event(), fc_context(timeout=60))
    assert result["ok"] and (result["queried"], result["delivered"], result["refused"]) == (1, 1, 1), result
    status = {e["phone_number"]: (e["status"], e["err_code"]) for e in iter_entries(sink)}
    assert status[bad.phone_number] == ("refused", "isv.MOBILE_NUMBER_ILLEGAL")
    emulator.reset_stats()
    again = reconcile(timer_event(), fc_context(timeout=60))
    assert again["ok"] and again["queried"] == 0 and emulator.stats().get("QuerySendDetails", 0) == 0

    with pytest.raises(RunFailed, match="reconcile run failed") as failed:
        reconcile({"dates": [sent.strftime("%Y-%m-%d")], "phones": [bad.phone_number]}, LambdaContext(timeout=30))
    assert failed.value.summary["error_codes"] == {"isv.MOBILE_NUMBER_ILLEGAL": 1}

    third = Send("7003^0", "13800000073", sent)
    record_sends(sink, [third])
    emulator.set_send_details_error("InternalError", phones=[third.phone_number])
    with pytest.raises(RunFailed) as failed:
        reconcile(timer_event(), fc_context(timeout=60))
    assert failed.value.summary["error_codes"] == {"InternalError": 1}
    assert {e["phone_number"]: e["status"] for e in iter_entries(sink)}[third.phone_number] == "pending"
