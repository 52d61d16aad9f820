"""The drain end to end into each cloud sink: emulator queues in, moto / the OSS gateway /
the Tablestore fake out, everything over loopback sockets through the real SDKs."""
from __future__ import annotations

import json
import time

import pytest

from functions.drain import handler
from scripts.create_tables import create_dynamodb_table, create_tablestore_table
from scripts.receipts import BAD_BODIES, make_receipts
from shared.platform import RunFailed
from shared.sinks import make_sink
from shared.settings import load_settings
from tests.conftest import AK, SECRET, TYPES
from tests.contexts import fc_context
from tests.fakes.moto_server import moto, moto_server  # noqa: F401
from tests.fakes.oss_gateway import OssGateway
from tests.fakes.tablestore_server import TablestoreServer

BUCKET, TABLE, INSTANCE = "alicom-receipts", "alicom_receipts", "drain-ots"
SINKS = ["s3", "oss", "dynamodb", "tablestore"]


@pytest.fixture
def cloud_sink(request, moto, monkeypatch):
    """Settings for one cloud sink, its bucket or table created; the FC role's keys are the customer's."""
    name = request.param
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    if name in ("s3", "oss"):
        moto.client("s3").create_bucket(Bucket=BUCKET)
    if name == "s3":
        yield {"SINK": "s3", "SINK_BUCKET": BUCKET, "SINK_ENDPOINT": moto.endpoint, "SINK_REGION": "us-east-1"}
    elif name == "dynamodb":
        create_dynamodb_table(moto.client("dynamodb"), TABLE, ttl=True)
        yield {"SINK": "dynamodb", "SINK_TABLE": TABLE, "SINK_ENDPOINT": moto.endpoint, "SINK_REGION": "us-east-1",
               "SINK_TTL_DAYS": "30"}
    elif name == "oss":
        gateway = OssGateway(moto.endpoint, AK, SECRET).start()
        yield {"SINK": "oss", "SINK_BUCKET": BUCKET, "SINK_ENDPOINT": gateway.endpoint, "SINK_SSE": "AES256"}
        gateway.stop()
    else:
        with TablestoreServer(INSTANCE, AK, SECRET) as server:
            from tablestore import OTSClient

            create_tablestore_table(OTSClient(server.endpoint, AK, SECRET, INSTANCE), TABLE)
            yield {"SINK": "tablestore", "SINK_TABLE": TABLE, "SINK_ENDPOINT": server.endpoint, "TABLESTORE_INSTANCE": INSTANCE}


def timer_event() -> bytes:
    return json.dumps({"triggerTime": "2026-11-25T05:49:00Z", "triggerName": "drain", "payload": ""}).encode()


def queue_left(emulator) -> int:
    states = [emulator.queue_state(emulator.queue_name(t)) for t in TYPES]
    return sum(s["visible"] + s["in_flight"] for s in states)


def fill(emulator, per_type: int, bad: bool = True) -> int:
    total = 0
    for mtype in TYPES:
        for body in make_receipts(mtype, per_type, 11):
            emulator.enqueue_receipt(emulator.queue_name(mtype), body)
            total += 1
    for raw in BAD_BODIES if bad else ():
        emulator.enqueue(emulator.queue_name("SmsReport"), raw)
    return total


@pytest.mark.parametrize("cloud_sink", SINKS, indirect=True)
def test_drain_stores_everything_in_the_cloud_sink_then_empties_the_queues(emulator, drain_env, cloud_sink):
    env = drain_env(**cloud_sink)
    total = fill(emulator, per_type=25)
    result = handler(timer_event(), fc_context(timeout=60))
    assert result["ok"] and result["stop_reason"] == "empty", result
    assert result["totals"]["stored"] == total and result["totals"]["dead_lettered"] == len(BAD_BODIES)
    assert result["totals"]["deleted"] == total + len(BAD_BODIES) and queue_left(emulator) == 0
    sink = make_sink(load_settings(env))
    stored = list(sink.iter_records())
    assert len({r.key for r in stored}) == total and {r.message_type for r in stored} == set(TYPES)
    assert sorted(d["raw_body"] for d in sink.iter_dead_letters()) == sorted(BAD_BODIES)


@pytest.mark.parametrize("cloud_sink", SINKS, indirect=True)
def test_redelivered_receipts_leave_one_row_or_one_key_each(emulator, drain_env, cloud_sink):
    env = drain_env(**cloud_sink)
    queue = emulator.queue_name("SmsReport")
    emulator.create_queue(queue, visibility_timeout=1)
    bodies = make_receipts("SmsReport", 20, seed=5)
    for body in bodies:
        emulator.enqueue_receipt(queue, body)
    emulator.set_faults(server_error=1.0, apis=["BatchDeleteMessage"])  # stored, never deleted: all come back
    first = handler({"message_types": ["SmsReport"]}, fc_context(timeout=30))
    assert first["totals"]["stored"] == 20 and first["totals"]["deleted"] == 0
    emulator.set_faults()
    time.sleep(1.2)
    second = handler({"message_types": ["SmsReport"]}, fc_context(timeout=30))
    assert second["totals"]["deleted"] == 20 and queue_left(emulator) == 0
    sink = make_sink(load_settings(env))
    keys = [r.key for r in sink.iter_records()]
    assert set(keys) == {f"SmsReport#{b['biz_id']}#{b['phone_number']}" for b in bodies}
    if env["SINK"] in ("dynamodb", "tablestore"):
        assert len(keys) == 20  # one row per business key


@pytest.mark.parametrize("cloud_sink", SINKS, indirect=True)
def test_refusing_cloud_sink_deletes_nothing(emulator, drain_env, cloud_sink):
    broken = dict(cloud_sink)
    if "SINK_BUCKET" in broken:
        broken["SINK_BUCKET"] = "no-such-bucket"
    else:
        broken["SINK_TABLE"] = "no_such_table"
    drain_env(**broken)
    fill(emulator, per_type=5, bad=False)
    with pytest.raises(RunFailed, match="sink_error") as failed:
        handler(timer_event(), fc_context(timeout=30))
    result = failed.value.summary
    assert not result["ok"] and result["stop_reason"] == "sink_error"
    assert SECRET not in str(failed.value)
    assert "no-such-bucket" in result["error"] or "no_such_table" in result["error"]
    assert SECRET not in json.dumps(result)
    assert result["totals"]["deleted"] == 0
    assert sum(emulator.queue_state(emulator.queue_name(t))["deleted"] for t in TYPES) == 0
