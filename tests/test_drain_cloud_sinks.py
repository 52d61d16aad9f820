"""The drain end to end into each cloud sink: emulator queues in, moto (behind the fault
proxy) / the OSS gateway / the Tablestore fake out, everything over loopback sockets through
the real SDKs and the real handler."""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from functions.drain import handler
from scripts.create_tables import create_dynamodb_table, create_tablestore_table
from scripts.receipts import BAD_BODIES, make_receipts
from shared.platform import RunFailed
from shared.sinks import make_sink
from shared.settings import load_settings
from tests.conftest import AK, SECRET, TYPES
from tests.contexts import fc_context
from tests.fakes.moto_server import FaultProxy, moto, moto_server  # noqa: F401
from tests.fakes.oss_gateway import OssGateway
from tests.fakes.tablestore import TablestoreServer

BUCKET, TABLE, INSTANCE = "alicom-receipts", "alicom_receipts", "drain-ots"
SINKS = ["s3", "oss", "dynamodb", "tablestore"]


class CloudSink(dict):
    """Settings for one cloud sink (a dict); `.server` is the stand-in it talks to, with its `hang` switch."""

    server = None


@pytest.fixture
def cloud_sink(request, moto, monkeypatch):
    """Settings for one cloud sink, its bucket or table created; the FC role's keys are the customer's.
    S3 and DynamoDB go through the fault proxy (DynamoDB's request limits, a hang switch)."""
    name = request.param
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    if name in ("s3", "oss"):
        moto.client("s3").create_bucket(Bucket=BUCKET)
    if name in ("s3", "dynamodb"):
        proxy = FaultProxy(moto.endpoint).start()
        if name == "s3":
            settings = CloudSink(SINK="s3", SINK_BUCKET=BUCKET, SINK_ENDPOINT=proxy.endpoint, SINK_REGION="us-east-1")
        else:
            create_dynamodb_table(moto.client("dynamodb"), TABLE, ttl=True)
            settings = CloudSink(SINK="dynamodb", SINK_TABLE=TABLE, SINK_ENDPOINT=proxy.endpoint, SINK_REGION="us-east-1",
                                 SINK_TTL_DAYS="30")
        settings.server = proxy
        yield settings
        proxy.stop()
    elif name == "oss":
        gateway = OssGateway(moto.endpoint, AK, SECRET).start()
        settings = CloudSink(SINK="oss", SINK_BUCKET=BUCKET, SINK_ENDPOINT=gateway.endpoint, SINK_SSE="AES256")
        settings.server = gateway
        yield settings
        gateway.stop()
    else:
        with TablestoreServer(INSTANCE, AK, SECRET) as server:
            from tablestore import OTSClient

            create_tablestore_table(OTSClient(server.endpoint, AK, SECRET, INSTANCE), TABLE)
            settings = CloudSink(SINK="tablestore", SINK_TABLE=TABLE, SINK_ENDPOINT=server.endpoint,
                                 TABLESTORE_INSTANCE=INSTANCE)
            settings.server = server
            yield settings


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
    lines_per_key = Counter(r.key for r in stored)  # an object sink's key stored twice counts 2
    assert len(lines_per_key) == total and set(lines_per_key.values()) == {1}
    assert {r.message_type for r in stored} == set(TYPES)
    assert sorted(d["raw_body"] for d in sink.iter_dead_letters()) == sorted(BAD_BODIES)


# The business keys of make_receipts("SmsReport", 20, seed=5): biz_id, then phone_number.
SMS_REPORT_KEYS_SEED_5 = [
    "SmsReport#173093853343^0#13983742305", "SmsReport#298023578717^1#14812743382", "SmsReport#994913333735^2#17182988314",
    "SmsReport#201605072055^3#14085766151", "SmsReport#499729789888^4#14586093470", "SmsReport#109794121247^5#14434297881",
    "SmsReport#460170679179^6#15734777175", "SmsReport#863302182787^7#13068333013", "SmsReport#224787772914^8#15338263156",
    "SmsReport#434081149271^9#19764881501", "SmsReport#220449876821^10#17346352117", "SmsReport#678267135165^11#14662988590",
    "SmsReport#356675461804^12#19333773268", "SmsReport#379139843176^13#16374802448", "SmsReport#891932296534^14#17963240710",
    "SmsReport#358383345158^15#19912705502", "SmsReport#805472740261^16#14796521402", "SmsReport#449394685405^17#18869910277",
    "SmsReport#435114290652^18#15756467708", "SmsReport#913817551124^19#15231887335",
]


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
    sink = make_sink(load_settings(env))
    assert Counter(r.key for r in sink.iter_records()) == Counter(SMS_REPORT_KEYS_SEED_5)  # each once
    emulator.set_faults()
    time.sleep(1.2)
    second = handler({"message_types": ["SmsReport"]}, fc_context(timeout=30))
    assert second["totals"]["deleted"] == 20 and queue_left(emulator) == 0
    lines_per_key = Counter(r.key for r in sink.iter_records())
    assert sorted(lines_per_key) == sorted(SMS_REPORT_KEYS_SEED_5)
    if env["SINK"] in ("dynamodb", "tablestore"):
        assert set(lines_per_key.values()) == {1}  # one row per business key
    else:  # an object per batch: at most once per run, deduplicated by key when read
        assert set(lines_per_key.values()) <= {1, 2}


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


# An SmsUp whose three key parts are 256 four-byte characters each: a business key of 3,080
# bytes, over DynamoDB's 2,048-byte partition key and three times Tablestore's 1,024 bytes.
WIDE = "\U0001F600" * 256
LONG_KEY = "SmsUp#" + "#".join([WIDE] * 3)


def long_key_body() -> dict:
    return {"phone_number": WIDE, "sequence_id": WIDE, "send_time": WIDE, "content": "TD", "sign_name": "Alicom",
            "dest_code": "1234"}


@pytest.mark.parametrize("cloud_sink", ["dynamodb", "tablestore"], indirect=True)
def test_a_key_over_the_byte_limit_blocks_nothing(emulator, drain_env, cloud_sink):
    env = drain_env(**cloud_sink)
    queue = emulator.queue_name("SmsUp")
    bodies = make_receipts("SmsUp", 20, seed=3)
    for body in bodies[:10] + [long_key_body()] + bodies[10:]:
        emulator.enqueue_receipt(queue, body)
    result = handler({"message_types": ["SmsUp"]}, fc_context(timeout=30))
    assert result["ok"] and result["totals"]["stored"] == 21 and result["totals"]["dead_lettered"] == 0, result
    assert result["totals"]["deleted"] == 21 and queue_left(emulator) == 0
    sink = make_sink(load_settings(env))
    stored = {r.key: r for r in sink.iter_records()}
    assert len(stored) == 21 and stored[LONG_KEY].body == long_key_body()
    rows = list(sink._scan_items())
    assert len(rows) == 21 and max(len(row["key"].encode()) for row in rows) <= sink.max_key_bytes
    emulator.enqueue_receipt(queue, long_key_body())  # Alicom delivers the long one again
    again = handler({"message_types": ["SmsUp"]}, fc_context(timeout=30))
    assert again["totals"]["stored"] == 1 and again["totals"]["deleted"] == 1 and queue_left(emulator) == 0
    assert len(list(sink._scan_items())) == 21  # no second row


@pytest.mark.slow
@pytest.mark.parametrize("cloud_sink", SINKS, indirect=True)
def test_a_hung_sink_fails_the_run_in_time_and_a_later_run_stores_everything_once(emulator, drain_env, cloud_sink):
    # Issue 12: a sink endpoint that accepts and never answers kept the function alive 2-3 times
    # past its timeout. Margin 5 s: writes end 2.5 s before the 20 s FC timeout, which leaves
    # room for a loaded test machine (the fakes share the process and the GIL with the drain).
    env = drain_env(DRAIN_SAFETY_MARGIN_SECONDS="5", **cloud_sink)
    total = fill(emulator, per_type=5, bad=False)
    cloud_sink.server.hang.on()
    started = time.monotonic()
    with pytest.raises(RunFailed, match="sink_error") as failed:
        handler(timer_event(), fc_context(timeout=20))
    elapsed = time.monotonic() - started
    print(f"{env['SINK']}: with the sink hung, the handler raised {elapsed:.2f} s into a 20 s FC timeout")
    assert elapsed <= 19.0, f"{env['SINK']}: the run ended {elapsed:.2f} s into a 20 s timeout"
    summary = failed.value.summary
    assert summary["stop_reason"] == "sink_error" and "Timeout" in summary["error"]  # each attempt timed out
    assert summary["totals"]["deleted"] == 0
    assert sum(emulator.queue_state(emulator.queue_name(t))["deleted"] for t in TYPES) == 0
    assert cloud_sink.server.hang.held >= 1
    cloud_sink.server.hang.off()
    # The received messages come back after the 30 s visibility timeout: move the queues' clock on.
    emulator.backend.queues.clock = lambda: time.time() + 31
    later = handler(timer_event(), fc_context(timeout=60))
    assert later["ok"] and later["totals"]["stored"] == total and queue_left(emulator) == 0, later
    lines_per_key = Counter(r.key for r in make_sink(load_settings(env)).iter_records())
    assert len(lines_per_key) == total and set(lines_per_key.values()) == {1}  # each once: the hung run stored nothing
