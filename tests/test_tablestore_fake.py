"""The Tablestore fake itself: is it strict where the real service is strict?

Requests here are built and checked with the SDK's own protocol and signing code, so the
fake is held to what the SDK sends and verifies, not to its own idea of the protocol.
"""
from __future__ import annotations

import http.client
import logging
import time

import pytest
from tablestore import (
    INF_MAX,
    INF_MIN,
    BatchWriteRowRequest,
    CapacityUnit,
    ComparatorType,
    CompositeColumnCondition,
    Condition,
    Direction,
    LogicalOperator,
    OTSClient,
    OTSServiceError,
    PutRowItem,
    ReservedThroughput,
    Row,
    RowExistenceExpectation,
    SingleColumnCondition,
    TableInBatchWriteRowItem,
    TableMeta,
    TableOptions,
)
from tablestore.auth import RequestContext, SignV2
from tablestore.credentials import StaticCredentialsProvider
from tablestore.protocol import OTSProtocol
import tablestore.protobuf.table_store_pb2 as pb2

from tests.fakes.tablestore import ots, tablestore_server  # noqa: F401

AK, SECRET, INSTANCE = "test-ak", "test-secret", "test-instance"


@pytest.fixture
def client(ots):
    c = OTSClient(ots.endpoint, AK, SECRET, INSTANCE)
    c.create_table(TableMeta("t", [("key", "STRING")]), TableOptions(), ReservedThroughput(CapacityUnit(0, 0)))
    return c


def signed(api: str, *args, secret: str = SECRET):
    """(uri, headers, body) exactly as the SDK would send them."""
    protocol = OTSProtocol(INSTANCE, "utf8", logging.getLogger("test-ots-protocol"))
    context = RequestContext(StaticCredentialsProvider(AK, secret).get_credentials())
    return protocol.make_request(api, SignV2("utf8"), context, *args)


def post(server, uri: str, headers: dict, body: bytes, conn=None):
    conn = conn or http.client.HTTPConnection(server.endpoint.split("://")[1], timeout=10)
    conn.request("POST", uri, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def error_of(body: bytes) -> str:
    err = pb2.Error()
    err.ParseFromString(body)
    return err.code


def test_wrong_secret_is_refused_as_the_service_does(ots):
    with pytest.raises(OTSServiceError) as err:
        OTSClient(ots.endpoint, AK, "wrong-secret", INSTANCE).list_table()
    assert (err.value.http_status, err.value.code, err.value.message) == (403, "OTSAuthFailed", "Signature mismatch.")


@pytest.mark.parametrize("tamper,code", [
    (lambda h, b: (h, b + b"x"), "OTSAuthFailed"),  # body no longer matches x-ots-contentmd5
    (lambda h, b: ({**h, "x-ots-date": "2020-01-01T00:00:00.000Z"}, b), "OTSAuthFailed"),  # clock skew
    (lambda h, b: ({**h, "x-ots-instancename": "other"}, b), "OTSAuthFailed"),  # signed header changed
    (lambda h, b: ({k: v for k, v in h.items() if k != "x-ots-signature"}, b), "OTSAuthFailed"),
])
def test_tampered_requests_are_refused(ots, tamper, code):
    uri, headers, body = signed("ListTable")
    status, _, payload = post(ots, uri, *tamper(headers, body))
    assert status == 403 and error_of(payload) == code


def test_responses_carry_what_the_sdk_checks_and_keep_the_connection(ots):
    uri, headers, body = signed("ListTable")
    conn = http.client.HTTPConnection(ots.endpoint.split("://")[1], timeout=10)
    for _ in range(3):  # one connection, three requests: HTTP/1.1 keep-alive
        status, out, payload = post(ots, uri, headers, body, conn)
        assert status == 200
    for name in ("x-ots-contentmd5", "x-ots-requestid", "x-ots-date", "x-ots-contenttype"):
        assert name in out
    context = RequestContext(StaticCredentialsProvider(AK, SECRET).get_credentials())
    signer = SignV2("utf8")
    assert out["authorization"] == f"OTS {AK}:" + signer.make_response_signature(uri, out, signer.get_signing_key(context))
    assert out.get("connection", "").lower() != "close"
    status, _, payload = post(ots, "/NoSuchApi", *signed("ListTable")[1:], conn)
    assert status == 403  # signed for /ListTable, not for /NoSuchApi


def test_row_existence_and_column_conditions(client):
    client.put_row("t", Row([("key", "a")], [("source", "receipt"), ("n", 3)]))
    cases = [
        (Condition(RowExistenceExpectation.EXPECT_EXIST), "missing", False),
        (Condition(RowExistenceExpectation.EXPECT_NOT_EXIST), "a", False),
        (Condition(RowExistenceExpectation.EXPECT_NOT_EXIST), "new1", True),
        (Condition(RowExistenceExpectation.IGNORE, SingleColumnCondition("n", 3, ComparatorType.GREATER_THAN)), "a", False),
        (Condition(RowExistenceExpectation.IGNORE, SingleColumnCondition("n", 3, ComparatorType.GREATER_EQUAL)), "a", True),
        (Condition(RowExistenceExpectation.IGNORE, SingleColumnCondition("zz", 1, ComparatorType.EQUAL, pass_if_missing=False)), "a", False),
        (Condition(RowExistenceExpectation.IGNORE, SingleColumnCondition("zz", 1, ComparatorType.EQUAL)), "a", True),
    ]
    either = CompositeColumnCondition(LogicalOperator.OR)
    either.add_sub_condition(SingleColumnCondition("source", "receipt", ComparatorType.NOT_EQUAL))
    either.add_sub_condition(SingleColumnCondition("n", 4, ComparatorType.EQUAL))
    cases.append((Condition(RowExistenceExpectation.IGNORE, either), "a", False))
    negated = CompositeColumnCondition(LogicalOperator.NOT)
    negated.add_sub_condition(SingleColumnCondition("source", "receipt", ComparatorType.EQUAL))
    cases.append((Condition(RowExistenceExpectation.EXPECT_EXIST, negated), "a", False))
    for condition, key, passes in cases:
        try:
            client.put_row("t", Row([("key", key)], [("source", "receipt"), ("n", 3)]), condition)
            assert passes, (key, condition)
        except OTSServiceError as exc:
            assert not passes and (exc.http_status, exc.code) == (403, "OTSConditionCheckFail")


def test_size_limits(client):
    with pytest.raises(OTSServiceError, match="exceeds the MaxLength:2097152"):
        client.put_row("t", Row([("key", "big")], [("body", "x" * (2 * 1024 * 1024 + 1))]))
    with pytest.raises(OTSServiceError, match="primary key"):
        client.put_row("t", Row([("key", "k" * 1025)], [("v", 1)]))
    request = BatchWriteRowRequest()
    request.add(TableInBatchWriteRowItem("t", [PutRowItem(Row([("key", f"k{i}")], [("v", i)]), Condition("IGNORE"))
                                               for i in range(201)]))
    with pytest.raises(OTSServiceError, match="Rows count exceeds the upper limit: 200"):
        client.batch_write_row(request)


def test_table_ttl_hides_expired_rows(ots):
    c = OTSClient(ots.endpoint, AK, SECRET, INSTANCE)
    c.create_table(TableMeta("ttl", [("key", "STRING")]), TableOptions(time_to_live=86400), ReservedThroughput(CapacityUnit(0, 0)))
    old = int((time.time() - 2 * 86400) * 1000)
    c.put_row("ttl", Row([("key", "old")], [("v", 1, old)]))
    c.put_row("ttl", Row([("key", "new")], [("v", 2)]))
    assert c.get_row("ttl", [("key", "old")], max_version=1)[1] is None
    _, _, rows, _ = c.get_range("ttl", Direction.FORWARD, [("key", INF_MIN)], [("key", INF_MAX)], max_version=1)
    assert [r.primary_key for r in rows] == [[("key", "new")]]


def test_get_range_pages_and_directions(client, ots):
    ots.model.max_range_rows = 4
    request = BatchWriteRowRequest()
    request.add(TableInBatchWriteRowItem("t", [PutRowItem(Row([("key", f"k{i:02d}")], [("v", i)]), Condition("IGNORE"))
                                               for i in range(10)]))
    assert client.batch_write_row(request).is_all_succeed()
    keys, start = [], [("key", INF_MIN)]
    while start:
        _, start, rows, _ = client.get_range("t", Direction.FORWARD, start, [("key", INF_MAX)], max_version=1)
        keys += [r.primary_key[0][1] for r in rows]
    assert keys == [f"k{i:02d}" for i in range(10)]
    _, nxt, rows, _ = client.get_range("t", Direction.BACKWARD, [("key", "k07")], [("key", "k02")], limit=3, max_version=1)
    assert [r.primary_key[0][1] for r in rows] == ["k07", "k06", "k05"] and nxt == [("key", "k04")]


def test_injected_throttling_is_retried_by_the_sdk(client, ots):
    ots.faults.fail_requests("PutRow", 1)  # OTSServerBusy: the SDK's policy retries it for any API
    client.put_row("t", Row([("key", "a")], [("v", 1)]))
    assert ots.api_calls("PutRow") == 2
    assert client.get_row("t", [("key", "a")], max_version=1)[1].attribute_columns[0][:2] == ("v", 1)


def test_unknown_table_and_duplicate_table(client):
    with pytest.raises(OTSServiceError) as err:
        client.describe_table("nope")
    assert (err.value.http_status, err.value.code) == (404, "OTSObjectNotExist")
    with pytest.raises(OTSServiceError) as err:
        client.create_table(TableMeta("t", [("key", "STRING")]), TableOptions(), ReservedThroughput(CapacityUnit(0, 0)))
    assert (err.value.http_status, err.value.code) == (409, "OTSObjectAlreadyExist")
    assert client.list_table() == ("t",)
