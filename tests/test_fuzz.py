"""Property tests: whatever arrives, the parsers answer with a value or their own error.

- The decoder turns any body (bytes, str, any JSON object of any message type) into a
  `Record` or a `DeadLetter`, never raises, and what it returns can be stored (valid
  Unicode throughout: a value no sink can encode would block its queue forever).
- The event parser (`parse_event`, and `adapt` with FC bytes / Lambda dicts) accepts or
  raises `EventError`; the settings loader accepts or raises `SettingsError`.
- Decoded records and dead letters round-trip through the sqlite and file sinks unchanged.

Bounded for CI (`max_examples`): the whole file runs in well under a minute.
"""
from __future__ import annotations

import base64
import json
import math
import tempfile
from collections import Counter
from types import SimpleNamespace

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.decode import KEY_FIELDS, decode_message
from shared.events import DrainEvent, parse_event
from shared.platform import EventError, adapt
from shared.records import DeadLetter, MnsMeta, Record, canonical_json
from shared.settings import ENV_FORMS, KNOWN_MESSAGE_TYPES, SINKS, VARIABLES, SettingsError, load_settings
from shared.sinks.file import FileSink
from shared.sinks.sqlite import SqliteSink

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
SINK_FUZZ = settings(max_examples=60, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow])

MESSAGE_TYPES = tuple(KEY_FIELDS) + ("FlowReport", "SomethingNew")

# Lone surrogates included: JSON may escape them (`"\ud83d"`, e.g. an SMS reply cut in the
# middle of an emoji) and bytes decoded with surrogateescape carry them.
TRICKY = ["\ud83d", "\ude00", "\udc80", "\u2028", "\u2029", "\x85", "\x00", "\x1e", "\ufeff", "#", "%", "\\", '"']
any_char = st.characters(exclude_categories=()) | st.sampled_from(TRICKY)
any_text = st.text(any_char, max_size=40)
plain_text = st.text(max_size=40)

json_scalar = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
               | st.floats(allow_nan=False, allow_infinity=False) | any_text)
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(any_text, inner, max_size=4), max_leaves=10)
key_value = (st.none() | st.booleans() | st.just("") | st.integers() | st.floats() | any_text
             | st.text(min_size=250, max_size=300) | st.lists(st.integers(), max_size=2)
             | st.from_regex(r"\A[0-9]{6,12}\^[0-9]{1,4}\Z"))
meta = st.builds(MnsMeta, message_id=plain_text, enqueue_time=st.integers(min_value=-(2 ** 63), max_value=2 ** 63),
                 dequeue_count=st.integers(min_value=0, max_value=1000))


@st.composite
def payloads(draw, message_type: str | None = None):
    """A JSON object shaped like a receipt of `message_type`: its key fields (any value), plus anything."""
    mtype = message_type or draw(st.sampled_from(MESSAGE_TYPES))
    body = draw(st.dictionaries(any_text, json_value, max_size=5))
    for name in KEY_FIELDS.get(mtype, ()):
        if draw(st.integers(0, 9)):  # now and then a key field is missing
            body[name] = draw(key_value)
    for name in ("send_time", "report_time", "status_time", "end_time"):
        if draw(st.booleans()):
            body[name] = draw(st.sampled_from(["2026-11-25 10:00:00", "2026-02-30 25:61:61", "", "yesterday"]) | any_text)
    return mtype, body


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8", "surrogatepass")).decode("ascii")


def json_text(payload) -> str:
    # ensure_ascii=True: lone surrogates travel as \\udXXX escapes, the way a JSON producer sends them.
    return json.dumps(payload)


def assert_storable(decoded) -> None:
    """Every text the sinks write must be valid Unicode (strict UTF-8), or no sink can store it."""
    assert isinstance(decoded, (Record, DeadLetter))
    assert decoded.key
    canonical_json(decoded.as_dict()).encode("utf-8")
    json.dumps(decoded.as_dict(), ensure_ascii=False).encode("utf-8")
    if isinstance(decoded, Record):
        assert decoded.key.startswith(decoded.message_type + "#")
        assert len(decoded.event_time) == 19


# -- decoder ----------------------------------------------------------------------------------

@FUZZ
@given(st.sampled_from(MESSAGE_TYPES), st.binary(max_size=200) | any_text, meta)
@example("SmsReport", "\ud800", MnsMeta())  # a str body with a lone surrogate (bytes read with surrogateescape)
@example("SmsUp", b"\xff\xfe", MnsMeta())
def test_decoder_never_raises_on_any_body(mtype, body, mns):
    assert_storable(decode_message(mtype, body, mns))


@FUZZ
@given(st.sampled_from(MESSAGE_TYPES), st.binary(max_size=120), meta)
def test_decoder_never_raises_on_base64_of_any_bytes(mtype, raw, mns):
    assert_storable(decode_message(mtype, base64.b64encode(raw).decode("ascii"), mns))


@FUZZ
@given(payloads(), meta)
# An SMS reply cut in the middle of an emoji: valid JSON, but no sink can encode the text.
@example(("SmsUp", {"phone_number": "13800138000", "sequence_id": 1, "send_time": "2026-11-25 10:00:00",
                    "content": "\ud83d"}), MnsMeta())
@example(("SmsReport", {"biz_id": "\udc80", "phone_number": "1"}), MnsMeta())
def test_any_json_object_of_any_type_becomes_a_record_or_a_dead_letter(drawn, mns):
    mtype, payload = drawn
    text = json_text(payload)
    decoded = decode_message(mtype, b64(text), mns)
    assert_storable(decoded)
    if isinstance(decoded, Record):
        assert decoded.body == json.loads(text)
        # Redelivery decodes to the same key (docs/ARCHITECTURE.md, invariant 2).
        assert decode_message(mtype, b64(text), MnsMeta(message_id="other", dequeue_count=9)).key == decoded.key


@FUZZ
@given(st.sampled_from(MESSAGE_TYPES), json_value, meta)
def test_any_json_value_becomes_a_record_or_a_dead_letter(mtype, value, mns):
    assert_storable(decode_message(mtype, b64(json_text(value)), mns))


def test_deeply_nested_bodies_are_dead_letters_or_storable_records():
    for depth in (50, 500, 900, 990, 1100, 5000, 100_000):
        for opener, closer in (("[", "]"), ('{"a":', "}")):
            text = '{"biz_id": "1", "phone_number": "2", "x": ' + opener * depth + "1" + closer * depth + "}"
            assert_storable(decode_message("SmsReport", b64(text)))


# -- events -------------------------------------------------------------------------------------

event_like = st.fixed_dictionaries({}, optional={
    "message_types": st.lists(st.sampled_from(KNOWN_MESSAGE_TYPES) | any_text, max_size=3) | json_value,
    "max_messages": st.integers() | json_value,
    "wait_seconds": st.integers(-5, 40) | json_value,
})
any_event = event_like | st.dictionaries(any_text, json_value, max_size=4) | json_value


def fc_context(timeout: float = 10.0):
    return SimpleNamespace(request_id="fc-fuzz", function=SimpleNamespace(name="drain", timeout=timeout))


class LambdaContext:
    aws_request_id = "aws-fuzz"
    function_name = "drain"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def accept_or_event_error(call) -> None:
    """Either a valid event within every documented bound, or an EventError naming what is wrong."""
    try:
        event = call()
    except EventError as exc:
        message = str(exc)
        assert message.startswith("invalid event: ") and ": " in message.removeprefix("invalid event: "), message
        return
    assert isinstance(event, DrainEvent)
    if event.message_types is not None:
        assert event.message_types and len(set(event.message_types)) == len(event.message_types)
        assert set(event.message_types) <= set(KNOWN_MESSAGE_TYPES)
    if event.max_messages is not None:
        assert type(event.max_messages) is int and 1 <= event.max_messages <= 10_000_000
    if event.wait_seconds is not None:
        assert type(event.wait_seconds) is int and 0 <= event.wait_seconds <= 30


@FUZZ
@given(any_event)
@example(None)
@example([{"max_messages": 1}])
def test_event_parser_accepts_or_raises_event_error(event):
    accept_or_event_error(lambda: parse_event(DrainEvent, event))


@FUZZ
@given(any_event | st.binary(max_size=60), st.booleans())
def test_fc_events_as_bytes_accepted_or_event_error(event, timer):
    if isinstance(event, bytes):
        raw = event
    else:
        if timer:
            event = {"triggerTime": "2026-11-25T05:49:00Z", "triggerName": "t",
                     "payload": json.dumps(event) if not isinstance(event, str) else event}
        raw = json.dumps(event).encode("utf-8", "surrogatepass")
    accept_or_event_error(lambda: parse_event(DrainEvent, adapt(raw, fc_context()).options))


@FUZZ
@given(st.dictionaries(any_text, json_value, max_size=4) | event_like, st.sampled_from([None, "schedule", 1, {}]))
def test_lambda_dict_events_accepted_or_event_error(event, trigger):
    if trigger is not None:
        event = dict(event, _trigger=trigger)
    accept_or_event_error(lambda: parse_event(DrainEvent, adapt(event, LambdaContext()).options))


# -- settings -------------------------------------------------------------------------------------

ALIASES = sorted(VARIABLES.values())
FIELD_OF = {alias: field for field, alias in VARIABLES.items()}
env_value = (any_text | st.sampled_from(["", "0", "-1", "1e309", "nan", "3", "30", "http://127.0.0.1:1", "https://x",
                                         "http://[::1", "file", "sqlite", "SmsReport,SmsUp", "SmsReport=Q-1"]))


@st.composite
def environments(draw):
    env = {"SINK": draw(st.sampled_from(SINKS) | any_text), "ALICOM_UID": "123"}
    for name in draw(st.lists(st.sampled_from(ALIASES), max_size=6, unique=True)):
        env[name] = draw(env_value)
    env.update(draw(st.dictionaries(any_text, any_text, max_size=2)))
    return env


@FUZZ
@given(environments())
def test_settings_loader_accepts_or_raises_settings_error(env):
    try:
        loaded = load_settings(env)
    except SettingsError as exc:
        assert str(exc).startswith("invalid settings: ")
        return
    # Accepted: every value is one the functions can run with.
    assert loaded.sink in SINKS
    assert loaded.message_types and set(loaded.message_types) <= set(KNOWN_MESSAGE_TYPES)
    assert len(set(loaded.message_types)) == len(loaded.message_types)
    numbers = [getattr(loaded, f) for f in loaded.__struct_fields__ if isinstance(getattr(loaded, f), (int, float))]
    assert all(math.isfinite(n) and n >= 0 for n in numbers)


@settings(max_examples=150, deadline=None, database=None)
@given(st.sampled_from([a for a in ALIASES if a in ENV_FORMS and a != "SINK"]), env_value.filter(bool))
@example("ALICOM_MESSAGE_TYPES", "SmsReport,\udcff")  # an undecodable byte in os.environ (surrogateescape)
@example("ALICOM_MESSAGE_TYPES", "SmsReport|SmsUp")  # a "|" in a value is not the "VAR|detail" form
@example("DRAIN_CONCURRENCY", "30")  # accepted values: each must reach its field
@example("DRAIN_SAFETY_MARGIN_SECONDS", "0.25")
def test_settings_error_names_the_variable_it_is_about(name, value):
    """One bad variable on an otherwise valid environment: the error names that variable."""
    env = {"SINK": "file", "SINK_PATH": "/tmp/x", "ALICOM_UID": "123", "ALIBABA_CLOUD_ACCESS_KEY_ID": "ak",
           "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "sk", name: value}
    try:
        loaded = load_settings(env)
    except SettingsError as exc:
        assert f"{name}:" in str(exc), str(exc)
        return
    # Accepted: the value reached its field (a number as that number), not dropped for a default.
    field = FIELD_OF[name]
    value = getattr(loaded, field)
    assert value is not None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        assert float(value) == float(env[name]), (name, env[name], value)


# -- sink round trips -------------------------------------------------------------------------------

@st.composite
def decoded_batches(draw):
    out = []
    for i in range(draw(st.integers(1, 4))):
        mtype, payload = draw(payloads())
        mns = MnsMeta(message_id=f"M{i}", enqueue_time=draw(st.integers(0, 2 ** 42)), dequeue_count=1)
        raw = draw(st.sampled_from([b64(json_text(payload)), "not base64 %d" % i]) | any_text.filter(bool))
        out.append(decode_message(mtype, raw, mns))
    return out


@SINK_FUZZ
@given(decoded_batches())
# A line separator inside a string: JSON leaves U+2028 unescaped, so JSONL must split on "\n" only.
@example([decode_message("SmsUp", b64(json.dumps({"phone_number": "1", "sequence_id": 2, "send_time": "x",
                                                  "content": "a\u2028b\x85c\u2029"}, ensure_ascii=False)))])
def test_decoded_values_round_trip_through_sqlite_and_file_sinks(batch):
    records = [d for d in batch if isinstance(d, Record)]
    dead = [d for d in batch if isinstance(d, DeadLetter)]
    want = {r.key: r for r in records}  # the last of a repeated key wins, as in the sinks
    want_dead = {d.key: d for d in dead}
    with tempfile.TemporaryDirectory() as tmp:
        for sink in (SqliteSink(f"{tmp}/r.db"), FileSink(f"{tmp}/files")):
            with sink:
                sink.write(records, dead)
                stored = list(sink.iter_records())
                assert Counter(r.key for r in stored) == Counter(list(want))  # each key stored once
                got = {r.key: r for r in stored}
                for key, record in want.items():
                    assert got[key].body == record.body
                    assert (got[key].message_type, got[key].event_time) == (record.message_type, record.event_time)
                stored_dead = list(sink.iter_dead_letters())
                assert Counter(d["key"] for d in stored_dead) == Counter(list(want_dead))
                got_dead = {d["key"]: d for d in stored_dead}
                for key, d in want_dead.items():
                    assert got_dead[key]["raw_body"] == d.raw_body and got_dead[key]["error"] == d.error
