"""The sinks' public read side: records and dead letters by message type and event-date range,
one object by key, rows of other kinds. Object sinks must list only the `dt=` partitions inside
the range: S3 is watched through the fault proxy, OSS through its gateway (both record every
request); table sinks must filter, SQLite through its (message_type, event_date) index."""
from __future__ import annotations

import gzip
import json
import sqlite3
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from shared.records import DeadLetter, MnsMeta, Record
from shared.sinks.base import NoObjects, SinkError
from shared.sinks.file import FileSink
from shared.sinks.sqlite import SqliteSink
from tests.fakes.moto_server import fault_proxy, moto, moto_server  # noqa: F401
from tests.fakes.oss_gateway import oss_gateway  # noqa: F401
from tests.fakes.tablestore import ots, tablestore_server  # noqa: F401
from tests.test_sinks_cloud import BUCKET, oss_sink, s3_sink, table_sink  # noqa: F401

DAYS = ("2026-11-24", "2026-11-25", "2026-11-26")


def dated_records() -> list[Record]:
    """One SmsReport and one SmsUp on each of three days."""
    return [Record(mtype, f"{mtype}#biz-{day[-2:]}#138000000{day[-2:]}", {"day": day}, f"{day} 09:30:00",
                   mns=MnsMeta(f"msg-{mtype}-{day[-2:]}", 1795600000000, 1))
            for day in DAYS for mtype in ("SmsReport", "SmsUp")]


def dated_dead_letters() -> list[DeadLetter]:
    return [DeadLetter("SmsReport", f"bad body {day}", "body is not base64", f"{day} 08:00:00",
                       MnsMeta(f"bad-{day[-2:]}", 1795600000000, 1)) for day in DAYS]


def keys(items) -> list[str]:
    return sorted(item.key if isinstance(item, Record) else item["key"] for item in items)


def check_selections(sink) -> None:
    """What every sink must answer for the data above (expected keys written out)."""
    assert keys(sink.iter_records(["SmsReport"], "2026-11-25", "2026-11-25")) == ["SmsReport#biz-25#13800000025"]
    assert keys(sink.iter_records(None, "2026-11-25", "2026-11-26")) == [
        "SmsReport#biz-25#13800000025", "SmsReport#biz-26#13800000026", "SmsUp#biz-25#13800000025",
        "SmsUp#biz-26#13800000026"]
    assert keys(sink.iter_records(["SmsUp"], date_from="2026-11-26")) == ["SmsUp#biz-26#13800000026"]
    assert keys(sink.iter_records(["SmsUp"], date_to="2026-11-24")) == ["SmsUp#biz-24#13800000024"]
    assert keys(sink.iter_records(["VoiceReport"], "2026-11-24", "2026-11-26")) == []
    assert keys(sink.iter_records("SmsUp", "2026-11-24", "2026-11-24")) == ["SmsUp#biz-24#13800000024"]
    assert len(keys(sink.iter_records())) == 6
    assert keys(sink.iter_records(["SmsUp", "SmsReport"])) == [  # two types, no dates: every type's partition
        "SmsReport#biz-24#13800000024", "SmsReport#biz-25#13800000025", "SmsReport#biz-26#13800000026",
        "SmsUp#biz-24#13800000024", "SmsUp#biz-25#13800000025", "SmsUp#biz-26#13800000026"]
    assert keys(sink.iter_dead_letters(["SmsReport"], "2026-11-25", "2026-11-26")) == [
        "DLQ#SmsReport#bad-25", "DLQ#SmsReport#bad-26"]
    assert keys(sink.iter_dead_letters(["SmsReport"], "2026-11-24", "2026-11-25")) == [
        "DLQ#SmsReport#bad-24", "DLQ#SmsReport#bad-25"]
    assert keys(sink.iter_dead_letters(["SmsReport"], date_to="2026-11-24")) == ["DLQ#SmsReport#bad-24"]
    assert keys(sink.iter_dead_letters(["SmsUp"])) == []


# -- object sinks: what the store was asked ------------------------------------------------

def asked(requests) -> tuple[list[tuple[str, str]], list[str]]:
    """The listings (prefix, delimiter) and the object reads among recorded requests."""
    listings, reads = [], []
    for method, raw, _ in requests:
        split = urlsplit(raw)
        key = unquote(split.path).lstrip("/").partition("/")[2]
        if method != "GET":
            continue
        if key:
            reads.append(key)
        else:
            query = dict(parse_qsl(split.query, keep_blank_values=True))
            listings.append((query.get("prefix", ""), query.get("delimiter", "")))
    return listings, reads


@pytest.fixture(params=["s3", "oss"])
def watched_object_sink(request, moto):
    """An object sink and the stand-in that records each request it gets."""
    moto.client("s3").create_bucket(Bucket=BUCKET)
    if request.param == "s3":
        proxy = request.getfixturevalue("fault_proxy")
        return s3_sink(moto, endpoint_url=proxy.endpoint), proxy
    gateway = request.getfixturevalue("oss_gateway")
    return oss_sink(gateway), gateway


def test_object_sinks_list_only_the_partitions_inside_the_range(watched_object_sink):
    sink, store = watched_object_sink
    sink.write(dated_records(), dated_dead_letters())

    store.requests.clear()
    assert keys(sink.iter_records(["SmsReport"], "2026-11-25", "2026-11-25")) == ["SmsReport#biz-25#13800000025"]
    listings, reads = asked(store.requests)
    assert listings == [("alicom/type=SmsReport/dt=", "/"), ("alicom/type=SmsReport/dt=2026-11-25/", "")]
    assert len(reads) == 1 and reads[0].startswith("alicom/type=SmsReport/dt=2026-11-25/hour=09/part-")

    store.requests.clear()
    assert len(keys(sink.iter_records(None, "2026-11-25", "2026-11-26"))) == 4
    listings, reads = asked(store.requests)
    assert sorted(prefix for prefix, delimiter in listings if delimiter) == [
        "alicom/type=", "alicom/type=SmsReport/dt=", "alicom/type=SmsUp/dt="]  # names only, no objects
    assert sorted(prefix for prefix, delimiter in listings if not delimiter) == [
        "alicom/type=SmsReport/dt=2026-11-25/", "alicom/type=SmsReport/dt=2026-11-26/",
        "alicom/type=SmsUp/dt=2026-11-25/", "alicom/type=SmsUp/dt=2026-11-26/"]
    assert len(reads) == 4 and not [k for k in reads if "/dt=2026-11-24/" in k]

    store.requests.clear()
    assert keys(sink.iter_dead_letters(["SmsReport"], "2026-11-26", "2026-11-26")) == ["DLQ#SmsReport#bad-26"]
    listings, _ = asked(store.requests)
    assert [prefix for prefix, delimiter in listings if not delimiter] == [
        "alicom/dead_letters/type=SmsReport/dt=2026-11-26/"]
    check_selections(sink)


def test_a_type_without_a_range_lists_that_type_only(watched_object_sink):
    sink, store = watched_object_sink
    sink.write(dated_records(), [])
    store.requests.clear()
    assert len(keys(sink.iter_records(["SmsUp"]))) == 3
    assert asked(store.requests)[0] == [("alicom/type=SmsUp/", "")]


def test_file_sink_reads_no_object_outside_the_range(tmp_path):
    sink = FileSink(tmp_path)
    sink.write(dated_records(), dated_dead_letters())
    check_selections(sink)
    # An unreadable object on the 24th: a read of other days never opens it, a whole read does.
    (tmp_path / "type=SmsReport/dt=2026-11-24/part-broken.jsonl").write_text("not json\n")
    assert keys(sink.iter_records(["SmsReport"], "2026-11-25", "2026-11-26")) == [
        "SmsReport#biz-25#13800000025", "SmsReport#biz-26#13800000026"]
    with pytest.raises(ValueError):
        list(sink.iter_records(["SmsReport"]))


# -- table sinks: filtered, SQLite by its index --------------------------------------------

def ledger_like_row(day: str) -> dict:
    return {"key": f"SEND#biz-{day[-2:]}#13800000099", "kind": "ledger", "message_type": "SmsReport",
            "source": "ledger", "event_time": f"{day} 10:00:00", "event_date": day, "body": "{}",
            "message_id": "", "enqueue_time": 0, "dequeue_count": 0}


def test_table_sinks_filter_by_type_and_date_and_never_yield_other_rows(table_sink):
    sink, _ = table_sink
    sink.write(dated_records(), dated_dead_letters())
    sink.put_rows([ledger_like_row(day) for day in DAYS])  # same type and days as the records
    check_selections(sink)
    assert keys(sink.iter_rows("ledger")) == [
        "SEND#biz-24#13800000099", "SEND#biz-25#13800000099", "SEND#biz-26#13800000099"]


def test_sqlite_reads_a_range_through_its_index(tmp_path):
    path = str(tmp_path / "r.db")
    sink = SqliteSink(path)
    sink.write(dated_records(), dated_dead_letters())
    sink.put_rows([ledger_like_row(day) for day in DAYS])
    check_selections(sink)
    statements: list[str] = []
    sink.db.set_trace_callback(statements.append)
    assert keys(sink.iter_records(["SmsReport", "SmsUp"], "2026-11-25", "2026-11-25")) == [
        "SmsReport#biz-25#13800000025", "SmsUp#biz-25#13800000025"]
    sink.db.set_trace_callback(None)
    (select,) = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    plan = " ".join(row[-1] for row in sqlite3.connect(path).execute("EXPLAIN QUERY PLAN " + select))
    assert "USING INDEX records_by_date" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # streamed: no sort of the whole result before the first row


def test_sqlite_read_only_reads_and_changes_nothing(tmp_path):
    path = tmp_path / "r.db"
    writer = SqliteSink(str(path))
    writer.write(dated_records(), dated_dead_letters())
    writer.close()
    other = sqlite3.connect(path)  # a database another tool left in rollback-journal mode
    assert other.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
    other.close()
    before = path.read_bytes()
    reader = SqliteSink(str(path), read_only=True)
    check_selections(reader)
    with pytest.raises(SinkError, match="readonly database"):
        reader.write(dated_records()[:1], [])
    reader.close()
    assert path.read_bytes() == before
    with pytest.raises(SinkError, match="cannot open"):
        SqliteSink(str(tmp_path / "missing.db"), read_only=True)
    assert not (tmp_path / "missing.db").exists()


def test_put_rows_takes_no_records_or_dead_letters(tmp_path):
    sink = SqliteSink(str(tmp_path / "r.db"))
    for kind in ("record", "dead_letter", None):
        with pytest.raises(ValueError, match="go through write"):
            sink.put_rows([dict(ledger_like_row("2026-11-25"), kind=kind)])
    assert sink.count("records") == 0


# -- bounds and single objects -------------------------------------------------------------

@pytest.mark.parametrize("bounds,says", [
    ({"date_from": "25.11.2026"}, "date_from: expected a date 'YYYY-MM-DD'"),
    ({"date_to": "yesterday"}, "date_to: expected a date 'YYYY-MM-DD'"),
    ({"date_from": "2026-11-26", "date_to": "2026-11-25"}, "date_to: 2026-11-25 is before date_from 2026-11-26"),
])
def test_bad_date_bounds_are_refused_naming_the_bound(tmp_path, bounds, says):
    for sink in (FileSink(tmp_path / "files"), SqliteSink(str(tmp_path / "r.db"))):
        with pytest.raises(ValueError) as err:
            list(sink.iter_records(["SmsReport"], **bounds))
        assert says in str(err.value)


def test_read_object_reads_one_object_by_key_below_the_prefix(watched_object_sink, tmp_path):
    sink, store = watched_object_sink
    sink.write(dated_records()[:1], [])
    (stored,) = sink.object_paths(dated_records()[:1], [])
    store.requests.clear()
    data = sink.read_object(stored[len("alicom/"):])
    assert json.loads(gzip.decompress(data))["key"] == "SmsReport#biz-24#13800000024"
    assert asked(store.requests) == ([], [stored])  # one GET of that object, no listing
    with pytest.raises(SinkError, match="NoSuchKey"):
        sink.read_object("reconcile/missing.txt")
    files = FileSink(tmp_path)
    (tmp_path / "reconcile").mkdir()
    (tmp_path / "reconcile" / "phones.txt").write_bytes(b"13800000001\n")
    assert files.read_object("reconcile/phones.txt") == b"13800000001\n"
    with pytest.raises(NoObjects, match="^sqlite sink: SINK=sqlite keeps rows, not objects$"):
        SqliteSink(str(tmp_path / "r.db")).read_object("reconcile/phones.txt")


def test_a_sink_must_say_how_settings_make_it():
    from shared.sinks.base import ObjectSink

    class NoSettings(ObjectSink):  # every storage primitive, but no from_settings
        def _put_object(self, path, data, deadline=None):
            pass

        def _get_object(self, path):
            return b""

        def _list_objects(self, prefix):
            return iter(())

        def _list_prefixes(self, prefix):
            return iter(())

    with pytest.raises(TypeError, match="abstract method 'from_settings'|abstract method from_settings"):
        NoSettings()
