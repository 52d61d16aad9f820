import base64
import json

import pytest

from scripts.receipts import BAD_BODIES, b64json, make_receipts
from shared.decode import business_key, decode_message
from shared.records import DeadLetter, MnsMeta, Record, canonical_json

META = MnsMeta(message_id="MID-1", enqueue_time=1795572000000, dequeue_count=1)


def test_sms_report_becomes_record_with_key_and_all_fields():
    body = make_receipts("SmsReport", 1)[0]
    body["future_field"] = {"nested": True}
    record = decode_message("SmsReport", b64json(body), META)
    assert isinstance(record, Record)
    assert record.key == "SmsReport#871757620207^0#14706807800"  # biz_id, then phone_number
    assert record.body == body  # unknown fields kept
    assert record.event_time == body["report_time"]
    assert record.mns.message_id == "MID-1"


@pytest.mark.parametrize("mtype,key", [
    ("SmsUp", "SmsUp#13395004212#100000#2026-11-25 10:00:00"),  # phone_number, sequence_id, send_time
    ("VoiceCallReport", "VoiceCallReport#8186680253^0#200102#2026-11-25 10:00:00"),  # call_id, status_code, status_time
    ("VoiceReport", "VoiceReport#8684506281^0"),  # call_id
])
def test_business_keys_name_the_fact(mtype, key):
    body = make_receipts(mtype, 1)[0]
    assert decode_message(mtype, b64json(body), META).key == key


def test_sequence_id_double_and_int_give_same_key():
    body = make_receipts("SmsUp", 1)[0]
    as_float = dict(body, sequence_id=float(body["sequence_id"]))
    assert business_key("SmsUp", body) == business_key("SmsUp", as_float)


def test_hash_in_key_field_cannot_collide():
    a = business_key("SmsReport", {"biz_id": "a#b", "phone_number": "c"})
    b = business_key("SmsReport", {"biz_id": "a", "phone_number": "b#c"})
    assert a != b


def test_unknown_type_is_kept_with_body_hash_key():
    body = {"anything": 1, "其他": "值"}
    record = decode_message("FlowReport", b64json(body), META)
    assert isinstance(record, Record) and record.body == body
    assert record.key.startswith("FlowReport#sha256:")
    assert record.key == decode_message("FlowReport", b64json(dict(reversed(list(body.items())))), META).key


@pytest.mark.parametrize("raw,reason", list(zip(BAD_BODIES, [
    "not base64", "not UTF-8", "not JSON", "not an object", "missing key field biz_id"])))
def test_bad_bodies_become_dead_letters_with_reason_and_raw_body(raw, reason):
    dead = decode_message("SmsReport", raw, META)
    assert isinstance(dead, DeadLetter)
    assert reason in dead.error
    assert dead.raw_body == raw
    assert dead.key == "DLQ#SmsReport#MID-1"
    assert dead.event_date == "2026-11-25"  # enqueue time in Asia/Shanghai


def test_non_finite_numbers_and_wrong_key_types_are_dead_letters():
    nan = decode_message("SmsUp", base64.b64encode(b'{"a": NaN}').decode(), META)
    assert isinstance(nan, DeadLetter) and nan.error == "body JSON has a non-standard number NaN"
    bad = dict(make_receipts("SmsReport", 1)[0], biz_id={"x": 1})
    assert "biz_id" in decode_message("SmsReport", b64json(bad), META).error


def test_bytes_that_are_not_utf8_are_kept_exactly():
    dead = decode_message("SmsReport", b"\xff\x00", META)
    assert isinstance(dead, DeadLetter)
    assert base64.b64decode(dead.raw_body.removeprefix("base64:")) == b"\xff\x00"


def test_event_times_keep_four_digit_years_on_every_python():
    early = decode_message("FlowReport", b64json({}), MnsMeta(enqueue_time=-30_610_253_143_001))
    assert early.event_time.startswith("0999-") and len(early.event_time) == 19
    body = dict(make_receipts("SmsReport", 1)[0], report_time="0999-01-02 03:04:05")
    assert decode_message("SmsReport", b64json(body), META).event_time == "0999-01-02 03:04:05"


@pytest.mark.parametrize("value,stored", [
    ("2017-06-01 10:00:05", "2017-06-01 10:00:05"),
    ("2017-06-01 10:00:05.123", "2017-06-01 10:00:05"),
    ("2017-6-1 1:0:5", "2017-06-01 01:00:05"),
    ("2017-13-01 10:00:00", None),  # not a real date: the enqueue time is used
    ("yesterday", None),
])
def test_event_time_normalised_or_replaced_by_enqueue_time(value, stored):
    body = dict(make_receipts("SmsReport", 1)[0], report_time=value, send_time="also bad")
    record = decode_message("SmsReport", b64json(body), META)
    assert record.event_time == (stored or "2026-11-25 10:00:00")


def test_canonical_json_bytes_and_body_hash_keys_do_not_drift():
    # Unknown types are keyed by a hash of this text, and the table sinks store it: a change
    # of format (key order, spacing, escapes, numbers) would split one fact into two rows.
    body = {"z": 1, "a": "中文 \u2028 \"q\"", "n": 1.5, "t": True, "x": None, "l": [2, {"b": 1, "a": 0}]}
    assert canonical_json(body) == '{"a":"中文 \u2028 \\"q\\"","l":[2,{"a":0,"b":1}],"n":1.5,"t":true,"x":null,"z":1}'
    raw = base64.b64encode(json.dumps(body, ensure_ascii=False).encode()).decode()
    assert decode_message("FutureReport", raw).key == "FutureReport#sha256:a215764d78b4bd1c670aaa939f950573"


def test_an_emoji_sent_as_an_escaped_surrogate_pair_is_text_not_a_dead_letter():
    # A JSON producer with ensure_ascii sends "\\ud83d\\ude00" for the emoji: a valid pair, unlike a lone half.
    body = {"phone_number": "13800138000", "sequence_id": 7, "send_time": "2026-11-25 10:00:00", "content": "好的😀"}
    raw = base64.b64encode(json.dumps(body, ensure_ascii=True).encode("ascii")).decode("ascii")
    assert "\\ud83d\\ude00" in base64.b64decode(raw).decode("ascii")
    record = decode_message("SmsUp", raw, META)
    assert isinstance(record, Record) and record.body["content"] == "好的😀"


def test_a_body_that_is_neither_text_nor_bytes_is_kept_as_its_text():
    dead = decode_message("SmsReport", 12345, META)
    assert isinstance(dead, DeadLetter) and dead.raw_body == "12345" and dead.error == "body is not base64"


def test_beijing_time_is_the_zone_databases_asia_shanghai_for_every_time_the_vendor_writes():
    """decode.SHANGHAI is a fixed UTC+8 (no zone database at cold start): the same wall time as
    Asia/Shanghai at every hour from 1992 (the last DST was 1991) to 2040."""
    from datetime import datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    from shared.decode import SHANGHAI

    zone = ZoneInfo("Asia/Shanghai")
    start = datetime(1992, 1, 1, tzinfo=timezone.utc)
    for hour in range(0, 48 * 365 * 24, 7):
        moment = start + timedelta(hours=hour)
        assert moment.astimezone(SHANGHAI).replace(tzinfo=None) == moment.astimezone(zone).replace(tzinfo=None)
