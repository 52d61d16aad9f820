"""Tests that close gaps a mutation run (scripts/mutation/run) found in shared/decode.py.

An unreadable time field gives way to the next one (not at once to the enqueue time); an empty
key field is a dead letter that names the field. `_normalise_time` has a regex fast path
before strptime: a mutant without the fast path survived, and it was not equivalent while the
regex's `\\d` took any Unicode digit (a time in Arabic-Indic digits became the record's event
time and partition, dt=٢٠٢٦-١١-٢٥); the regex is ASCII-only since. The fast path checks every
field of a canonical time for range: mutants that left the minute or the second unchecked
survived until a test fed it a minute or second of 61.
"""
from __future__ import annotations

import base64
import json

import pytest

from shared.decode import decode_message
from shared.records import DeadLetter, MnsMeta, Record


def b64(body: dict) -> str:
    return base64.b64encode(json.dumps(body).encode("utf-8")).decode("ascii")


META = MnsMeta("MID-1", 1795572000000, 1)  # enqueued 2026-11-25 10:00:00 in Beijing


def test_a_time_in_non_ascii_digits_is_not_taken_as_the_event_time():
    """Found by a mutation run: the canonical-time regex matched any Unicode digit, so a time in
    Arabic-Indic digits went into the record (and the object sinks' partition names) as it came.
    strptime refuses it, as it refuses any other unreadable time: the send time is used."""
    body = {"biz_id": "871757620207^0", "phone_number": "14706807800",
            "report_time": "٢٠٢٦-١١-٢٥ 10:00:00", "send_time": "2026-11-25 09:59:00"}
    record = decode_message("SmsReport", b64(body), META)
    assert isinstance(record, Record)
    assert (record.event_time, record.event_date) == ("2026-11-25 09:59:00", "2026-11-25")  # the send time


@pytest.mark.parametrize("report_time", [
    "2026-11-25 10:61:00", "2026-11-25 10:00:61", "2026-11-25 24:00:00", "2026-02-30 10:00:00", "2026-13-01 10:00:00",
])
def test_a_canonical_looking_time_out_of_range_is_refused_field_by_field(report_time):
    body = {"biz_id": "871757620207^0", "phone_number": "14706807800",
            "report_time": report_time, "send_time": "2026-11-24 23:59:00"}
    record = decode_message("SmsReport", b64(body), META)
    assert isinstance(record, Record)
    assert (record.event_time, record.event_date) == ("2026-11-24 23:59:00", "2026-11-24")  # the send time


def test_an_unreadable_report_time_falls_back_to_the_send_time_not_the_enqueue_time():
    body = {"biz_id": "871757620207^0", "phone_number": "14706807800",
            "report_time": "25/11/2026 10:00", "send_time": "2026-11-24 23:59:00"}
    record = decode_message("SmsReport", b64(body), META)
    assert isinstance(record, Record)
    assert (record.event_time, record.event_date) == ("2026-11-24 23:59:00", "2026-11-24")


@pytest.mark.parametrize("value,error", [
    ("", "missing key field biz_id"),
    (None, "missing key field biz_id"),
    ("   ", "key field biz_id is empty or longer than 256 characters"),
])
def test_an_empty_key_field_is_a_dead_letter_saying_which_field(value, error):
    dead = decode_message("SmsReport", b64({"biz_id": value, "phone_number": "14706807800"}), META)
    assert isinstance(dead, DeadLetter) and dead.error == error


def test_a_key_field_of_the_wrong_type_is_a_dead_letter_naming_field_and_type():
    dead = decode_message("SmsReport", b64({"biz_id": {"x": 1}, "phone_number": "14706807800"}), META)
    assert isinstance(dead, DeadLetter)
    assert dead.error == "key field biz_id is a dict, expected a string or number"


def test_a_fractional_sequence_id_is_kept_in_the_key_as_written():
    # Two replies differing only in a fractional sequence_id must not share a key.
    body = {"phone_number": "13800138000", "sequence_id": 1.5, "send_time": "2026-11-25 10:00:00"}
    assert decode_message("SmsUp", b64(body), META).key == "SmsUp#13800138000#1.5#2026-11-25 10:00:00"


def test_a_key_field_over_256_characters_is_a_dead_letter_and_256_is_a_record():
    fits = decode_message("SmsReport", b64({"biz_id": "b" * 256, "phone_number": "14706807800"}), META)
    assert isinstance(fits, Record) and fits.key == "SmsReport#" + "b" * 256 + "#14706807800"
    over = decode_message("SmsReport", b64({"biz_id": "b" * 257, "phone_number": "14706807800"}), META)
    assert isinstance(over, DeadLetter)
    assert over.error == "key field biz_id is empty or longer than 256 characters"


@pytest.mark.parametrize("raw,kept", [
    (b"abc\xff".decode("utf-8", "surrogateescape"), "base64:YWJj/w=="),  # bytes read with surrogateescape: b"abc\xff"
    ("\ud800x", "base64:7aCAeA=="),  # a lone high surrogate: its surrogatepass bytes, b"\xed\xa0\x80x"
])
def test_a_str_body_no_sink_can_encode_keeps_the_bytes_that_arrived(raw, kept):
    dead = decode_message("SmsReport", raw, META)
    assert isinstance(dead, DeadLetter) and (dead.raw_body, dead.error) == (kept, "body is not base64")


@pytest.mark.parametrize("body,error", [
    (b"\xff\xfe", "body is base64 but not UTF-8 text"),
    (b"[1, 2]", "body JSON is a list, not an object"),
    (b'{"content": "\\ud83d"}', "body JSON holds an unpaired surrogate escape (text that is not valid Unicode)"),
    (b"[" * 100_000, "undecodable body: RecursionError"),
], ids=["not-utf8", "list", "lone-surrogate", "too-deep"])
def test_each_undecodable_body_is_a_dead_letter_saying_exactly_why(body, error):
    dead = decode_message("SmsUp", base64.b64encode(body).decode("ascii"), META)
    assert isinstance(dead, DeadLetter) and dead.error == error


@pytest.mark.parametrize("number", ["1e999", "-1e999"])
def test_a_key_number_too_large_for_a_double_is_a_dead_letter_saying_so(number):
    """JSON's grammar has no infinity, but 1e999 parses to one: the key field names it."""
    text = ('{"phone_number": "13800000000", "sequence_id": ' + number
            + ', "send_time": "2026-11-25 10:00:00", "content": "hi"}')
    dead = decode_message("SmsUp", base64.b64encode(text.encode("utf-8")).decode("ascii"), META)
    assert isinstance(dead, DeadLetter) and dead.error == "key field sequence_id is not a finite number"
