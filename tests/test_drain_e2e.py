"""The drain end to end: real SDKs over real sockets to the loopback emulator, into local sinks."""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from functions.drain import handler
from scripts.receipts import BAD_BODIES, b64json, make_receipts
from shared.platform import EventError, RunFailed
from shared.runtime import drain_runtime
from shared.settings import SettingsError
from shared.sinks.file import FileSink
from shared.sinks.sqlite import SqliteSink
from tests.conftest import TYPES
from tests.contexts import LambdaContext, fc_context


# The business keys of make_receipts("SmsReport", 30, seed=3): biz_id, then phone_number.
SMS_REPORT_KEYS_SEED_3 = [
    "SmsReport#997075793162^0#13199480772", "SmsReport#753865574553^1#14789141695", "SmsReport#717228110596^2#13954929425",
    "SmsReport#428450275384^3#17619016841", "SmsReport#498936225905^4#13266469573", "SmsReport#747622464637^5#17303258912",
    "SmsReport#555075086925^6#14440275360", "SmsReport#881581966056^7#17576612040", "SmsReport#307884435179^8#16582888773",
    "SmsReport#965965173371^9#18407688782", "SmsReport#926372014411^10#18946773195", "SmsReport#209306290926^11#14186667758",
    "SmsReport#780798609357^12#19989135249", "SmsReport#501773095947^13#14647078445", "SmsReport#146742934268^14#19446171650",
    "SmsReport#209761176859^15#13139563726", "SmsReport#667620386929^16#18158465141", "SmsReport#308380414745^17#13387246134",
    "SmsReport#966485734588^18#19894182277", "SmsReport#954653350337^19#14937152162", "SmsReport#235396113661^20#17302272116",
    "SmsReport#755304970697^21#14098067949", "SmsReport#642457350643^22#17914977082", "SmsReport#653791084382^23#15099375079",
    "SmsReport#638773731995^24#14760877713", "SmsReport#190063408475^25#19846246310", "SmsReport#449712632533^26#13702651003",
    "SmsReport#470377658832^27#14909185843", "SmsReport#919797587708^28#19066302326", "SmsReport#859475338440^29#13996156629",
]


def fill(emulator, per_type: int = 40, bad: bool = True, seed: int = 0) -> dict[str, list[dict]]:
    sent = {}
    for mtype in TYPES:
        bodies = make_receipts(mtype, per_type, seed)
        for body in bodies:
            emulator.enqueue_receipt(emulator.queue_name(mtype), body)
        sent[mtype] = bodies
    if bad:
        for raw in BAD_BODIES:
            emulator.enqueue(emulator.queue_name("SmsReport"), raw)
    return sent


def timer_event(payload: dict | None = None) -> bytes:
    return json.dumps({"triggerTime": "2026-11-25T05:49:00Z", "triggerName": "drain-every-minute",
                       "payload": json.dumps(payload) if payload else ""}).encode()


def wait_until(condition, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.05)


def queue_left(emulator) -> int:
    return sum(emulator.queue_state(emulator.queue_name(t))["visible"] + emulator.queue_state(emulator.queue_name(t))["in_flight"]
               for t in TYPES)


@pytest.mark.parametrize("sink", ["file", "sqlite"])
def test_mixed_messages_all_stored_dead_letters_kept_queue_empty(emulator, drain_env, tmp_path, sink):
    path = str(tmp_path / ("receipts" if sink == "file" else "receipts.db"))
    drain_env(SINK=sink, SINK_PATH=path)
    sent = fill(emulator, per_type=40)
    result = handler(timer_event(), fc_context(timeout=60))
    total = sum(len(v) for v in sent.values())
    assert result["ok"] and result["stop_reason"] == "empty"
    assert result["totals"]["stored"] == total
    assert result["totals"]["dead_lettered"] == len(BAD_BODIES)
    assert result["totals"]["deleted"] == total + len(BAD_BODIES)
    assert queue_left(emulator) == 0
    store = FileSink(path) if sink == "file" else SqliteSink(path)
    lines_per_key = Counter(r.key for r in store.iter_records())  # a key stored twice counts 2
    assert len(lines_per_key) == total and set(lines_per_key.values()) == {1}
    assert {r.message_type for r in store.iter_records()} == set(TYPES)
    dead = list(store.iter_dead_letters())
    assert sorted(d["raw_body"] for d in dead) == sorted(BAD_BODIES)
    # Batches of 16 and one delete per batch: the request count the design promises.
    calls = result["totals"]["api_calls"]
    assert calls["BatchDeleteMessage"] == sum(t["batches"] for t in result["types"].values())
    # Received batches are coalesced: fewer sink writes than batches received.
    assert result["totals"]["sink_writes"] < sum(t["batches"] for t in result["types"].values())
    assert calls["BatchReceiveMessage"] <= (total + len(BAD_BODIES)) / 16 + 2 * len(TYPES) * 2 + 4


def test_redelivery_and_duplicates_leave_one_row_each(emulator, drain_env, tmp_path):
    db = str(tmp_path / "r.db")
    drain_env(SINK="sqlite", SINK_PATH=db)
    queue = emulator.queue_name("SmsReport")
    emulator.create_queue(queue, visibility_timeout=1)
    bodies = make_receipts("SmsReport", 30, seed=3)
    for body in bodies + bodies[:10]:  # ten duplicates enqueued
        emulator.enqueue_receipt(queue, body)
    # First run: stored, but every delete fails, so all 40 come back after the visibility timeout.
    emulator.set_faults(server_error=1.0, apis=["BatchDeleteMessage"])
    first = handler({"message_types": ["SmsReport"]}, LambdaContext(timeout=30))
    assert first["totals"]["received"] == 40 and first["totals"]["deleted"] == 0
    emulator.set_faults()
    time.sleep(1.2)
    second = handler({"message_types": ["SmsReport"]}, LambdaContext(timeout=30))
    assert second["totals"]["received"] == 40 and second["totals"]["deleted"] == 40
    assert emulator.queue_state(queue)["visible"] + emulator.queue_state(queue)["in_flight"] == 0
    sink = SqliteSink(db)
    assert sink.count("records") == 30
    assert sorted(r.key for r in sink.iter_records()) == sorted(SMS_REPORT_KEYS_SEED_3)
    assert max(r.mns.dequeue_count for r in sink.iter_records()) >= 2


def test_token_expiring_mid_run_is_replaced(emulator, drain_env):
    drain_env(TOKEN_REFRESH_BUFFER_SECONDS="0", DRAIN_CONCURRENCY="1")
    emulator.set_token_lifetime(1.0)
    emulator.set_latency(0.05)
    queue = emulator.queue_name("SmsReport")
    for body in make_receipts("SmsReport", 400):
        emulator.enqueue_receipt(queue, body)
    result = handler(timer_event({"message_types": ["SmsReport"]}), fc_context(timeout=60))
    assert result["ok"], result
    assert result["totals"]["stored"] == 400 and queue_left(emulator) == 0
    # The run outlived its first token (1 s long): it fetched another, and every fetch was the
    # drain's own (the emulator counts the same calls); no delete was left undone by an old token.
    fetches = result["totals"]["api_calls"]["QueryTokenForMnsQueue"]
    assert fetches >= 2 and [r["answer"] for r in emulator.token_requests()] == ["OK"] * fetches
    assert result["totals"]["deleted"] == 400 and result["totals"]["delete_failures"] == 0


@pytest.mark.parametrize("tz", ["UTC", "Asia/Shanghai", "America/Los_Angeles"])
def test_expiry_compared_in_shanghai_time_whatever_the_host_zone(emulator, drain_env, monkeypatch, tz):
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        drain_env(TOKEN_REFRESH_BUFFER_SECONDS="120")
        runtime = drain_runtime()
        emulator.set_token_lifetime(600)  # 10 minutes left > 2-minute buffer: kept
        first = runtime.tokens.get("SmsReport")
        assert runtime.tokens.get("SmsReport") is first
        assert 590 < first.seconds_left(runtime.tokens.clock.now()) <= 601  # ExpireTime has whole seconds
        emulator.set_token_lifetime(60)  # 1 minute left < buffer: refreshed on every use
        runtime.tokens.invalidate("SmsReport")
        short = runtime.tokens.get("SmsReport")
        assert runtime.tokens.get("SmsReport") is not short
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_short_deadline_stops_in_time_and_loses_nothing(emulator, drain_env, tmp_path):
    db = str(tmp_path / "r.db")
    drain_env(SINK="sqlite", SINK_PATH=db, DRAIN_SAFETY_MARGIN_SECONDS="0.3", DRAIN_CONCURRENCY="1")
    emulator.set_latency(0.1)
    for mtype in TYPES:  # short enough that undeleted messages come back within the test
        emulator.create_queue(emulator.queue_name(mtype), visibility_timeout=3.0)
    fill(emulator, per_type=150, bad=False)
    started = time.monotonic()
    first = handler(timer_event(), fc_context(timeout=2.0))
    took = time.monotonic() - started
    assert first["ok"] and first["stop_reason"] == "deadline"
    assert took < 2.0, f"ran {took:.2f}s into a 2.0s timeout"
    left = queue_left(emulator)
    # Nothing lost: what was not stored is still queued. A few stored messages may be queued
    # too (a delete with no time left is skipped; they come back and deduplicate).
    assert left > 0 and first["totals"]["stored"] + left >= 600
    assert first["totals"]["deleted"] + left == 600  # every message deleted (after storing) or still queued
    assert first["totals"]["deleted"] <= first["totals"]["stored"]
    emulator.set_latency(0)
    # Messages stored but not deleted are invisible until their visibility timeout ends; the
    # next scheduled run sees them again and stores them a second time without a duplicate.
    wait_until(lambda: all(emulator.queue_state(emulator.queue_name(t))["in_flight"] == 0 for t in TYPES), 6.0)
    second = handler(timer_event(), fc_context(timeout=60))
    assert second["stop_reason"] == "empty" and queue_left(emulator) == 0
    assert second["totals"]["stored"] == left
    assert SqliteSink(db).count("records") == 600


def test_deadline_reserves_time_for_the_deletes_a_coalesced_write_releases(emulator, drain_env, tmp_path):
    # The file sink coalesces up to 2,000 messages per object, so at the deadline one write
    # releases dozens of batches at once, each needing its own delete call. The run must stop
    # receiving early enough that every stored message is also deleted.
    drain_env(SINK="file", SINK_PATH=str(tmp_path / "r"), DRAIN_SAFETY_MARGIN_SECONDS="0.3",
              DRAIN_CONCURRENCY="2", DRAIN_COALESCE_SECONDS="30")
    emulator.set_latency(0.05)
    fill(emulator, per_type=2000, bad=False)
    result = handler(timer_event(), fc_context(timeout=2.5))
    assert result["stop_reason"] == "deadline", result
    assert result["totals"]["stored"] > 0
    assert result["totals"]["delete_failures"] == 0, result["types"]
    assert result["totals"]["deleted"] == result["totals"]["stored"]
    assert queue_left(emulator) == 8000 - result["totals"]["deleted"]


def test_max_messages_from_manual_event(emulator, drain_env):
    fill(emulator, per_type=40, bad=False)
    result = handler(b'{"max_messages": 20, "message_types": ["SmsUp"]}', fc_context())
    assert result["totals"]["received"] == 20 and result["stop_reason"] == "max_messages"
    assert set(result["types"]) == {"SmsUp"}
    assert emulator.queue_state(emulator.queue_name("SmsUp"))["visible"] == 20


def test_sink_failure_deletes_nothing_and_reports(emulator, drain_env, tmp_path):
    blocker = tmp_path / "blocker"  # a usable SINK_PATH whose partitions cannot be created
    blocker.mkdir()
    for mtype in TYPES:
        (blocker / f"type={mtype}").write_text("not a directory")
    drain_env(SINK_PATH=str(blocker))
    for mtype in TYPES:
        emulator.create_queue(emulator.queue_name(mtype), visibility_timeout=1)
    fill(emulator, per_type=10, bad=False)
    with pytest.raises(RunFailed, match="drain run failed: sink_error") as failed:
        handler(timer_event(), fc_context())
    result = failed.value.summary
    assert not result["ok"] and result["stop_reason"] == "sink_error"
    assert "blocker" in result["error"]
    assert result["totals"]["deleted"] == 0
    assert sum(emulator.queue_state(emulator.queue_name(t))["deleted"] for t in TYPES) == 0
    drain_env(SINK_PATH=str(tmp_path / "ok"))
    time.sleep(1.1)  # the in-flight ones come back after the visibility timeout; a later run stores them all
    later = handler(timer_event(), fc_context())
    assert later["ok"] and later["totals"]["stored"] == 40 and queue_left(emulator) == 0


def test_refused_keys_give_a_clear_error_without_retry_storm(emulator, drain_env):
    drain_env(ALIBABA_CLOUD_ACCESS_KEY_SECRET="wrong-secret-value")
    fill(emulator, per_type=5, bad=False)
    emulator.reset_stats()
    with pytest.raises(RunFailed, match="token_error") as failed:
        handler(timer_event(), fc_context())
    result = failed.value.summary
    assert not result["ok"] and result["stop_reason"] == "token_error"
    assert "InvalidAccessKeySecret" in result["error"] or "SignatureDoesNotMatch" in result["error"]
    stats = emulator.stats()
    assert stats.get("QueryTokenForMnsQueue", 0) <= len(TYPES) * 2
    assert stats.get("BatchReceiveMessage", 0) == 0


def test_missing_setting_fails_at_start_before_any_call(emulator, drain_env, monkeypatch):
    monkeypatch.delenv("SINK")
    emulator.reset_stats()
    with pytest.raises(SettingsError, match="SINK"):
        handler(timer_event(), fc_context())
    assert sum(v for k, v in emulator.stats().items() if isinstance(v, int)) == 0


def test_bad_manual_event_rejected_before_any_call(emulator, drain_env):
    emulator.reset_stats()
    with pytest.raises(EventError, match="max_mesages: unknown field"):
        handler({"max_mesages": 5}, LambdaContext())
    assert sum(v for k, v in emulator.stats().items() if isinstance(v, int)) == 0


def test_lambda_and_fc_invocations_drain_the_same_way(emulator, drain_env):
    fill(emulator, per_type=8, bad=False)
    lam = handler({"message_types": ["SmsReport", "SmsUp"]}, LambdaContext(timeout=30))
    fc = handler(b'{"message_types": ["VoiceReport", "VoiceCallReport"]}', fc_context(timeout=30))
    assert lam["request_id"].startswith("aws-") and fc["request_id"].startswith("fc-")
    assert lam["totals"]["stored"] == 16 and fc["totals"]["stored"] == 16
    assert queue_left(emulator) == 0


def test_sqlite_locked_by_another_process_fails_the_write_within_the_deadline(emulator, drain_env, tmp_path):
    import sqlite3

    db = str(tmp_path / "r.db")
    drain_env(SINK="sqlite", SINK_PATH=db, DRAIN_SAFETY_MARGIN_SECONDS="0.5")
    SqliteSink(db).close()  # create the schema
    fill(emulator, per_type=5, bad=False)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # an overlapping writer that holds the lock for longer than the run
    try:
        started = time.monotonic()
        with pytest.raises(RunFailed) as failed:
            handler(timer_event(), fc_context(timeout=3.0))
        took = time.monotonic() - started
        result = failed.value.summary
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not result["ok"] and result["stop_reason"] == "sink_error" and "locked" in result["error"]
    assert took < 3.0, f"waited {took:.2f}s for the lock in a 3 s run"
    assert result["totals"]["deleted"] == 0
