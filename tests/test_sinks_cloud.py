"""The four cloud sinks over real sockets: S3 and DynamoDB on moto, OSS through a signature-
checking gateway in front of moto's S3, Tablestore on the wire-level fake."""
from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from scripts.create_tables import create_dynamodb_table, create_tablestore_table, main as create_tables_main
from shared.records import SOURCE_SEND_RECORD, DeadLetter, MnsMeta, Record, canonical_json
from shared.settings import SettingsError, load_settings
from shared.sinks import make_sink
from shared.sinks.base import SinkError
from tests.fakes.moto_server import CREDENTIALS, REGION, FaultProxy, closed_port_endpoint, fault_proxy, moto, moto_server  # noqa: F401
from tests.fakes.oss_gateway import OssGateway, oss_gateway  # noqa: F401
from tests.fakes.tablestore import ots, tablestore_server  # noqa: F401

BUCKET = "alicom-receipts"
TABLE = "alicom_receipts"
OTS_INSTANCE, OTS_AK, OTS_SECRET = "test-instance", "test-ak", "test-secret"
OSS_AK, OSS_SECRET = "oss-ak", "oss-secret"
OBJECT_SINKS = ["s3", "oss"]
TABLE_SINKS = ["dynamodb", "tablestore"]


# -- sample data ------------------------------------------------------------------------


def records(n: int = 12, source: str = "receipt", tag: str = "") -> list[Record]:
    out = []
    for i in range(n):
        mtype = ("SmsReport", "SmsUp", "VoiceCallReport")[i % 3]
        out.append(Record(
            message_type=mtype,
            key=f"{mtype}#biz{i}{tag}#1380013{i:04d}",
            body={"biz_id": f"biz{i}", "phone_number": f"1380013{i:04d}", "success": i % 2 == 0,
                  "err_msg": "用户接收成功" if i % 2 == 0 else "DELIVRD", "n": i, "nested": {"list": [1, 2, i]},
                  "note": tag},
            event_time=f"2026-11-{20 + i % 3:02d} {i % 24:02d}:15:00",
            source=source,
            mns=MnsMeta(message_id=f"msg-{i}{tag}", enqueue_time=1795600000000 + i, dequeue_count=1 + i % 2),
        ))
    return out


def dead_letters(n: int = 3) -> list[DeadLetter]:
    return [DeadLetter("SmsReport", f"bm90IGpzb24g{i}", f"body is not JSON ({i})", "2026-11-21 08:00:00",
                       MnsMeta(message_id=f"bad-{i}", enqueue_time=1795600000000, dequeue_count=3)) for i in range(n)]


def by_key(items):
    return {item.key: item for item in items}


# -- sink builders ------------------------------------------------------------------------


def s3_sink(moto, **kw):
    from shared.sinks.s3 import S3Sink

    kw.setdefault("endpoint_url", moto.endpoint)
    return S3Sink(kw.pop("bucket", BUCKET), kw.pop("prefix", "alicom/"), region=REGION, **CREDENTIALS, **kw)


def oss_sink(gateway, **kw):
    from shared.sinks.oss import OssSink

    kw.setdefault("access_key_secret", OSS_SECRET)
    kw.setdefault("base_delay", 0.001)
    return OssSink(kw.pop("bucket", BUCKET), kw.pop("endpoint", gateway.endpoint), access_key_id=OSS_AK,
                   prefix=kw.pop("prefix", "alicom/"), **kw)


def ddb_sink(moto, **kw):
    from shared.sinks.dynamodb import DynamoDBSink

    kw.setdefault("endpoint_url", moto.endpoint)
    kw.setdefault("base_delay", 0.001)
    return DynamoDBSink(kw.pop("table", TABLE), region=REGION, **CREDENTIALS, **kw)


def ots_sink(server, **kw):
    from shared.sinks.tablestore import TablestoreSink

    kw.setdefault("access_key_secret", OTS_SECRET)
    kw.setdefault("base_delay", 0.001)
    return TablestoreSink(kw.pop("table", TABLE), endpoint=kw.pop("endpoint", server.endpoint), instance=OTS_INSTANCE,
                          access_key_id=OTS_AK, **kw)


def ots_client(server, secret: str = OTS_SECRET):
    from tablestore import OTSClient

    return OTSClient(server.endpoint, OTS_AK, secret, OTS_INSTANCE)


@pytest.fixture(params=OBJECT_SINKS + TABLE_SINKS)
def any_sink(request):
    return _make(request, request.param)


@pytest.fixture(params=OBJECT_SINKS)
def object_sink(request):
    return _make(request, request.param)


@pytest.fixture(params=TABLE_SINKS)
def table_sink(request):
    return _make(request, request.param)


def _make(request, name: str):
    """A sink of that name with its bucket or table in place, plus the server behind it."""
    if name == "s3":
        server = request.getfixturevalue("moto")
        server.client("s3").create_bucket(Bucket=BUCKET)
        return s3_sink(server), server
    if name == "oss":
        gateway = request.getfixturevalue("oss_gateway")
        request.getfixturevalue("moto").client("s3").create_bucket(Bucket=BUCKET)
        return oss_sink(gateway), gateway
    if name == "dynamodb":
        server = request.getfixturevalue("moto")
        create_dynamodb_table(server.client("dynamodb"), TABLE, ttl=True)
        return ddb_sink(server, ttl_days=30), server
    server = request.getfixturevalue("ots")
    create_tablestore_table(ots_client(server), TABLE, ttl_days=30)
    return ots_sink(server, ttl_days=30), server


def object_keys(sink) -> list[str]:
    return sorted(sink._list_objects(sink.prefix))


# -- every sink ---------------------------------------------------------------------------


def test_records_and_dead_letters_read_back_equal(any_sink):
    sink, _ = any_sink
    recs, dead = records(), dead_letters()
    report = sink.write(recs, dead)
    assert (report.records, report.dead_letters) == (len(recs), len(dead))
    stored = list(sink.iter_records())
    assert Counter(r.key for r in stored) == Counter(r.key for r in recs)  # each key stored once
    assert by_key(stored) == by_key(recs)
    stored_dead = {d["key"]: d for d in sink.iter_dead_letters()}
    assert Counter(d["key"] for d in sink.iter_dead_letters()) == Counter(d.key for d in dead)
    for d in dead:
        for field, value in d.as_dict().items():
            if field != "mns":
                assert stored_dead[d.key][field] == value
        # The MNS metadata too: nested on object sinks, columns of the row on table sinks.
        meta = stored_dead[d.key].get("mns") or stored_dead[d.key]
        assert (meta["message_id"], meta["enqueue_time"], meta["dequeue_count"]) == (d.mns.message_id, 1795600000000, 3)
    assert {r.key for r in sink.iter_records(["SmsUp"])} == {r.key for r in recs if r.message_type == "SmsUp"}


def test_redelivered_receipt_is_stored_once(any_sink):
    sink, _ = any_sink
    recs = records(6)
    sink.write(recs, [])
    again = [Record(r.message_type, r.key, r.body, r.event_time, mns=MnsMeta(r.mns.message_id, r.mns.enqueue_time, 5))
             for r in recs[:3]]
    sink.write(again, [])
    # Tables: one row per key. Objects: each of these records is alone in its partition (its own
    # date and hour), so its redelivery names the same object and rewrites it: one line per key.
    assert Counter(r.key for r in sink.iter_records()) == Counter(r.key for r in recs)


# -- object sinks -------------------------------------------------------------------------


def test_retried_batch_rewrites_the_same_objects(object_sink):
    sink, _ = object_sink
    recs, dead = records(), dead_letters()
    sink.write(recs, dead)
    first = {path: sink._get_object(path) for path in object_keys(sink)}
    assert all(path.endswith(".jsonl.gz") and path.startswith("alicom/") for path in first)
    assert any("/dead_letters/type=SmsReport/dt=2026-11-21/hour=08/" in "/" + p for p in first)
    sink.write(list(reversed(recs)), dead)  # the same batch, delivered again in another order
    assert {path: sink._get_object(path) for path in object_keys(sink)} == first
    for path, data in first.items():
        lines = [json.loads(line) for line in gzip.decompress(data).decode().splitlines()]
        assert all("key" in line for line in lines)


def test_s3_sse_aes256_and_kms_reach_s3(moto):
    moto.client("s3").create_bucket(Bucket=BUCKET)
    s3 = moto.client("s3")
    s3_sink(moto, sse="AES256", prefix="aes/").write(records(2), [])
    s3_sink(moto, sse="aws:kms", kms_key_id="alias/receipts", prefix="kms/").write(records(2), dead_letters(1))
    heads = {o["Key"]: s3.head_object(Bucket=BUCKET, Key=o["Key"]) for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {h["ServerSideEncryption"] for k, h in heads.items() if k.startswith("aes/")} == {"AES256"}
    kms = [h for k, h in heads.items() if k.startswith("kms/")]
    assert len(kms) == 3 and {(h["ServerSideEncryption"], h["SSEKMSKeyId"]) for h in kms} == {("aws:kms", "alias/receipts")}


@pytest.mark.parametrize("sse,key_id,moto_sees", [("AES256", None, "AES256"), ("KMS", "kms-key-1", "aws:kms"), ("SM4", None, None)])
def test_oss_sse_headers_reach_the_service(moto, oss_gateway, sse, key_id, moto_sees):
    moto.client("s3").create_bucket(Bucket=BUCKET)
    oss_sink(oss_gateway, sse=sse, kms_key_id=key_id).write(records(2), [])
    puts = [headers for method, _, headers in oss_gateway.requests if method == "PUT"]
    assert puts and all(h["x-oss-server-side-encryption"] == sse for h in puts)
    assert all(h.get("x-oss-server-side-encryption-key-id") == key_id for h in puts)
    assert all("content-md5" in h for h in puts)
    s3 = moto.client("s3")
    for entry in s3.list_objects_v2(Bucket=BUCKET)["Contents"]:
        assert s3.head_object(Bucket=BUCKET, Key=entry["Key"]).get("ServerSideEncryption") == moto_sees


def test_oss_with_sts_token_signs_with_it(moto):
    moto.client("s3").create_bucket(Bucket=BUCKET)
    gateway = OssGateway(moto.endpoint, OSS_AK, OSS_SECRET, security_token="sts-token-123", page_size=2).start()
    try:
        sink = oss_sink(gateway, security_token="sts-token-123")
        sink.write(records(9), dead_letters(2))  # 9 records over 3 days and 9 hours: more than one list page
        assert len(list(sink.iter_records())) == 9 and len(list(sink.iter_dead_letters())) == 2
        assert all(h.get("x-oss-security-token") == "sts-token-123" for _, _, h in gateway.requests)
        with pytest.raises(SinkError, match="InvalidAccessKeyId"):
            oss_sink(gateway).write(records(1), [])  # the same keys without the token
    finally:
        gateway.stop()


@pytest.mark.parametrize("case", ["s3-no-bucket", "s3-connection", "s3-throttled", "oss-no-bucket", "oss-wrong-secret",
                                  "oss-denied", "oss-connection"])
def test_refusing_object_store_raises_sink_error_naming_the_bucket(request, moto, case):
    moto.client("s3").create_bucket(Bucket=BUCKET)
    if case == "s3-no-bucket":
        sink, expected = s3_sink(moto, bucket="missing-bucket"), ["missing-bucket", "NoSuchBucket"]
    elif case == "s3-connection":
        sink, expected = s3_sink(moto, endpoint_url=closed_port_endpoint(), max_attempts=2), [BUCKET, "EndpointConnectionError"]
    elif case == "s3-throttled":
        proxy = request.getfixturevalue("fault_proxy")
        proxy.s3_error("PUT", times=100)
        sink, expected = s3_sink(moto, endpoint_url=proxy.endpoint, max_attempts=2), [BUCKET, "SlowDown", "HTTP 503", "after 2 attempts"]
    else:
        gateway = request.getfixturevalue("oss_gateway")
        if case == "oss-no-bucket":
            sink, expected = oss_sink(gateway, bucket="missing-bucket"), ["missing-bucket", "NoSuchBucket"]
        elif case == "oss-wrong-secret":
            sink, expected = oss_sink(gateway, access_key_secret="not-the-secret"), [BUCKET, "SignatureDoesNotMatch"]
        elif case == "oss-denied":
            gateway.deny(BUCKET)
            sink, expected = oss_sink(gateway), [BUCKET, "AccessDenied"]
        else:
            sink, expected = oss_sink(gateway, endpoint=closed_port_endpoint()), [BUCKET, "connection error", "after 4 attempts"]
    with pytest.raises(SinkError) as err:
        sink.write(records(2), [])
    for text in expected:
        assert text in str(err.value)
    assert "not-the-secret" not in str(err.value) and CREDENTIALS["aws_secret_access_key"] not in err.value.reason


def test_s3_throttling_within_retries_succeeds(moto, fault_proxy):
    moto.client("s3").create_bucket(Bucket=BUCKET)
    fault_proxy.s3_error("PUT", times=1)
    sink = s3_sink(moto, endpoint_url=fault_proxy.endpoint, max_attempts=2)
    recs = records(1)
    sink.write(recs, [])
    assert sum(1 for method, _, _ in fault_proxy.requests if method == "PUT") == 2
    assert by_key(sink.iter_records()) == by_key(recs)


def test_oss_retries_5xx_then_succeeds(moto, oss_gateway):
    moto.client("s3").create_bucket(Bucket=BUCKET)
    proxy = FaultProxy(oss_gateway.endpoint).start()
    try:
        proxy.s3_error("PUT", times=2, code="ServiceUnavailable")
        sink = oss_sink(oss_gateway, endpoint=proxy.endpoint)
        sink.write(records(1), [])
        assert sum(1 for method, _, _ in proxy.requests if method == "PUT") == 3
        proxy.s3_error("PUT", times=10, code="InternalError", status=500)
        with pytest.raises(SinkError, match=r"InternalError \(HTTP 500\) after 4 attempts"):
            sink.write(records(1, tag="x"), [])
    finally:
        proxy.stop()


# -- table sinks --------------------------------------------------------------------------


def test_retried_batch_keeps_the_row_count(table_sink):
    sink, _ = table_sink
    recs, dead = records(40), dead_letters()
    sink.write(recs, dead)
    sink.write(recs, dead)
    assert len(list(sink._scan_items())) == len(recs) + len(dead)


@pytest.mark.parametrize("order", ["reconciled-then-receipt", "receipt-then-reconciled"])
def test_merge_rule_receipt_wins(table_sink, order):
    sink, _ = table_sink
    receipts = records(4)
    reconciled = [Record(r.message_type, r.key, {"from": "QuerySendDetails", "n": i}, r.event_time, source=SOURCE_SEND_RECORD)
                  for i, r in enumerate(receipts)]
    gap = records(2, source=SOURCE_SEND_RECORD, tag="-gap")  # no receipt will come for these
    if order == "reconciled-then-receipt":
        sink.write(reconciled + gap, [])
        assert {sink.get(r.key)["source"] for r in receipts} == {SOURCE_SEND_RECORD}
        sink.write(receipts, [])
    else:
        sink.write(receipts, [])
        sink.write(reconciled + gap, [])
    stored = by_key(sink.iter_records())
    assert len(list(sink._scan_items())) == len(receipts) + len(gap)
    for r in receipts:
        assert stored[r.key] == r  # the receipt's data, whole
    for r in gap:
        assert stored[r.key].source == SOURCE_SEND_RECORD and stored[r.key].body == r.body
    sink.write(reconciled, [])  # a later reconcile run changes nothing
    assert by_key(sink.iter_records()) == stored


def test_reconciled_record_replaces_an_older_reconciled_record(table_sink):
    sink, _ = table_sink
    first = records(1, source=SOURCE_SEND_RECORD)[0]
    newer = Record(first.message_type, first.key, {"status": "delivered"}, first.event_time, source=SOURCE_SEND_RECORD)
    sink.write([first], [])
    sink.write([newer], [])
    assert by_key(sink.iter_records())[first.key].body == {"status": "delivered"}


def test_tablestore_merge_rule_when_a_missing_row_fails_column_conditions(ots):
    # If the service judged `source != receipt` as failing on a missing row, the sink falls
    # back to GetRow + EXPECT_NOT_EXIST and still fills the gap.
    ots.model.missing_row_condition = "fail"
    create_tablestore_table(ots_client(ots), TABLE)
    sink = ots_sink(ots)
    gap = records(2, source=SOURCE_SEND_RECORD)
    sink.write(gap, [])
    assert {r.key: r.source for r in sink.iter_records()} == {r.key: SOURCE_SEND_RECORD for r in gap}
    sink.write(records(2), [])
    sink.write(gap, [])
    assert {r.source for r in sink.iter_records()} == {"receipt"}


def test_oversized_record_becomes_a_whole_dead_letter(table_sink):
    sink, server = table_sink
    ok = records(2)
    filler = "".join(f"line {i}: the delivery report text repeats; " for i in range(sink.max_item_bytes // 40 + 100))
    big = Record("SmsReport", "SmsReport#huge#13800138000", {"content": filler, "n": 1}, "2026-11-21 09:00:00",
                 mns=MnsMeta("msg-huge", 1795600000000, 1))
    assert len(canonical_json(big.body)) > sink.max_item_bytes
    report = sink.write(ok + [big], [])
    assert (report.records, report.dead_letters) == (2, 1)
    assert set(by_key(sink.iter_records())) == {r.key for r in ok}
    (dead,) = list(sink.iter_dead_letters())
    assert dead["key"] == "DLQ#SmsReport#msg-huge"
    assert "larger than the" in dead["error"] and big.key in dead["error"]
    assert gzip.decompress(base64.b64decode(dead["raw_body"])).decode() == canonical_json(big.body)  # not truncated
    if sink.name == "dynamodb":  # and the limit is real: the service refuses the record as an item
        from shared.sinks.dynamodb import to_item

        with pytest.raises(Exception, match="Item size has exceeded"):
            server.client("dynamodb").put_item(TableName=TABLE, Item=to_item(sink.record_item(big, 0)))
    else:  # the Tablestore fake refuses a column over 2 MB as the service does
        from tablestore import Condition, OTSServiceError, RowExistenceExpectation

        with pytest.raises(OTSServiceError, match="attribute column: 'body' exceeds the MaxLength"):
            ots_client(server).put_row(TABLE, sink._row(sink.record_item(big, 0)), Condition(RowExistenceExpectation.IGNORE))


def test_dynamodb_unprocessed_items_are_retried(moto, fault_proxy):
    create_dynamodb_table(moto.client("dynamodb"), TABLE)
    sink = ddb_sink(moto, endpoint_url=fault_proxy.endpoint)
    fault_proxy.unprocessed(times=2, items=7)
    recs = records(30)  # two BatchWriteItem chunks: 25 + 5
    report = sink.write(recs, [])
    assert report.write_calls == 4
    assert by_key(sink.iter_records()) == by_key(recs)


def test_dynamodb_unprocessed_items_give_up_after_bounded_attempts(moto, fault_proxy):
    create_dynamodb_table(moto.client("dynamodb"), TABLE)
    sink = ddb_sink(moto, endpoint_url=fault_proxy.endpoint, max_attempts=4)
    fault_proxy.unprocessed(times=100, items=5)
    with pytest.raises(SinkError, match=rf"BatchWriteItem on table {TABLE} failed: \d+ items still unprocessed "
                                        r"\(throttled\) after 4 attempts$"):
        sink.write(records(10), [])


def test_tablestore_failed_rows_are_retried_then_bounded(ots):
    create_tablestore_table(ots_client(ots), TABLE)
    sink = ots_sink(ots, max_attempts=3)
    recs = records(10)
    ots.faults.fail_rows(4)  # four rows of the first request come back OTSServerBusy
    report = sink.write(recs, [])
    assert report.write_calls == 2 and ots.api_calls("BatchWriteRow") == 2
    assert by_key(sink.iter_records()) == by_key(recs)
    ots.faults.fail_rows(1000)
    with pytest.raises(SinkError, match=r"3 of 3 rows failed with OTSServerBusy after 3 attempts$"):
        sink.write(records(3, tag="b"), [])
    ots.faults.clear()
    ots.faults.fail_rows(1, code="OTSObjectNotExist", message="gone", status=404)
    calls = ots.api_calls("BatchWriteRow")
    with pytest.raises(SinkError, match=r"1 of 3 rows failed with OTSObjectNotExist$"):
        sink.write(records(3, tag="c"), [])  # a permanent error that is not about the row is not retried
    assert ots.api_calls("BatchWriteRow") == calls + 1


def test_tablestore_batches_hold_at_most_200_rows_and_pages_are_followed(ots):
    create_tablestore_table(ots_client(ots), TABLE)
    ots.model.max_range_rows = 100
    sink = ots_sink(ots)
    recs = records(450)
    assert sink.write(recs, []).write_calls == 3
    assert len(by_key(sink.iter_records())) == 450
    assert ots.api_calls("GetRange") == 5


def test_tablestore_sts_token_is_sent():
    from tests.fakes.tablestore import TablestoreServer

    with TablestoreServer(OTS_INSTANCE, OTS_AK, OTS_SECRET, sts_token="sts-xyz") as server:
        sink = ots_sink(server, sts_token="sts-xyz")
        with pytest.raises(SinkError, match="OTSObjectNotExist"):
            sink.write(records(1), [])
        from tablestore import OTSClient

        create_tablestore_table(OTSClient(server.endpoint, OTS_AK, OTS_SECRET, OTS_INSTANCE, sts_token="sts-xyz"), TABLE)
        sink.write(records(2), [])
        assert all(h.get("x-ots-ststoken") == "sts-xyz" for _, h in server.requests)
        with pytest.raises(SinkError, match="OTSAuthFailed"):
            ots_sink(server).write(records(1), [])


@pytest.mark.parametrize("case", ["ddb-no-table", "ddb-connection", "ots-no-table", "ots-wrong-secret", "ots-connection"])
def test_refusing_table_store_raises_sink_error_naming_the_table(request, case):
    if case.startswith("ddb"):
        server = request.getfixturevalue("moto")
        endpoint = closed_port_endpoint() if case == "ddb-connection" else server.endpoint
        sink, expected = ddb_sink(server, endpoint_url=endpoint, max_attempts=2), [TABLE]
        expected.append("ResourceNotFoundException" if case == "ddb-no-table" else "EndpointConnectionError")
    else:
        server = request.getfixturevalue("ots")
        if case != "ots-no-table":
            create_tablestore_table(ots_client(server), TABLE)
        if case == "ots-wrong-secret":
            sink, expected = ots_sink(server, access_key_secret="not-the-secret"), [TABLE, "OTSAuthFailed", "HTTP 403"]
        elif case == "ots-connection":
            sink, expected = ots_sink(server, endpoint=closed_port_endpoint()), [TABLE, "connection error"]
        else:
            sink, expected = ots_sink(server), [TABLE, "OTSObjectNotExist"]
    with pytest.raises(SinkError) as err:
        sink.write(records(2), [])
    for text in expected:
        assert text in str(err.value)
    assert "not-the-secret" not in str(err.value) and OTS_SECRET not in str(err.value)


# -- table creation helpers ---------------------------------------------------------------


def test_create_tables_cli_for_dynamodb(moto, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    argv = ["dynamodb", "--table", TABLE, "--region", REGION, "--endpoint", moto.endpoint, "--ttl"]
    assert create_tables_main(argv) == 0 and create_tables_main(argv) == 0
    out = capsys.readouterr().out
    assert f"created DynamoDB table {TABLE}" in out and "already exists with the right key" in out
    ddb = moto.client("dynamodb")
    table = ddb.describe_table(TableName=TABLE)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "key", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert ddb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}
    ddb.create_table(TableName="wrong", AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
    with pytest.raises(SystemExit, match="needs key"):
        create_tables_main(["dynamodb", "--table", "wrong", "--region", REGION, "--endpoint", moto.endpoint])


def test_create_tables_cli_for_tablestore(ots, monkeypatch, capsys):
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", OTS_AK)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", OTS_SECRET)
    monkeypatch.setenv("SINK_TTL_DAYS", "90")
    argv = ["tablestore", "--table", TABLE, "--instance", OTS_INSTANCE, "--endpoint", ots.endpoint]
    assert create_tables_main(argv) == 0 and create_tables_main(argv) == 0
    out = capsys.readouterr().out
    assert f"created Tablestore table {TABLE}; TTL 90 days" in out and "already exists with the right key" in out
    described = ots_client(ots).describe_table(TABLE)
    assert described.table_meta.schema_of_primary_key == [("key", "STRING")]
    assert (described.table_options.time_to_live, described.table_options.max_version) == (90 * 86400, 1)
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    assert create_tables_main(argv) == 2


# -- selection and settings ---------------------------------------------------------------

# botocore's package itself comes with Powertools (the logger), which every function loads
# anyway; `botocore.client` is the SDK proper.
SDKS = ("boto3", "botocore.client", "oss2", "tablestore")


@pytest.mark.parametrize("sink,env,loaded", [
    ("s3", {"SINK_BUCKET": BUCKET, "SINK_REGION": "eu-west-1"}, {"boto3", "botocore.client"}),
    ("dynamodb", {"SINK_TABLE": TABLE, "SINK_REGION": "eu-west-1"}, {"boto3", "botocore.client"}),
    ("oss", {"SINK_BUCKET": BUCKET, "SINK_ENDPOINT": "https://oss-cn-hangzhou.aliyuncs.com"}, {"oss2"}),
    ("tablestore", {"SINK_TABLE": TABLE, "TABLESTORE_INSTANCE": "my-ots",
                    "SINK_ENDPOINT": "https://my-ots.cn-hangzhou.ots.aliyuncs.com"}, {"tablestore"}),
])
def test_make_sink_imports_only_the_selected_sdk(sink, env, loaded):
    env = dict(env, SINK=sink, ALICOM_UID="1234567890", ALIBABA_CLOUD_ACCESS_KEY_ID="ak-id",
               ALIBABA_CLOUD_ACCESS_KEY_SECRET="ak-secret")
    code = (
        "import json, sys\n"
        "from shared.settings import load_settings\n"
        "from shared.sinks import make_sink\n"
        f"sink = make_sink(load_settings({env!r}))\n"
        f"print(json.dumps([type(sink).__name__, sorted(m for m in {SDKS!r} if m in sys.modules)]))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)} | {"PYTHONPATH": root})
    assert out.returncode == 0, out.stderr
    name, modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert name == {"s3": "S3Sink", "dynamodb": "DynamoDBSink", "oss": "OssSink", "tablestore": "TablestoreSink"}[sink]
    assert set(modules) == loaded


BASE_ENV = {"ALICOM_UID": "1234567890"}


@pytest.mark.parametrize("env,variable", [
    ({"SINK": "bigtable"}, "SINK"),
    ({"SINK": "s3"}, "SINK_BUCKET"),
    ({"SINK": "oss", "SINK_BUCKET": BUCKET}, "SINK_ENDPOINT"),
    ({"SINK": "oss", "SINK_BUCKET": BUCKET, "SINK_ENDPOINT": "oss-cn-hangzhou.aliyuncs.com"}, "SINK_ENDPOINT"),
    ({"SINK": "s3", "SINK_BUCKET": BUCKET, "SINK_ENDPOINT": "http://s3.example.com"}, "SINK_ENDPOINT"),
    ({"SINK": "s3", "SINK_BUCKET": "Not_A_Bucket"}, "SINK_BUCKET"),
    ({"SINK": "s3", "SINK_BUCKET": BUCKET, "SINK_SSE": "DES"}, "SINK_SSE"),
    ({"SINK": "dynamodb"}, "SINK_TABLE"),
    ({"SINK": "dynamodb", "SINK_TABLE": TABLE, "SINK_REGION": "nowhere"}, "SINK_REGION"),
    ({"SINK": "tablestore", "SINK_TABLE": TABLE, "SINK_ENDPOINT": "https://x.ots.aliyuncs.com"}, "TABLESTORE_INSTANCE"),
    ({"SINK": "tablestore", "SINK_TABLE": TABLE, "TABLESTORE_INSTANCE": "my-ots"}, "SINK_ENDPOINT"),
    ({"SINK": "dynamodb", "SINK_TABLE": TABLE, "SINK_TTL_DAYS": "0"}, "SINK_TTL_DAYS"),
])
def test_bad_sink_settings_name_the_variable(env, variable):
    with pytest.raises(SettingsError) as err:
        load_settings(dict(BASE_ENV, **env))
    assert variable in str(err.value)


@pytest.mark.parametrize("env,variable", [
    ({"SINK": "s3", "SINK_BUCKET": BUCKET, "SINK_SSE": "SM4"}, "SINK_SSE"),
    ({"SINK": "s3", "SINK_BUCKET": BUCKET, "SINK_KMS_KEY_ID": "k"}, "SINK_KMS_KEY_ID"),
    ({"SINK": "oss", "SINK_BUCKET": BUCKET, "SINK_ENDPOINT": "https://oss-cn-hangzhou.aliyuncs.com"}, "ALIBABA_CLOUD_ACCESS_KEY_ID"),
    ({"SINK": "oss", "SINK_BUCKET": BUCKET, "SINK_ENDPOINT": "https://oss-cn-hangzhou.aliyuncs.com", "SINK_SSE": "AES256",
      "SINK_KMS_KEY_ID": "k", "ALIBABA_CLOUD_ACCESS_KEY_ID": "a", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "b"}, "SINK_KMS_KEY_ID"),
    ({"SINK": "tablestore", "SINK_TABLE": TABLE, "TABLESTORE_INSTANCE": "my-ots",
      "SINK_ENDPOINT": "https://my-ots.cn-hangzhou.ots.aliyuncs.com"}, "ALIBABA_CLOUD_ACCESS_KEY_ID"),
])
def test_sink_specific_settings_are_checked_when_the_sink_is_made(env, variable):
    with pytest.raises(SettingsError) as err:
        make_sink(load_settings(dict(BASE_ENV, **env)))
    assert variable in str(err.value)


def test_send_ledger_lives_beside_the_records(table_sink):
    from datetime import datetime, timedelta, timezone

    from shared.ledger import Send, get_entry, ledger_key, mark, pending_sends, receipt_key, record_sends

    sink, _ = table_sink
    sent = datetime.now(timezone.utc) - timedelta(hours=3)
    sends = [Send(f"7001{i:06d}^0", f"1390000{i:04d}", sent + timedelta(seconds=i)) for i in range(4)]
    assert record_sends(sink, sends) == 4
    receipt = Record("SmsReport", receipt_key(sends[0].biz_id, sends[0].phone_number), {"success": True},
                     "2026-11-21 08:00:00")
    sink.write([receipt], [])
    pending = pending_sends(sink, grace_seconds=3600)
    assert [e["key"] for e in pending] == [ledger_key(s.biz_id, s.phone_number) for s in sends[1:]]
    mark(sink, pending[0], "delivered", checked=True)
    assert get_entry(sink, pending[0]["key"])["status"] == "delivered"
    assert [e["key"] for e in pending_sends(sink, grace_seconds=3600)] == [e["key"] for e in pending[1:]]
    assert [r.key for r in sink.iter_records()] == [receipt.key]  # ledger rows are not records


# -- read and conditional-write errors ----------------------------------------------------


@pytest.mark.parametrize("case,expected", [
    ("s3-get-missing", "get from bucket alicom-receipts failed: NoSuchKey (HTTP 404)"),
    ("s3-list-no-bucket", "list of bucket missing-bucket failed: NoSuchBucket (HTTP 404)"),
    ("oss-get-missing", "get in bucket alicom-receipts failed: NoSuchKey (HTTP 404)"),
    ("oss-list-denied", "list in bucket alicom-receipts failed: AccessDenied (HTTP 403)"),
    ("dynamodb-get-no-table", "GetItem on table no_such_table failed: ResourceNotFoundException (HTTP 400)"),
    ("dynamodb-scan-no-table", "Scan on table no_such_table failed: ResourceNotFoundException (HTTP 400)"),
    ("dynamodb-reconciled-no-table", "PutItem on table no_such_table failed: ResourceNotFoundException (HTTP 400)"),
    ("tablestore-get-no-table", "GetRow on table no_such_table (instance test-instance) failed: OTSObjectNotExist (HTTP 404)"),
    ("tablestore-scan-no-table", "GetRange on table no_such_table (instance test-instance) failed: OTSObjectNotExist (HTTP 404)"),
    ("tablestore-reconciled-no-table", "PutRow on table no_such_table (instance test-instance) failed: OTSObjectNotExist (HTTP 404)"),
])
def test_read_and_conditional_write_errors_name_the_backend_reason(request, moto, case, expected):
    backend = case.split("-")[0]
    if backend in ("s3", "oss"):
        moto.client("s3").create_bucket(Bucket=BUCKET)
    if backend == "s3":
        sink = s3_sink(moto, bucket="missing-bucket" if "no-bucket" in case else BUCKET)
    elif backend == "oss":
        gateway = request.getfixturevalue("oss_gateway")
        if "denied" in case:
            gateway.deny(BUCKET)
        sink = oss_sink(gateway)
    elif backend == "dynamodb":
        sink = ddb_sink(moto, table="no_such_table")
    else:
        sink = ots_sink(request.getfixturevalue("ots"), table="no_such_table")
    with pytest.raises(SinkError) as err:
        if "get-missing" in case:
            sink._get_object("alicom/type=SmsReport/dt=2026-11-21/hour=08/part-missing.jsonl.gz")
        elif "get-no-table" in case:
            sink.get("SmsReport#biz#13800138000")
        elif "reconciled" in case:
            sink.write(records(1, source=SOURCE_SEND_RECORD), [])
        else:
            list(sink.iter_records())
    assert str(err.value) == f"{backend} sink: {expected}"


def test_s3_body_cut_short_is_read_again(moto, fault_proxy):
    moto.client("s3").create_bucket(Bucket=BUCKET)
    sink = s3_sink(moto, endpoint_url=fault_proxy.endpoint)
    recs = records(3)
    sink.write(recs, [])
    fault_proxy.cut_short("GET", times=2, path_contains=".jsonl.gz")
    assert by_key(sink.iter_records()) == by_key(recs)
    fault_proxy.cut_short("GET", times=100, path_contains=".jsonl.gz")
    with pytest.raises(SinkError, match=r"get from bucket alicom-receipts failed: \w+Error after 5 attempts$"):
        list(sink.iter_records())


def test_s3_listing_follows_every_page(moto):
    moto.client("s3").create_bucket(Bucket=BUCKET)
    sink = s3_sink(moto)
    sink.list_page = 2
    recs = records(9)  # nine objects: five pages of two
    sink.write(recs, [])
    assert len(object_keys(sink)) == 9 and by_key(sink.iter_records()) == by_key(recs)
