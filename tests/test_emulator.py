"""The loopback Alicom emulator, driven through the REAL SDKs over real sockets."""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone
from email.utils import formatdate
from zoneinfo import ZoneInfo

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkdybaseapi.request.v20170525.QueryTokenForMnsQueueRequest import QueryTokenForMnsQueueRequest
from mns.account import Account
from mns.mns_exception import MNSClientNetworkException, MNSServerException

from scripts.emulator import Emulator
from scripts.emulator.auth import mns_string_to_sign, rpc_sign

AK, SECRET = "LTAIexampleAK", "exampleSecret"
SHANGHAI = ZoneInfo("Asia/Shanghai")


# --- fixtures and helpers -------------------------------------------------------------

@pytest.fixture
def emu():
    with Emulator(customer_keys={AK: SECRET}, token_lifetime=3600.0, visibility_timeout=30.0,
                  seed=0, uid="1234567890") as e:
        yield e


def acs(emu, ak=AK, secret=SECRET, product="Dybaseapi") -> AcsClient:
    client = AcsClient(ak, secret, "cn-hangzhou", auto_retry=False, timeout=5)
    client.add_endpoint("cn-hangzhou", product, f"127.0.0.1:{emu.port}")
    return client


def query_token(emu, message_type="SmsReport", ak=AK, secret=SECRET) -> dict:
    req = QueryTokenForMnsQueueRequest()
    req.set_MessageType(message_type)
    req.set_QueueName(emu.queue_name(message_type))
    return json.loads(acs(emu, ak, secret).do_action_with_exception(req))


def mns_queue(emu, name, dto=None, secret=None, timeout=10):
    """One Account/Queue per caller (the SDK is not thread-safe)."""
    if dto is None:
        dto = query_token(emu, name.rsplit("-", 1)[1])["MessageTokenDTO"]
    account = Account(emu.url, dto["AccessKeyId"], secret or dto["AccessKeySecret"], dto["SecurityToken"])
    account.mns_client.set_connection_timeout(timeout)
    queue = account.get_queue(name)
    queue.set_encoding(False)
    return queue


def make_queue(emu, message_type="SmsReport", visibility_timeout=None) -> str:
    return emu.create_queue(emu.queue_name(message_type), visibility_timeout)


def receive_error(queue, n=16, wait=0) -> MNSServerException:
    with pytest.raises(MNSServerException) as exc:
        queue.batch_receive_message(n, wait)
    return exc.value


def raw_rpc(emu, params: dict, method="POST"):
    """POST a hand-built POP RPC request; returns (status, json body)."""
    url = f"{emu.url}/?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def signed_rpc_params(action, extra, ak=AK, secret=SECRET, timestamp=None):
    params = {"Action": action, "Version": "2017-05-25", "Format": "JSON", "AccessKeyId": ak,
              "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
              "SignatureNonce": uuid.uuid4().hex,
              "Timestamp": timestamp or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
    params["Signature"] = rpc_sign("POST", params, secret)
    return params


def wait_for(predicate, timeout=5.0):
    """Poll until predicate() is true; False if it never became true."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def admin(emu, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(emu.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# --- token API ---------------------------------------------------------------------------

def test_token_expire_time_is_shanghai_and_lifetime_is_honoured(emu):
    emu.set_token_lifetime(120)
    body = query_token(emu)
    assert body["Code"] == "OK" and body["RequestId"]
    dto = body["MessageTokenDTO"]
    assert set(dto) == {"AccessKeyId", "AccessKeySecret", "SecurityToken", "CreateTime", "ExpireTime"}
    now = datetime.now(timezone.utc)
    expire = datetime.strptime(dto["ExpireTime"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)
    create = datetime.strptime(dto["CreateTime"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)
    assert abs((create - now).total_seconds()) < 3
    assert 117 <= (expire - now).total_seconds() <= 122


def test_short_lived_token_expires_and_is_refused(emu):
    name = make_queue(emu)
    emu.enqueue(name, "aGVsbG8=")
    emu.set_token_lifetime(1)
    dto = query_token(emu)["MessageTokenDTO"]
    queue = mns_queue(emu, name, dto)
    assert len(queue.batch_receive_message(16, 0)) == 1
    expire = datetime.strptime(dto["ExpireTime"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)
    time.sleep(max(0.0, (expire - datetime.now(timezone.utc)).total_seconds()) + 0.05)
    err = receive_error(queue)
    assert (err.type, "expired" in err.message) == ("AccessDenied", True)


def test_expire_tokens_now(emu):
    name = make_queue(emu)
    queue = mns_queue(emu, name)
    assert receive_error(queue).type == "MessageNotExist"
    emu.expire_tokens()
    err = receive_error(queue)
    assert err.type == "AccessDenied" and "expired" in err.message
    assert receive_error(mns_queue(emu, name)).type == "MessageNotExist"  # a fresh token works


def test_unknown_access_key_is_refused(emu):
    with pytest.raises(ServerException) as exc:
        query_token(emu, ak="LTAInobody")
    assert (exc.value.get_http_status(), exc.value.get_error_code()) == (404, "InvalidAccessKeyId.NotFound")


def test_wrong_secret_is_refused(emu):
    # The server says SignatureDoesNotMatch with its string to sign; the core SDK sees it
    # equals its own and reports InvalidAccessKeySecret instead.
    with pytest.raises(ServerException) as exc:
        query_token(emu, secret="not-the-secret")
    assert exc.value.get_http_status() == 400
    assert exc.value.get_error_code() == "InvalidAccessKeySecret"


def test_tampered_request_gets_signature_does_not_match(emu):
    params = signed_rpc_params("QueryTokenForMnsQueue", {"MessageType": "SmsReport"})
    params["MessageType"] = "SmsUp"  # changed after signing
    status, body = raw_rpc(emu, params)
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")
    assert body["RequestId"] and "server string to sign is:" in body["Message"]


def test_stale_timestamp_and_nonce_reuse(emu):
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 20 * 60))
    status, body = raw_rpc(emu, signed_rpc_params("QueryTokenForMnsQueue", {"MessageType": "SmsReport"},
                                                    timestamp=old))
    assert (status, body["Code"]) == (400, "InvalidTimeStamp.Expired")
    params = signed_rpc_params("QueryTokenForMnsQueue", {"MessageType": "SmsReport"})
    assert raw_rpc(emu, params)[1]["Code"] == "OK"
    status, body = raw_rpc(emu, params)
    assert (status, body["Code"]) == (400, "SignatureNonceUsed")


def test_missing_message_type_and_unknown_action(emu):
    req = QueryTokenForMnsQueueRequest()  # no MessageType
    with pytest.raises(ServerException) as exc:
        acs(emu).do_action_with_exception(req)
    assert (exc.value.get_http_status(), exc.value.get_error_code()) == (400, "MissingMessageType")
    status, body = raw_rpc(emu, signed_rpc_params("DescribeNothing", {}))
    assert (status, body["Code"]) == (404, "InvalidAction.NotFound")


def test_business_refusal_is_a_200_with_a_code(emu):
    emu.set_rpc_refusal("isv.BUSINESS_LIMIT_CONTROL", "limited")
    body = query_token(emu)
    assert body["Code"] == "isv.BUSINESS_LIMIT_CONTROL" and "MessageTokenDTO" not in body
    emu.set_rpc_refusal(None)
    assert query_token(emu)["Code"] == "OK"


# --- MNS queue semantics ----------------------------------------------------------------

def test_receive_fields_dequeue_count_and_redelivery(emu):
    name = make_queue(emu, visibility_timeout=1)
    ids = [emu.enqueue_receipt(name, {"biz_id": f"b{i}", "phone_number": "13800000000", "n": "短信"})
           for i in range(3)]
    queue = mns_queue(emu, name)
    first = queue.batch_receive_message(16, 0)
    assert [m.message_id for m in first] == ids
    m = first[0]
    assert json.loads(base64.b64decode(m.message_body)) == {"biz_id": "b0", "phone_number": "13800000000",
                                                             "n": "短信"}
    assert m.message_body_md5 == hashlib.md5(m.message_body.encode()).hexdigest().upper()
    assert m.dequeue_count == 1 and m.priority == 8
    assert m.enqueue_time <= m.first_dequeue_time < m.next_visible_time
    assert 900 <= m.next_visible_time - m.first_dequeue_time <= 1100
    assert receive_error(queue).type == "MessageNotExist"   # all in flight
    assert emu.queue_state(name) == {"visible": 0, "in_flight": 3, "deleted": 0, "enqueued": 3,
                                     "received": 3, "redelivered": 0, "delete_failed": 0,
                                     "malformed_served": 0, "visibility_timeout": 1.0,
                                     "undeleted_peak": 3}
    time.sleep(1.05)
    # The visibility ran out: the old handle no longer deletes anything.
    with pytest.raises(MNSServerException) as exc:
        queue.delete_message(m.receipt_handle)
    assert exc.value.type == "ReceiptHandleError"
    again = queue.batch_receive_message(16, 0)
    assert [x.message_id for x in again] == ids
    assert all(x.dequeue_count == 2 for x in again)
    assert {x.receipt_handle for x in again}.isdisjoint({x.receipt_handle for x in first})
    assert again[0].first_dequeue_time == m.first_dequeue_time
    queue.batch_delete_message([x.receipt_handle for x in again])
    state = emu.queue_state(name)
    assert (state["deleted"], state["visible"], state["received"]) == (3, 0, 6)
    # Each message came twice; the one stale delete is counted as a failed handle.
    assert (state["redelivered"], state["delete_failed"]) == (3, 1)
    assert emu.redeliveries(name) == {ids[0]: 2, ids[1]: 2, ids[2]: 2}


def test_single_receive_and_change_visibility_issue_new_handles(emu):
    name = make_queue(emu)
    emu.enqueue(name, "b25l")
    queue = mns_queue(emu, name)
    msg = queue.receive_message(0)
    assert (msg.message_body, msg.dequeue_count) == ("b25l", 1)
    changed = queue.change_message_visibility(msg.receipt_handle, 5)
    assert changed.receipt_handle != msg.receipt_handle
    # The SDK hands next_visible_time back as a str here (an int everywhere else).
    assert 4000 <= int(changed.next_visible_time) - int(time.time() * 1000) <= 5100
    with pytest.raises(MNSServerException) as exc:
        queue.delete_message(msg.receipt_handle)
    assert exc.value.type == "ReceiptHandleError"
    queue.delete_message(changed.receipt_handle)
    assert emu.queue_state(name)["deleted"] == 1


def test_change_visibility_to_zero_makes_message_visible_again(emu):
    name = make_queue(emu)
    emu.enqueue(name, "eA==")
    queue = mns_queue(emu, name)
    msg = queue.batch_receive_message(1, 0)[0]
    queue.change_message_visibility(msg.receipt_handle, 0)
    again = queue.batch_receive_message(1, 0)[0]
    assert (again.message_id, again.dequeue_count) == (msg.message_id, 2)


def test_long_poll_returns_as_soon_as_a_message_arrives(emu):
    name = make_queue(emu)
    queue = mns_queue(emu, name)
    t0 = time.monotonic()
    assert receive_error(queue, wait=1).type == "MessageNotExist"
    assert time.monotonic() - t0 >= 0.95
    threading.Timer(0.3, emu.enqueue, (name, "bGF0ZQ==")).start()
    t0 = time.monotonic()
    got = queue.batch_receive_message(16, 10)
    waited = time.monotonic() - t0
    assert [m.message_body for m in got] == ["bGF0ZQ=="]
    assert 0.25 <= waited < 5


def test_long_poll_wakes_when_visibility_runs_out(emu):
    name = make_queue(emu, visibility_timeout=1)
    emu.enqueue(name, "cmVkZWxpdmVy")
    queue = mns_queue(emu, name)
    queue.batch_receive_message(16, 0)
    t0 = time.monotonic()
    again = queue.batch_receive_message(16, 5)
    assert again[0].dequeue_count == 2 and 0.5 < time.monotonic() - t0 < 3


def test_partial_batch_delete_is_parsed_into_sub_errors(emu):
    name = make_queue(emu)
    for i in range(5):
        emu.enqueue(name, base64.b64encode(b"m%d" % i).decode())
    queue = mns_queue(emu, name)
    msgs = queue.batch_receive_message(16, 0)
    queue.batch_delete_message([m.receipt_handle for m in msgs[:2]])
    handles = [m.receipt_handle for m in msgs]
    with pytest.raises(MNSServerException) as exc:
        queue.batch_delete_message(handles + ["1-bm90LWEtaGFuZGxl"])
    err = exc.value
    assert err.type == "ReceiptHandleError" and err.request_id
    assert [e["ReceiptHandle"] for e in err.sub_errors] == handles[:2] + ["1-bm90LWEtaGFuZGxl"]
    assert all(e["ErrorCode"] == "ReceiptHandleError" and e["ErrorMessage"] for e in err.sub_errors)
    # The valid handles of that batch were deleted anyway.
    assert emu.queue_state(name)["deleted"] == 5


def test_handles_with_plus_and_slash_survive_the_query_string(emu):
    name = make_queue(emu)
    for i in range(16):
        emu.enqueue(name, base64.b64encode(b"x%d" % i).decode())
    queue = mns_queue(emu, name)
    msgs = queue.batch_receive_message(16, 0)
    plus = [m for m in msgs if "+" in m.receipt_handle]
    slash = [m for m in msgs if "/" in m.receipt_handle and "+" not in m.receipt_handle]
    assert plus and slash
    for m in plus:
        queue.delete_message(m.receipt_handle)
    changed = queue.change_message_visibility(slash[0].receipt_handle, 10)
    queue.delete_message(changed.receipt_handle)
    assert emu.queue_state(name)["deleted"] == len(plus) + 1


# --- MNS auth ------------------------------------------------------------------------------

def test_token_is_scoped_to_its_message_type(emu):
    report, up = make_queue(emu, "SmsReport"), make_queue(emu, "SmsUp")
    up_token = query_token(emu, "SmsUp")["MessageTokenDTO"]
    err = receive_error(mns_queue(emu, report, up_token))
    assert err.type == "AccessDenied"
    assert receive_error(mns_queue(emu, up, up_token)).type == "MessageNotExist"
    # A queue of the right type that does not exist.
    missing = emu.queue_name("SmsUp").replace("1234567890", "999")
    assert receive_error(mns_queue(emu, missing, up_token)).type == "QueueNotExist"
    # The customer's own key has no rights on Alicom's queues; an unknown key is refused.
    own = Account(emu.url, AK, SECRET).get_queue(report)
    assert receive_error(own).type == "AccessDenied"
    assert receive_error(Account(emu.url, "LTAInobody", "x").get_queue(report)).type == "InvalidAccessKeyId"


def test_bad_mns_signature_is_refused(emu):
    name = make_queue(emu)
    err = receive_error(mns_queue(emu, name, secret="wrong"))
    assert err.type == "SignatureDoesNotMatch"


def _raw_mns(emu, dto, target, method="GET", date=None, drop=()):
    headers = {"x-mns-version": "2015-06-06", "date": date or formatdate(usegmt=True),
               "security-token": dto["SecurityToken"]}
    sts = mns_string_to_sign(method, headers, target)
    sig = base64.b64encode(hmac.new(dto["AccessKeySecret"].encode(), sts.encode(), hashlib.sha1).digest()).decode()
    headers["Authorization"] = f"MNS {dto['AccessKeyId']}:{sig}"
    for h in drop:
        headers.pop(h)
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
    conn.request(method, target, headers=headers)
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read().decode()
    conn.close()
    return out


def test_stale_date_missing_version_and_request_id_header(emu):
    name = make_queue(emu)
    dto = query_token(emu)["MessageTokenDTO"]
    target = f"/queues/{name}/messages?numOfMessages=16&waitseconds=0"
    status, headers, body = _raw_mns(emu, dto, target, date=formatdate(time.time() - 20 * 60, usegmt=True))
    assert status == 408 and "<Code>TimeExpired</Code>" in body and headers["x-mns-request-id"]
    status, headers, body = _raw_mns(emu, dto, target, drop=("x-mns-version",))
    assert status == 400 and "<Code>InvalidArgument</Code>" in body
    status, headers, body = _raw_mns(emu, dto, target)
    assert status == 404 and "<Code>MessageNotExist</Code>" in body and "<Message>Message not exist." in body
    assert headers["x-mns-request-id"] in body


# --- faults and latency -----------------------------------------------------------------------

def test_faults_fire_at_the_requested_rate_and_do_not_touch_state(emu):
    name = make_queue(emu)
    for i in range(300):
        emu.enqueue(name, base64.b64encode(b"%d" % i).decode())
    queue = mns_queue(emu, name)
    emu.set_faults(server_error=0.2, throttle=0.1, apis=["BatchReceiveMessage"])
    got, errors = [], []
    for _ in range(200):
        try:
            got.extend(queue.batch_receive_message(1, 0))
        except MNSServerException as e:
            errors.append(e.type)
    stats = emu.stats()
    assert stats["BatchReceiveMessage"] == 200
    assert stats["fault_server_error"] == errors.count("InternalError")
    assert stats["fault_throttle"] == errors.count("QpsLimitExceeded")
    assert 20 <= errors.count("InternalError") <= 60 and 8 <= errors.count("QpsLimitExceeded") <= 35
    # Only the answered receives took a message.
    assert emu.queue_state(name)["received"] == len(got) == 200 - len(errors)
    emu.set_faults()
    assert len(queue.batch_receive_message(16, 0)) == 16


def test_same_seed_same_fault_sequence():
    def run():
        with Emulator(customer_keys={AK: SECRET}, seed=7) as e:
            name = make_queue(e)
            queue = mns_queue(e, name)
            e.set_faults(server_error=0.5, apis="mns")
            return [receive_error(queue).type for _ in range(30)]
    assert run() == run()


def test_dropped_connection_applies_nothing_and_the_sdk_resends(emu):
    name = make_queue(emu)
    for i in range(100):
        emu.enqueue(name, base64.b64encode(b"%d" % i).decode())
    queue = mns_queue(emu, name)
    emu.set_faults(drop=0.3, apis=["BatchReceiveMessage"])
    got, failures = [], 0
    for _ in range(50):
        try:
            got.extend(queue.batch_receive_message(1, 0))
        except MNSClientNetworkException:
            failures += 1   # dropped twice in a row: the SDK resends only once
    stats = emu.stats()
    assert 0.15 <= stats["fault_drop"] / stats["BatchReceiveMessage"] <= 0.45
    assert stats["BatchReceiveMessage"] == 50 + stats["fault_drop"] - failures
    assert emu.queue_state(name)["received"] == len(got)


def test_drop_after_commit_applies_the_delete_but_loses_the_answer(emu):
    name = make_queue(emu)
    for i in range(3):
        emu.enqueue(name, "eA==")
    queue = mns_queue(emu, name)
    msgs = queue.batch_receive_message(16, 0)
    emu.set_faults(drop_after_commit=1.0, apis=["BatchDeleteMessage"])
    with pytest.raises(MNSClientNetworkException):
        queue.batch_delete_message([m.receipt_handle for m in msgs])
    assert emu.queue_state(name)["deleted"] == 3
    assert emu.stats()["BatchDeleteMessage"] == 2   # the SDK silently sent it again


def test_slow_fault_outlasts_the_client_timeout_without_side_effects(emu):
    name = make_queue(emu)
    emu.enqueue(name, "eA==")
    queue = mns_queue(emu, name, timeout=0.3)
    emu.set_faults(slow=1.0, slow_seconds=1.0, apis="mns")
    with pytest.raises(MNSClientNetworkException):
        queue.batch_receive_message(16, 0)
    assert emu.queue_state(name)["received"] == 0
    emu.set_faults()


def test_faults_are_scoped_and_never_hit_admin(emu):
    emu.set_faults(server_error=1.0, apis="mns")
    assert query_token(emu)["Code"] == "OK"
    assert admin(emu, "GET", "/_admin/health")[0] == 200
    emu.set_faults(server_error=1.0)
    assert admin(emu, "GET", "/_admin/stats")[0] == 200
    with pytest.raises(ServerException) as exc:
        query_token(emu)
    assert (exc.value.get_http_status(), exc.value.get_error_code()) == (500, "InternalError")


def test_latency_is_added(emu):
    name = make_queue(emu)
    queue = mns_queue(emu, name)
    emu.set_latency(0.05)
    t0 = time.perf_counter()
    receive_error(queue)
    assert time.perf_counter() - t0 >= 0.045


def _presigned_receive(emu, dto, target):
    headers = {"x-mns-version": "2015-06-06", "date": formatdate(usegmt=True),
               "security-token": dto["SecurityToken"]}
    sts = mns_string_to_sign("GET", headers, target)
    sig = base64.b64encode(hmac.new(dto["AccessKeySecret"].encode(), sts.encode(), hashlib.sha1).digest())
    headers["Authorization"] = f"MNS {dto['AccessKeyId']}:{sig.decode()}"
    return headers


def test_request_time_at_zero_latency(emu, capsys):
    name = emu.create_queue(emu.queue_name("SmsReport"), visibility_timeout=0)
    for i in range(16):
        emu.enqueue_receipt(name, {"biz_id": str(i), "phone_number": "13800000000", "success": True})
    dto = query_token(emu)["MessageTokenDTO"]
    queue = mns_queue(emu, name, dto)
    t0 = time.perf_counter()
    for _ in range(1000):
        assert len(queue.batch_receive_message(16, 0)) == 16
    sdk = (time.perf_counter() - t0) / 1000
    # The same call without the SDK's minidom parsing: what the emulator itself costs.
    target = f"/queues/{name}/messages?numOfMessages=16&waitseconds=0"
    headers = _presigned_receive(emu, dto, target)
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
    t0 = time.perf_counter()
    for _ in range(1000):
        conn.request("GET", target, headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read().count(b"<Message>") == 16
    raw = (time.perf_counter() - t0) / 1000
    conn.close()
    with capsys.disabled():
        print(f"\n[emulator] 1,000 BatchReceiveMessage(16) on one keep-alive connection at zero latency: "
              f"{raw * 1000:.2f} ms/request raw http.client, {sdk * 1000:.2f} ms/request through the MNS SDK")


# --- admin HTTP and CLI -----------------------------------------------------------------------

def test_admin_http(emu):
    assert admin(emu, "GET", "/_admin/health") == (200, {"ok": True, "url": emu.url})
    status, body = admin(emu, "POST", "/_admin/queues", {"message_type": "SmsUp", "visibility_timeout": 5})
    name = body["name"]
    assert (status, name) == (200, emu.queue_name("SmsUp"))
    status, body = admin(emu, "POST", f"/_admin/queues/{name}/messages",
                         {"bodies": ["YQ=="], "receipt": {"content": "回复"}})
    assert status == 200 and len(body["message_ids"]) == 2
    assert admin(emu, "GET", f"/_admin/queues/{name}")[1]["visible"] == 2
    assert admin(emu, "GET", "/_admin/queues/nope")[0] == 404
    msgs = mns_queue(emu, name).batch_receive_message(16, 0)
    assert json.loads(base64.b64decode(msgs[1].message_body)) == {"content": "回复"}
    stats = admin(emu, "GET", "/_admin/stats")[1]
    assert stats["BatchReceiveMessage"] == 1 and stats["QueryTokenForMnsQueue"] == 1 and stats["mns_total"] == 1
    assert admin(emu, "DELETE", "/_admin/stats")[0] == 200 and emu.stats()["total"] == 0
    assert admin(emu, "PUT", "/_admin/latency", {"seconds": 0.01})[1] == {"seconds": 0.01, "jitter": 0.0}
    assert admin(emu, "PUT", "/_admin/faults", {"throttle": 0.5, "apis": ["token"]})[1]["throttle"] == 0.5
    assert admin(emu, "DELETE", "/_admin/faults")[1]["throttle"] == 0.0
    assert admin(emu, "POST", "/_admin/keys", {"ak": "LTAIsecond", "secret": "s2"})[0] == 200
    assert query_token(emu, ak="LTAIsecond", secret="s2")["Code"] == "OK"
    assert admin(emu, "PUT", "/_admin/tokens/lifetime", {"seconds": 10})[0] == 200
    assert admin(emu, "POST", "/_admin/tokens/expire")[0] == 200
    assert admin(emu, "GET", "/_admin/nothing")[0] == 404


def test_cli_prints_one_json_line_and_stops_on_sigterm():
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-m", "scripts.emulator", "--port", "0", "--ak", "AKcli",
                             "--secret", "topsecret", "--uid", "42", "--queues", "SmsReport,SmsUp"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        info = json.loads(line)
        assert info["queues"] == {"SmsReport": "Alicom-Queue-42-SmsReport", "SmsUp": "Alicom-Queue-42-SmsUp"}
        assert "topsecret" not in line
        with urllib.request.urlopen(info["url"] + "/_admin/health", timeout=5) as resp:
            assert json.loads(resp.read())["ok"] is True
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    assert proc.stdout.read() == "" and proc.stderr.read() == ""
