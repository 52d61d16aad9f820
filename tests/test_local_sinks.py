import json
import os
import subprocess
import sys
from collections import Counter

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
    # Every line carries its key, and the retry rewrote the objects: each key on one line.
    assert Counter(line["key"] for line in lines) == Counter(r.key for r in records)
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


# -- SINK_PATH: unusable paths are settings errors at start-up -----------------------------

def _sink_path_cases(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "junk.db").write_bytes(b"this is not an SQLite database, whatever its name says" * 20)
    too_long = tmp_path / ("x" * 300)  # longer than any file system allows a name to be
    return {
        "file-under-a-file": ("file", blocker / "receipts", "Not a directory"),
        "file-is-a-file": ("file", blocker, "is a file, not a directory"),
        "file-not-creatable": ("file", too_long, "File name too long"),
        "sqlite-under-a-file": ("sqlite", blocker / "alicom.db", "blocker' is a file, not a directory"),
        "sqlite-is-a-directory": ("sqlite", tmp_path / "a-directory", "is a directory"),
        "sqlite-not-a-database": ("sqlite", tmp_path / "junk.db", "file is not a database"),
        "sqlite-not-creatable": ("sqlite", too_long / "alicom.db", "File name too long"),
    }


@pytest.mark.parametrize("case", ["file-under-a-file", "file-is-a-file", "file-not-creatable", "sqlite-under-a-file",
                                  "sqlite-is-a-directory", "sqlite-not-a-database", "sqlite-not-creatable"])
def test_an_unusable_sink_path_is_a_settings_error_naming_it(tmp_path, case):
    from shared.settings import SettingsError, load_settings
    from shared.sinks import make_sink

    sink, path, problem = _sink_path_cases(tmp_path)[case]
    with pytest.raises(SettingsError) as err:
        make_sink(load_settings({"ALICOM_UID": "1234567890", "SINK": sink, "SINK_PATH": str(path)}))
    message = str(err.value)
    assert message.startswith("invalid settings: SINK_PATH:") and problem in message
    assert f"(SINK={sink})" in message  # the expected form, for that sink


def test_a_usable_sink_path_is_created(tmp_path):
    from shared.settings import load_settings
    from shared.sinks import make_sink

    for sink in ("file", "sqlite"):
        path = tmp_path / sink / "deeper" / ("alicom.db" if sink == "sqlite" else "receipts")
        made = make_sink(load_settings({"ALICOM_UID": "1234567890", "SINK": sink, "SINK_PATH": str(path)}))
        made.write(batch(2), [])
        assert sorted(r.key for r in made.iter_records()) == sorted(r.key for r in batch(2))
        assert not list((tmp_path / sink).rglob(".probe-*"))  # the writability probe leaves nothing behind


# -- file sink: a failed write leaves no temporary file and raises SinkError ----------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# fsync fails with EIO through a seccomp filter on the fsync system call: the kernel's own
# answer for a device error, for this process only (Linux; no privileges needed).
FAIL_FSYNC = """
import ctypes, errno, platform, struct
nr = {"x86_64": 74, "aarch64": 82}[platform.machine()]
ins = lambda code, jt, jf, k: struct.pack("HBBI", code, jt, jf, k)
prog = b"".join([ins(0x20, 0, 0, 0), ins(0x15, 0, 1, nr), ins(0x06, 0, 0, 0x00050000 | errno.EIO),
                 ins(0x06, 0, 0, 0x7FFF0000)])
buf = ctypes.create_string_buffer(prog)
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(Fprog(len(prog) // 8, ctypes.addressof(buf))), 0, 0) == 0  # SECCOMP_MODE_FILTER
"""

# Writes past 4 KB fail with EFBIG (SIGXFSZ ignored, as a process that handles it sees it).
LIMIT_FILE_SIZE = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
"""


def _write_in_child(root, fault: str) -> dict:
    code = (
        "import json, sys\n"
        "from shared.sinks.file import FileSink\n"
        "from shared.sinks.base import SinkError\n"
        "from tests.test_local_sinks import batch\n"
        f"records = batch(200)\n{fault}\n"
        "try:\n"
        f"    FileSink({str(root)!r}).write(records, [])\n"
        "    print(json.dumps({'error': None}))\n"
        "except SinkError as exc:\n"
        "    print(json.dumps({'error': str(exc)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": ROOT, "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="seccomp filters are Linux-only")
@pytest.mark.parametrize("fault,expected", [(FAIL_FSYNC, "Input/output error"), (LIMIT_FILE_SIZE, "File too large")],
                         ids=["fsync-eio", "write-efbig"])
def test_a_failed_file_write_removes_its_temporary_file(tmp_path, fault, expected):
    root = tmp_path / "receipts"
    result = _write_in_child(root, fault)
    assert result["error"] is not None and expected in result["error"]
    assert [p.name for p in root.rglob("*") if p.is_file()] == []  # no temporary file, no half-written object


def test_a_failed_rename_removes_its_temporary_file(tmp_path):
    sink = FileSink(tmp_path)
    records = batch(3)
    (path,) = sink.object_paths(records, [])
    (tmp_path / path).mkdir(parents=True)  # a directory where the object goes: the rename fails
    with pytest.raises(SinkError, match="Is a directory"):
        sink.write(records, [])
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# -- sqlite: open failure, rollback, a lock wait bounded by the deadline ---------------------

def test_sqlite_open_failure_is_a_sink_error(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(SinkError, match="cannot open .*junk.db: file is not a database"):
        SqliteSink(str(junk))


def test_sqlite_failed_write_rolls_back_everything(tmp_path):
    import sqlite3

    sink = SqliteSink(str(tmp_path / "r.db"))
    other = sqlite3.connect(str(tmp_path / "r.db"))
    other.execute("CREATE TRIGGER refuse BEFORE INSERT ON dead_letters BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END")
    other.commit()
    records, dead = batch(30), [decode_message("SmsReport", "garbage!", MnsMeta("BAD1", 1795572000000, 1))]
    with pytest.raises(SinkError, match="refused by a trigger"):
        sink.write(records, dead)  # records are inserted first, then the dead letter fails
    assert sink.count("records") == 0 and not sink.db.in_transaction
    other.execute("DROP TRIGGER refuse")
    other.commit()
    sink.write(records, dead)
    assert sink.count("records") == 30 and sink.count("dead_letters") == 1


def test_sqlite_waits_for_another_writer_only_until_the_deadline(tmp_path):
    import sqlite3

    from shared.clock import Deadline

    sink = SqliteSink(str(tmp_path / "r.db"))
    other = sqlite3.connect(str(tmp_path / "r.db"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # an overlapping run holds the write lock
    deadline = Deadline(1.0)
    with pytest.raises(SinkError, match="database is locked"):
        sink.write(batch(3), [], deadline=deadline)
    assert deadline.remaining() > 0
    other.execute("ROLLBACK")
    sink.write(batch(3), [], deadline=Deadline(1.0))
    assert sink.count("records") == 3
