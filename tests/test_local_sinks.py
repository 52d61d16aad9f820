import json

import pytest

from scripts.receipts import b64json, make_receipts
from shared.decode import decode_message
from shared.records import SOURCE_SEND_RECORD, MnsMeta, Record
from shared.sinks.base import SinkError
from shared.sinks.file import FileSink
from shared.sinks.sqlite import SqliteSink


def batch(n=20, mtype="SmsReport", seed=0):
    return [decode_message(mtype, b64json(b), MnsMeta(f"M{i}", 1795572000000 + i, 1))
            for i, b in enumerate(make_receipts(mtype, n, seed))]


def test_file_sink_partitions_and_retry_rewrites_same_files(tmp_path):
    sink = FileSink(tmp_path)
    records = batch()
    dead = [decode_message("SmsReport", "garbage!", MnsMeta("BAD1", 1795572000000, 1))]
    report = sink.write(records, dead)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl"))
    assert report.records == 20 and report.dead_letters == 1
    assert all(f.startswith(("type=SmsReport/dt=2026-11-25/", "dead_letters/type=SmsReport/dt=2026-11-25/")) for f in files)
    contents = {f: (tmp_path / f).read_bytes() for f in files}
    sink.write(list(reversed(records)), dead)  # a retried batch, in another order
    again = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl"))
    assert again == files
    assert {f: (tmp_path / f).read_bytes() for f in files} == contents
    lines = [json.loads(line) for f in files if f.startswith("type=") for line in (tmp_path / f).read_text().splitlines()]
    assert {line["key"] for line in lines} == {r.key for r in records}  # every line carries its key
    assert sorted(r.key for r in sink.iter_records()) == sorted(r.key for r in records)
    assert [d["error"] for d in sink.iter_dead_letters()] == ["body is not base64"]


def test_file_sink_refusal_is_a_sink_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(SinkError) as err:
        FileSink(blocker).write(batch(1), [])
    assert "not-a-dir" in str(err.value)


def test_sqlite_one_row_per_key_and_dead_letters_in_their_table(tmp_path):
    sink = SqliteSink(str(tmp_path / "r.db"))
    records = batch(30)
    dead = [decode_message("SmsReport", "garbage!", MnsMeta("BAD1", 1795572000000, 1))]
    sink.write(records, dead)
    sink.write(records[:10], dead)  # redelivery
    assert sink.count("records") == 30
    assert sink.count("dead_letters") == 1
    stored = sink.get(records[0].key)
    assert json.loads(stored["body"]) == records[0].body


@pytest.mark.parametrize("n", [1, 83, 84, 512])  # 83 rows of 12 columns fill one 999-variable INSERT
def test_sqlite_coalesced_write_stores_every_row_whole(tmp_path, n):
    sink = SqliteSink(str(tmp_path / "r.db"))
    records = batch(n)
    dead = [decode_message("SmsReport", f"garbage {i}!", MnsMeta(f"BAD{i}", 1795572000000 + i, 1)) for i in range(n)]
    report = sink.write(records, dead)
    assert (report.records, report.dead_letters, report.write_calls) == (n, n, 1)
    assert sink.count("records") == n and sink.count("dead_letters") == n
    for record in records:  # every row holds its own values, none shifted into a neighbour's columns
        stored = sink.get(record.key)
        assert json.loads(stored["body"]) == record.body
        assert (stored["message_id"], stored["enqueue_time"]) == (record.mns.message_id, record.mns.enqueue_time)
    assert sorted(d["raw_body"] for d in sink.iter_dead_letters()) == sorted(f"garbage {i}!" for i in range(n))
    sink.close()


def reconciled(record: Record, status: str) -> Record:
    return Record(record.message_type, record.key, dict(record.body, err_code=status), record.event_time, SOURCE_SEND_RECORD)


def test_sqlite_merge_rule_receipt_wins_in_both_orders(tmp_path):
    sink = SqliteSink(str(tmp_path / "r.db"))
    a, b = batch(2)
    sink.write([reconciled(a, "FROM-RECONCILE")], [])
    sink.write([a], [])  # the receipt arrives later: it replaces the reconciled row
    assert sink.get(a.key)["source"] == "receipt"
    sink.write([b], [])
    sink.write([reconciled(b, "FROM-RECONCILE")], [])  # reconcile after the receipt: receipt kept
    row = sink.get(b.key)
    assert row["source"] == "receipt" and json.loads(row["body"])["err_code"] == b.body["err_code"]
    assert sink.count() == 2


def test_file_sink_keeps_receipt_and_reconciled_objects_apart(tmp_path):
    sink = FileSink(tmp_path)
    records = batch(5)
    sink.write(records, [])
    sink.write([reconciled(r, "FROM-RECONCILE") for r in records], [])  # same keys, same partition
    stored = list(sink.iter_records())
    assert sorted(r.source for r in stored) == ["receipt"] * 5 + [SOURCE_SEND_RECORD] * 5
    assert {r.body["err_code"] for r in stored if r.source == "receipt"} == {r.body["err_code"] for r in records}


def test_sqlite_reads_stream_while_writes_continue(tmp_path):
    sink = SqliteSink(str(tmp_path / "r.db"))
    sink.write(batch(1200), [])
    seen = 0
    for record in sink.iter_records():
        if seen == 0:
            sink.write(batch(3, seed=9), [])  # a write between chunks of an open read
        seen += 1
    assert seen >= 1200 and sink.count() == 1203
