"""No message ever blocks a batch: keys over a backend's byte limit are stored under a bounded
key, and a record the backend refuses becomes a dead letter while the rest is stored. Over
real sockets: DynamoDB on moto behind the fault proxy (which adds DynamoDB's request limits),
Tablestore on the wire-level fake (which enforces its key and column limits)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from scripts.create_tables import create_dynamodb_table, create_tablestore_table
from shared.clock import Deadline
from shared.records import SOURCE_SEND_RECORD, MnsMeta, Record
from shared.sinks.base import SinkError
from shared.sinks.sqlite import SqliteSink
from tests.fakes.moto_server import FaultProxy
from tests.test_sinks_cloud import TABLE, by_key, ddb_sink, dead_letters, ots_client, ots_sink, records

# Keys over the limit and the bounded keys they must be stored under (computed once by hand:
# the longest prefix that leaves room for "##" + 64 hex digits, cut before a split emoji).
LONG_KEYS = {
    "dynamodb": ("SmsUp#a" + "\U0001F600" * 700,  # 2,807 bytes; the limit is 2,048
                 "SmsUp#a" + "\U0001F600" * 493 + "##0e76aa7b4507152540c3bec253610974b4868ffa80aaa343081adba1e6aca97f"),
    "tablestore": ("SmsUp#a" + "\U0001F600" * 400,  # 1,607 bytes; the limit is 1,024
                   "SmsUp#a" + "\U0001F600" * 237 + "##ea6bfb66197b7ea10de072c58fa2dc30085a642e5867c7e150bd0b5a326f8d9b"),
}
KEY_LIMITS = {"dynamodb": 2048, "tablestore": 1024}


@pytest.fixture(params=["dynamodb", "tablestore"])
def table(request, moto):
    """A table sink and a way to write an item past the sink, straight to the stand-in."""
    if request.param == "dynamodb":
        proxy = FaultProxy(moto.endpoint).start()
        request.addfinalizer(proxy.stop)
        create_dynamodb_table(moto.client("dynamodb"), TABLE)
        return ddb_sink(moto, endpoint_url=proxy.endpoint), proxy
    ots = request.getfixturevalue("ots")
    create_tablestore_table(ots_client(ots), TABLE)
    return ots_sink(ots), ots


def long_record(key: str, dequeue_count: int = 1) -> Record:
    return Record("SmsUp", key, {"phone_number": "13800138000", "content": "\U0001F600" * 700, "sequence_id": 1},
                  "2026-11-21 09:00:00", mns=MnsMeta("msg-long", 1795600000000, dequeue_count))


def test_a_key_over_the_limit_is_stored_bounded_and_read_back_whole(table):
    sink, server = table
    full, stored = LONG_KEYS[sink.name]
    assert len(stored.encode()) <= KEY_LIMITS[sink.name] < len(full.encode())
    others = records(5)
    report = sink.write(others + [long_record(full)], [])
    assert (report.records, report.dead_letters) == (6, 0)
    rows = {item["key"]: item for item in sink._scan_items()}  # as the backend holds them
    assert rows[stored]["full_key"] == full
    assert by_key(sink.iter_records())[full] == long_record(full)
    assert sink.get(full)["key"] == full and "full_key" not in sink.get(full)
    sink.write([long_record(full, dequeue_count=2)], [])  # a redelivery lands on the same row
    assert len(list(sink._scan_items())) == 6
    assert by_key(sink.iter_records())[full].mns.dequeue_count == 2


def test_the_stand_ins_refuse_the_long_key_as_it_is(table, moto):
    # What the bounded key avoids is real: the stand-ins enforce the services' key limits.
    sink, server = table
    full, _ = LONG_KEYS[sink.name]
    item = dict(sink.record_item(long_record("short"), 0), key=full)
    if sink.name == "dynamodb":
        from botocore.exceptions import ClientError

        from shared.sinks.dynamodb import to_item

        with pytest.raises(ClientError, match="Size of hashkey has exceeded the maximum size limit"):
            moto.client("dynamodb", server.endpoint).put_item(TableName=TABLE, Item=to_item(item))
    else:
        from tablestore import Condition, OTSServiceError, RowExistenceExpectation

        with pytest.raises(OTSServiceError, match="exceeds the MaxLength:1024"):
            ots_client(server).put_row(TABLE, sink._row(item), Condition(RowExistenceExpectation.IGNORE))
    assert list(sink._scan_items()) == []


def test_a_key_that_fits_exactly_is_kept_as_it_is(table):
    sink, _ = table
    limit = KEY_LIMITS[sink.name]
    exact = "SmsReport#" + "x" * (limit - len("SmsReport#"))
    sink.write([Record("SmsReport", exact, {"n": 1}, "2026-11-21 09:00:00")], [])
    assert [item["key"] for item in sink._scan_items()] == [exact]


def test_sqlite_keeps_long_keys_whole(tmp_path):
    sink = SqliteSink(str(tmp_path / "r.db"))
    full, _ = LONG_KEYS["dynamodb"]
    sink.write([long_record(full)], [])
    assert [item["key"] for item in sink._scan_items()] == [full]


def test_ledger_entries_with_long_keys_round_trip(table):
    from shared.ledger import Send, get_entry, ledger_key, mark, pending_sends, record_sends

    sink, _ = table
    sent = datetime.now(timezone.utc) - timedelta(hours=3)
    biz_id = "\U0001F600" * 256  # a ledger key of 1,041 bytes: over Tablestore's limit, within DynamoDB's
    sends = [Send(biz_id, "13900000001", sent), Send("700100^0", "13900000002", sent)]
    record_sends(sink, sends)
    key = ledger_key(biz_id, "13900000001")
    assert get_entry(sink, key)["biz_id"] == biz_id
    pending = pending_sends(sink, grace_seconds=3600)
    assert sorted(e["key"] for e in pending) == sorted([key, ledger_key("700100^0", "13900000002")])
    mark(sink, get_entry(sink, key), "delivered", checked=True)
    assert get_entry(sink, key)["status"] == "delivered"
    assert len(list(sink._scan_items())) == 2


def refused_record(marker: str) -> Record:
    return Record("SmsReport", f"SmsReport#{marker}#13800138000", {"biz_id": marker, "phone_number": "13800138000"},
                  "2026-11-21 09:00:00", mns=MnsMeta("msg-refused", 1795600000000, 1))


def refuse(sink, server, marker: str, whole_request: bool) -> None:
    """Make the backend refuse, as invalid, any write of an item whose key holds `marker`."""
    if sink.name == "dynamodb":
        server.refuse_items(marker)  # DynamoDB refuses the whole request without naming the item
    else:
        server.faults.refuse_keys(marker, whole_request=whole_request)


@pytest.mark.parametrize("whole_request", [False, True], ids=["row", "request"])
def test_a_record_the_backend_refuses_becomes_a_dead_letter_and_the_rest_is_stored(table, whole_request):
    sink, server = table
    refuse(sink, server, "biz-refused", whole_request)
    good, dead = records(20), dead_letters(1)
    report = sink.write(good + [refused_record("biz-refused")], dead, deadline=Deadline(30))
    assert (report.records, report.dead_letters) == (20, 2)
    assert by_key(sink.iter_records()) == by_key(good)
    stored_dead = {d["key"]: d for d in sink.iter_dead_letters()}
    assert set(stored_dead) == {"DLQ#SmsReport#msg-refused", "DLQ#SmsReport#bad-0"}
    entry = stored_dead["DLQ#SmsReport#msg-refused"]
    code = "ValidationException" if sink.name == "dynamodb" else "OTSParameterInvalid"
    assert f"refused by {sink.name}: {code}" in entry["error"] and "SmsReport#biz-refused#13800138000" in entry["error"]
    assert json.loads(entry["raw_body"]) == {"biz_id": "biz-refused", "phone_number": "13800138000"}
    assert report.write_calls <= 12  # found by halving the request, not by writing 22 items one by one


def test_a_reconciled_record_the_backend_refuses_becomes_a_dead_letter(table):
    sink, server = table
    refuse(sink, server, "biz-refused", whole_request=False)
    gap = Record("SmsReport", "SmsReport#biz-refused#13800138000", {"from": "QuerySendDetails"},
                 "2026-11-21 09:00:00", source=SOURCE_SEND_RECORD)
    report = sink.write([gap] + records(2, source=SOURCE_SEND_RECORD), [])
    assert (report.records, report.dead_letters) == (2, 1)
    (entry,) = sink.iter_dead_letters()
    assert f"refused by {sink.name}" in entry["error"]


def test_a_refused_dead_letter_fails_the_write(table):
    sink, server = table
    # The marker is in the record's key and in its dead letter's key (DLQ#SmsReport#msg-refused).
    refuse(sink, server, "msg-refused", whole_request=False)
    record = refused_record("biz")
    record = Record(record.message_type, "SmsReport#msg-refused#13800138000", record.body, record.event_time,
                    mns=record.mns)
    with pytest.raises(SinkError, match="refused the dead letter DLQ#SmsReport#msg-refused of a record it could not hold"):
        sink.write(records(3) + [record], [])


def test_a_ledger_row_the_backend_refuses_fails_put_rows_naming_it(table):
    sink, server = table
    refuse(sink, server, "biz-refused", whole_request=False)
    row = {"key": "SEND#biz-refused#13800000099", "kind": "ledger", "message_type": "SmsReport", "source": "ledger",
           "event_time": "2026-11-25 10:00:00", "event_date": "2026-11-25", "body": "{}", "message_id": "",
           "enqueue_time": 0, "dequeue_count": 0}
    with pytest.raises(SinkError) as err:
        sink.put_rows([row])
    assert str(err.value).startswith(f"{sink.name} sink: {sink.name} refused the ledger row "
                                     "SEND#biz-refused#13800000099: ")
    assert sink.put_rows([]) == 0  # nothing to write: no call


def test_a_record_too_large_even_compressed_fails_the_write_naming_it(table):
    import base64
    import random

    sink, _ = table
    # base64 of random bytes: gzip cannot bring it back under the item limit.
    noise = base64.b64encode(random.Random(7).randbytes(sink.max_item_bytes)).decode("ascii")
    big = Record("SmsUp", "SmsUp#13800138000#7#2026-11-21 09:00:00", {"content": noise}, "2026-11-21 09:00:00",
                 mns=MnsMeta("msg-noise", 1795600000000, 1))
    with pytest.raises(SinkError) as err:
        sink.write(records(2) + [big], [])
    assert str(err.value) == (f"{sink.name} sink: record SmsUp#13800138000#7#2026-11-21 09:00:00 cannot be stored "
                              f"even compressed as a dead letter: it is larger than the {sink.name} item limit "
                              f"({sink.max_item_bytes} bytes)")
    assert list(sink.iter_dead_letters()) == []
