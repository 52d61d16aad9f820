"""Tests that close gaps a mutation run (scripts/mutation/run) found in shared/sinks/base.py.

A record a table cannot hold is stored whole as a dead letter; its error is the only place that
says how to read its raw_body back, and the compressed form must be the same bytes every time
the record comes back (a redelivery rewrites the same row). Over real sockets: DynamoDB on moto
(behind the fault proxy that refuses chosen items), Tablestore on the wire-level fake.
"""
from __future__ import annotations

import base64
import gzip
import json
import threading

import pytest

from shared.clock import Deadline
from shared.records import MnsMeta, Record, canonical_json
from shared.sinks.base import SinkError
from shared.sinks.sqlite import SqliteSink
from tests import test_sink_deadlines, test_sink_limits, test_sinks_cloud
from tests.test_sink_limits import refuse, refused_record
from tests.test_sinks_cloud import records

# The fixtures those modules define: DynamoDB (moto) and Tablestore (the fake), freshly created.
table = test_sink_limits.table  # behind the fault proxy that can refuse chosen items
table_sink = test_sinks_cloud.table_sink  # with a 30-day TTL
backend = test_sink_deadlines.backend  # a cloud sink, its stand-in (which can hang) and a request counter

COMPRESSED = "; stored whole here, raw_body is base64 of the gzipped JSON body"
PLAIN = "; stored whole here, raw_body is the JSON body"


def oversized(sink) -> Record:
    filler = "".join(f"line {i}: the delivery report text repeats; " for i in range(sink.max_item_bytes // 40 + 100))
    return Record("SmsReport", "SmsReport#huge#13800138000", {"content": filler, "n": 1}, "2026-11-21 09:00:00",
                  mns=MnsMeta("msg-huge", 1795600000000, 1))


def test_an_oversized_record_is_set_aside_gzipped_with_a_fixed_header_and_says_so(table):
    sink, _ = table
    big = oversized(sink)
    report = sink.write(records(2) + [big], [])
    assert (report.records, report.dead_letters) == (2, 1)
    (dead,) = sink.iter_dead_letters()
    assert dead["error"].startswith("record SmsReport#huge#13800138000 is larger than the ")
    assert dead["error"].endswith(COMPRESSED)
    data = base64.b64decode(dead["raw_body"])
    # gzip's header: magic, deflate, no flags, then the modification time, which must be 0 so
    # that the same record gives the same bytes whenever it is set aside.
    assert data[:8] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00"
    assert gzip.decompress(data).decode("utf-8") == canonical_json(big.body)


def test_a_refused_record_is_set_aside_as_plain_json_and_says_so(table):
    sink, server = table
    refuse(sink, server, "biz-refused", whole_request=False)
    report = sink.write(records(2) + [refused_record("biz-refused")], [])
    assert (report.records, report.dead_letters) == (2, 1)
    (dead,) = sink.iter_dead_letters()
    assert dead["error"].startswith(f"record SmsReport#biz-refused#13800138000 is refused by {sink.name}: ")
    assert dead["error"].endswith(PLAIN)
    assert json.loads(dead["raw_body"]) == {"biz_id": "biz-refused", "phone_number": "13800138000"}


def test_a_refused_set_aside_dead_letter_fails_the_write_naming_the_sink(table):
    sink, server = table
    # The marker is in the record's key and in its dead letter's key (DLQ#SmsReport#msg-refused).
    refuse(sink, server, "msg-refused", whole_request=False)
    record = Record("SmsReport", "SmsReport#msg-refused#13800138000", {"biz_id": "b", "phone_number": "13800138000"},
                    "2026-11-21 09:00:00", mns=MnsMeta("msg-refused", 1795600000000, 1))
    with pytest.raises(SinkError) as err:
        sink.write(records(2) + [record], [])
    assert err.value.backend == sink.name
    assert str(err.value).startswith(f"{sink.name} sink: {sink.name} refused the dead letter DLQ#SmsReport#msg-refused "
                                     "of a record it could not hold: ")


LEDGER_ROW = {"key": "SEND#biz-7#13800000099", "kind": "ledger", "message_type": "SmsReport", "source": "ledger",
              "event_time": "2026-11-25 10:00:00", "event_date": "2026-11-25", "body": "{}", "message_id": "",
              "enqueue_time": 0, "dequeue_count": 0}


def test_put_rows_stamps_the_time_it_is_given(table_sink):
    # The ledger passes its own clock's time: the row's write time and expiry follow it, not the host's.
    sink, _ = table_sink
    assert sink.put_rows([LEDGER_ROW], now=1795600000.5) == 1
    (row,) = sink.iter_rows("ledger")
    assert (row["stored_at"], row["ttl"]) == (1795600000, 1798192000)  # + 30 days


@pytest.mark.parametrize("kind", ["record", "dead_letter", None])
def test_put_rows_refuses_the_drains_own_rows_naming_their_kind(tmp_path, kind):
    sink = SqliteSink(str(tmp_path / "r.db"))
    with pytest.raises(ValueError) as err:
        sink.put_rows([dict(LEDGER_ROW, kind=kind)])
    assert str(err.value) == (f"put_rows takes rows of a kind of their own, not {kind!r}: "
                              "records and dead letters go through write()")


# -- reading rows back -------------------------------------------------------------------------

def test_a_row_with_only_the_required_fields_reads_back_with_the_documented_defaults():
    """Rows are read tolerantly: one an earlier version wrote without `source` or MNS fields, or
    with the body as a map rather than JSON text, is a receipt with empty MNS metadata."""
    from shared.sinks.base import item_to_record

    record = item_to_record({"key": "SmsReport#biz-1#13800000001", "message_type": "SmsReport",
                             "event_time": "2026-11-25 09:30:00", "body": {"success": True}})
    assert (record.key, record.body, record.source) == ("SmsReport#biz-1#13800000001", {"success": True}, "receipt")
    assert (record.mns.message_id, record.mns.enqueue_time, record.mns.dequeue_count) == ("", 0, 0)
    assert record.event_date == "2026-11-25"


# -- object names and bytes: a format that must not drift between versions --------------------------
# A redelivered batch must rewrite the object it wrote before, including after an upgrade, so the
# names and bytes below are written out as the current version writes them, not recomputed.

SMS_UP = [
    Record("SmsUp", "SmsUp#13800000001#7#2026-11-25 09:30:00", {"content": "回复 TD", "phone_number": "13800000001"},
           "2026-11-25 09:30:00", mns=MnsMeta("MID-1", 1795600000000, 1)),
    Record("SmsUp", "SmsUp#13800000002#8#2026-11-25 09:40:00", {"content": "ok", "phone_number": "13800000002"},
           "2026-11-25 09:40:00", mns=MnsMeta("MID-2", 1795600000001, 2)),
]


def stored(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_batch_is_one_object_with_a_stable_name_and_sorted_utf8_json_lines(tmp_path):
    from shared.sinks.file import FileSink

    report = FileSink(tmp_path, prefix="alicom").write(list(reversed(SMS_UP)), [])
    assert report.write_calls == 1
    assert stored(tmp_path) == {"alicom/type=SmsUp/dt=2026-11-25/part-4a991116464dc4ce5f670827.jsonl": (
        '{"body": {"content": "回复 TD", "phone_number": "13800000001"}, "event_time": "2026-11-25 09:30:00", '
        '"key": "SmsUp#13800000001#7#2026-11-25 09:30:00", "message_type": "SmsUp", "mns": {"dequeue_count": 1, '
        '"enqueue_time": 1795600000000, "message_id": "MID-1"}, "source": "receipt"}\n'
        '{"body": {"content": "ok", "phone_number": "13800000002"}, "event_time": "2026-11-25 09:40:00", '
        '"key": "SmsUp#13800000002#8#2026-11-25 09:40:00", "message_type": "SmsUp", "mns": {"dequeue_count": 2, '
        '"enqueue_time": 1795600000001, "message_id": "MID-2"}, "source": "receipt"}\n').encode("utf-8")}


def test_a_send_record_never_shares_an_object_name_with_a_receipt_and_hours_partition_when_asked(tmp_path):
    from shared.records import SOURCE_SEND_RECORD
    from shared.sinks.file import FileSink

    class HourlyFileSink(FileSink):
        hour_partitions = True

    sink = HourlyFileSink(tmp_path, prefix="alicom")
    from_send_records = Record("SmsUp", SMS_UP[0].key, {"content": "ok"}, SMS_UP[0].event_time,
                               source=SOURCE_SEND_RECORD)
    report = sink.write([SMS_UP[0], from_send_records], [])
    assert report.write_calls == 2
    assert sorted(stored(tmp_path)) == [
        "alicom/type=SmsUp/dt=2026-11-25/hour=09/part-1fb17da4e81b60c913b27f3e.jsonl",  # the send record
        "alicom/type=SmsUp/dt=2026-11-25/hour=09/part-76964f2f5fd62921096b2f16.jsonl",  # the receipt
    ]


def test_the_object_stored_observer_is_told_each_objects_path_as_it_is_stored(tmp_path):
    from shared.sinks.file import FileSink

    sink = FileSink(tmp_path, prefix="alicom")
    told: list[tuple[str, bool]] = []
    # Told while the write goes on, after that object (and only it) is in place.
    sink.on_object_stored = lambda path: told.append((path, (tmp_path / path).exists()))
    sink.write([SMS_UP[0]], [])
    assert told == [("alicom/type=SmsUp/dt=2026-11-25/part-76964f2f5fd62921096b2f16.jsonl", True)]


# -- table sinks: the item limit, the write's time, refusals found by halving ---------------------

NOW = 1795600000.0  # the rows' write time, part of their size


class SmallRowsSqliteSink(SqliteSink):
    max_item_bytes = 2000  # a backend's item limit, small enough to reach exactly


def sized(sink, size: int) -> Record:
    """An SmsUp whose row is exactly `size` bytes as the sink measures it."""
    def record(filler: str) -> Record:
        return Record("SmsUp", "SmsUp#13800000001#7#2026-11-25 09:30:00", {"content": filler},
                      "2026-11-25 09:30:00", mns=MnsMeta("MID-1", 1795600000000, 1))
    base = sink.item_size(sink.record_item(record(""), NOW))
    made = record("x" * (size - base))
    assert sink.item_size(sink.record_item(made, NOW)) == size
    return made


@pytest.mark.parametrize("over,stored", [(0, True), (1, False)], ids=["at-the-limit", "one-byte-over"])
def test_a_row_at_the_item_limit_is_stored_and_one_byte_more_is_set_aside(tmp_path, over, stored):
    sink = SmallRowsSqliteSink(str(tmp_path / "r.db"))
    record = sized(sink, sink.max_item_bytes + over)
    report = sink.write([record], [], now=NOW)
    assert (report.records, report.dead_letters) == ((1, 0) if stored else (0, 1))
    assert [r.key for r in sink.iter_records()] == ([record.key] if stored else [])


def test_a_write_stamps_its_rows_with_the_time_it_is_given(table_sink):
    # The drain's clock decides a row's write time and expiry, not the host's.
    sink, _ = table_sink
    sink.write(records(1), [], now=1795600000.5)
    (row,) = sink.iter_rows("record")
    assert (row["stored_at"], row["ttl"]) == (1795600000, 1798192000)  # + 30 days


@pytest.mark.parametrize("backend", ["dynamodb", "tablestore"], indirect=True)
def test_refused_records_in_two_batch_writes_are_both_set_aside(backend):
    sink, server = backend.sink, backend.server
    refuse(sink, server, "biz-refused", whole_request=False)
    good = records(sink.batch_items)
    # Two messages (two message ids, so two dead letters), each refused.
    first, second = (Record("SmsReport", f"SmsReport#biz-refused-{n}#13800138000",
                            {"biz_id": f"biz-refused-{n}", "phone_number": "13800138000"}, "2026-11-21 09:00:00",
                            mns=MnsMeta(f"msg-refused-{n}", 1795600000000, 1)) for n in (1, 2))
    # One refused record in the first batch write, one in the second.
    report = sink.write([first] + good + [second], [], deadline=Deadline(30.0))
    assert (report.records, report.dead_letters) == (sink.batch_items, 2)
    assert sorted(json.loads(d["raw_body"])["biz_id"] for d in sink.iter_dead_letters()) == [
        "biz-refused-1", "biz-refused-2"]


@pytest.mark.parametrize("backend", ["dynamodb", "tablestore"], indirect=True)
def test_a_request_refused_whole_is_halved_and_every_call_counted(backend):
    sink, server = backend.sink, backend.server
    refuse(sink, server, "biz-refused", whole_request=True)
    before = backend.count()
    report = sink.write(records(3) + [refused_record("biz-refused")], [], deadline=Deadline(30.0))
    assert (report.records, report.dead_letters) == (3, 1)
    # All 4 refused; the first half (the refused row sorts first) refused, its halves one refused
    # and one stored; the second half stored; then the set-aside dead letter.
    assert report.write_calls == backend.count() - before == 6


def assert_write_fails_in_time(sink, server, batch: list[Record], seconds: float = 2.0) -> None:
    """With the stand-in holding requests unanswered (server.hang on), a write of `batch` with
    `seconds` to its deadline raises SinkError before it. A call made without the deadline waits
    out the client's own timeouts (minutes): the write is watched from a thread, given up on 2 s
    past the deadline, and let go by switching the hang off."""
    deadline = Deadline(seconds)
    outcome: list[BaseException] = []
    ended_with: list[float] = []

    def write() -> None:
        try:
            sink.write(batch, [], deadline=deadline)
        except BaseException as exc:  # noqa: BLE001 - the test asserts what it was
            outcome.append(exc)
        ended_with.append(deadline.remaining())

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(timeout=seconds + 2.0)
    still_writing = writer.is_alive()
    server.hang.off()
    writer.join()
    assert not still_writing, "the write was still waiting 2 s after its deadline"
    assert [type(e) for e in outcome] == [SinkError]
    assert ended_with[0] > 0, f"the write ended {-ended_with[0]:.2f} s after its deadline"
    assert server.hang.held >= 1


# The rows sorted by key: SmsReport#biz-refused, SmsReport#biz0 | SmsUp#biz1, VoiceCallReport#biz2. The
# requests: 1 all four (refused), 2 the first half (refused), 3 and 4 its halves (one refused, one
# stored), 5 the second half. Answer 1 and hold the rest: the first half is unanswered; answer 4:
# the second.
@pytest.mark.parametrize("answered", [1, 4], ids=["first-half-unanswered", "second-half-unanswered"])
@pytest.mark.parametrize("backend", ["dynamodb", "tablestore"], indirect=True)
def test_the_halves_of_a_refused_request_keep_the_writes_deadline(backend, answered):
    """After a request refused whole, the halves written to find the refused item end by the
    write's deadline too when the backend stops answering, in either half."""
    sink, server = backend.sink, backend.server
    refuse(sink, server, "biz-refused", whole_request=True)
    left = [answered]  # requests still to answer; every later one is held

    def held(*request) -> bool:
        left[0] -= 1
        return left[0] < 0

    server.hang.on(held)
    assert_write_fails_in_time(sink, server, records(3) + [refused_record("biz-refused")])


# -- table sinks: dead letters the table cannot take, reconciled records ----------------------------

def test_a_dead_letter_too_large_for_a_row_fails_the_write_naming_it(tmp_path):
    # A dead letter has nowhere else to go: the write fails (the messages come back) rather than lose it.
    from shared.records import DeadLetter

    sink = SmallRowsSqliteSink(str(tmp_path / "r.db"))
    big = DeadLetter("SmsReport", "x" * sink.max_item_bytes, "body is not JSON", "2026-11-21 08:00:00",
                     MnsMeta(message_id="bad-big", enqueue_time=1795600000000, dequeue_count=1))
    with pytest.raises(SinkError) as err:
        sink.write(records(2), [big])
    assert err.value.backend == "sqlite"
    assert str(err.value) == ("sqlite sink: dead letter DLQ#SmsReport#bad-big is larger than the sqlite item limit "
                              "(2000 bytes)")
    assert list(sink.iter_records()) == []  # checked before anything is written


@pytest.mark.parametrize("backend", ["dynamodb", "tablestore"], indirect=True)
def test_a_dead_letter_the_backend_refuses_fails_the_write_naming_it(backend):
    from tests.test_sinks_cloud import dead_letters

    sink, server = backend.sink, backend.server
    refuse(sink, server, "bad-1", whole_request=False)
    with pytest.raises(SinkError) as err:
        sink.write(records(2), dead_letters(2), deadline=Deadline(30.0))
    assert err.value.backend == sink.name
    assert str(err.value).startswith(f"{sink.name} sink: {sink.name} refused the dead letter DLQ#SmsReport#bad-1: ")


def reconciled(marker: str) -> Record:
    from shared.records import SOURCE_SEND_RECORD

    return Record("SmsReport", f"SmsReport#{marker}#13800138000", {"biz_id": marker, "from": "QuerySendDetails"},
                  "2026-11-21 09:00:00", source=SOURCE_SEND_RECORD)


@pytest.mark.parametrize("backend", ["dynamodb", "tablestore"], indirect=True)
def test_reconciled_records_the_backend_refuses_are_each_set_aside_and_every_call_counted(backend):
    sink, server = backend.sink, backend.server
    refuse(sink, server, "biz-refused", whole_request=False)
    before = backend.count()
    report = sink.write([reconciled("biz-refused-1"), reconciled("biz-ok"), reconciled("biz-refused-2")], [],
                        deadline=Deadline(30.0))
    assert (report.records, report.dead_letters) == (1, 2)
    # One conditional write per reconciled record, then one batch write of the two dead letters.
    assert report.write_calls == backend.count() - before == 4
    assert sorted(json.loads(d["raw_body"])["biz_id"] for d in sink.iter_dead_letters()) == [
        "biz-refused-1", "biz-refused-2"]


@pytest.mark.parametrize("backend", ["dynamodb", "tablestore"], indirect=True)
def test_a_reconciled_write_keeps_the_writes_deadline(backend):
    sink, server = backend.sink, backend.server
    server.hang.on()
    assert_write_fails_in_time(sink, server, [reconciled("biz-1")])
