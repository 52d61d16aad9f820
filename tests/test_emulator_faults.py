"""Emulator faults added for the failure-path tests: `hang` and the services' real
throttling answers, driven through the real SDKs over real sockets."""
from __future__ import annotations

import threading
import time

import pytest
from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkdybaseapi.request.v20170525.QueryTokenForMnsQueueRequest import QueryTokenForMnsQueueRequest
from mns.mns_exception import MNSClientNetworkException, MNSServerException

from scripts.emulator import Emulator
from tests.test_emulator import AK, SECRET, _raw_mns, admin, make_queue, mns_queue, query_token, wait_for


@pytest.fixture
def emu():
    with Emulator(customer_keys={AK: SECRET}, seed=0) as e:
        yield e


def in_thread(fn):
    """Run fn in a thread; returns (thread, outcome) where outcome gets "result" or "error"."""
    outcome = {}

    def run():
        try:
            outcome["result"] = fn()
        except Exception as exc:  # the test inspects it
            outcome["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, outcome


# --- hang --------------------------------------------------------------------------------

def test_hang_is_never_answered_and_applies_nothing(emu):
    name = make_queue(emu)
    emu.enqueue(name, "eA==")
    queue = mns_queue(emu, name, timeout=0.5)
    emu.set_faults(hang=1.0, apis="mns")
    with pytest.raises(MNSClientNetworkException) as exc:
        queue.batch_receive_message(16, 0)
    assert "timed out" in exc.value.message      # the client gave up waiting, nothing was answered
    # The client hung up, so the emulator lets the connection go.
    assert wait_for(lambda: emu.hung_requests() == 0)
    stats = emu.stats()
    assert (stats["BatchReceiveMessage"], stats["fault_hang"]) == (1, 1)
    assert emu.queue_state(name)["received"] == 0 and emu.queue_state(name)["visible"] == 1
    # Scoped: the token API still answers; the POP SDK times out the same way when it is hung.
    assert query_token(emu)["Code"] == "OK"
    emu.set_faults(hang=1.0, apis="token")
    client = AcsClient(AK, SECRET, "cn-hangzhou", auto_retry=False, timeout=0.5)
    client.add_endpoint("cn-hangzhou", "Dybaseapi", f"127.0.0.1:{emu.port}")
    req = QueryTokenForMnsQueueRequest()
    req.set_MessageType("SmsReport")
    with pytest.raises(ClientException) as exc:
        client.do_action_with_exception(req)
    assert exc.value.get_error_code() == "SDK.HttpError" and "timed out" in exc.value.get_error_msg()
    assert emu.stats()["fault_hang"] == 2


def test_hung_request_is_let_go_when_the_fault_is_lifted(emu):
    name = make_queue(emu)
    emu.enqueue(name, "eA==")
    queue = mns_queue(emu, name, timeout=30)
    emu.set_faults(hang=1.0, apis="BatchReceiveMessage")
    thread, outcome = in_thread(lambda: queue.batch_receive_message(16, 0))
    assert wait_for(lambda: emu.hung_requests() == 1)
    assert thread.is_alive() and emu.queue_state(name)["received"] == 0
    assert admin(emu, "GET", "/_admin/faults/hung") == (200, {"hung_requests": 1})
    # A new setting that still hangs receives keeps holding it; one that no longer covers them lets go.
    emu.set_faults(hang=1.0, apis=["BatchReceiveMessage", "token"])
    time.sleep(0.2)
    assert emu.hung_requests() == 1 and thread.is_alive()
    emu.set_faults(hang=1.0, apis="BatchDeleteMessage")
    thread.join(5)
    assert not thread.is_alive() and emu.hung_requests() == 0
    # Closed without an answer: the MNS SDK sends the receive again once, and that one is served.
    assert [m.message_body for m in outcome["result"]] == ["eA=="]
    assert emu.stats()["BatchReceiveMessage"] == 2 and emu.queue_state(name)["received"] == 1


def test_stopping_the_emulator_does_not_wait_for_hung_requests():
    emu = Emulator(customer_keys={AK: SECRET}, seed=0).start()
    try:
        name = make_queue(emu)
        queue = mns_queue(emu, name, timeout=60)
        emu.set_faults(hang=1.0)
        threads = [in_thread(lambda: queue.batch_receive_message(16, 0))[0]]
        assert wait_for(lambda: emu.hung_requests() == 1)
        t0 = time.monotonic()
    finally:
        emu.stop()
    assert time.monotonic() - t0 < 2
    threads[0].join(5)
    assert not threads[0].is_alive()
    assert wait_for(lambda: emu.hung_requests() == 0)   # the server side lets go too


# --- throttling ------------------------------------------------------------------------------

POP_THROTTLING = [
    ("Throttling.User", 400, "Request was denied due to user flow control."),
    ("Throttling", 400, "Request was denied due to request throttling."),
    ("Throttling.Api", 400, "Request was denied due to api flow control."),
    ("ServiceUnavailable", 503, "The request has failed due to a temporary failure of the server."),
]


@pytest.mark.parametrize("code,status,message", POP_THROTTLING)
def test_token_api_throttles_as_pop_apis_do(emu, code, status, message):
    emu.set_faults(throttle=1.0, throttle_code=code, apis="token")
    with pytest.raises(ServerException) as exc:
        query_token(emu)
    err = exc.value
    assert (err.get_http_status(), err.get_error_code(), err.get_error_msg()) == (status, code, message)
    assert err.get_request_id()
    assert emu.stats()["fault_throttle"] == 1


def test_a_share_of_token_calls_is_throttled_and_the_rest_answered(emu):
    emu.set_faults(throttle=0.3, throttle_code="Throttling.User", apis="token")
    outcomes = []
    for _ in range(100):
        try:
            outcomes.append(query_token(emu)["Code"])
        except ServerException as e:
            outcomes.append((e.get_http_status(), e.get_error_code()))
    throttled = outcomes.count((400, "Throttling.User"))
    assert 18 <= throttled <= 45 and outcomes.count("OK") == 100 - throttled
    assert emu.stats()["fault_throttle"] == throttled


MNS_THROTTLING = [("QpsLimitExceeded", 429), ("TooManyRequests", 429), ("ServiceUnavailable", 503)]


@pytest.mark.parametrize("code,status", MNS_THROTTLING)
def test_mns_throttles_with_429_and_503(emu, code, status):
    name = make_queue(emu)
    emu.enqueue(name, "eA==")
    dto = query_token(emu)["MessageTokenDTO"]
    emu.set_faults(throttle=1.0, throttle_code=code, apis="mns")
    with pytest.raises(MNSServerException) as exc:
        mns_queue(emu, name, dto).batch_receive_message(16, 0)
    assert exc.value.type == code and exc.value.request_id
    got_status, headers, body = _raw_mns(emu, dto, f"/queues/{name}/messages?numOfMessages=16&waitseconds=0")
    assert got_status == status and f"<Code>{code}</Code>" in body and headers["x-mns-request-id"]
    assert emu.queue_state(name)["received"] == 0


def test_throttle_code_per_service_and_status_override(emu):
    name = make_queue(emu)
    emu.enqueue(name, "eA==")
    dto = query_token(emu)["MessageTokenDTO"]
    emu.set_faults(throttle=1.0, throttle_code={"rpc": "Throttling.Api", "mns": "ServiceUnavailable"})
    with pytest.raises(ServerException) as exc:
        query_token(emu)
    assert (exc.value.get_http_status(), exc.value.get_error_code()) == (400, "Throttling.Api")
    status, _, body = _raw_mns(emu, dto, f"/queues/{name}/messages?numOfMessages=16&waitseconds=0")
    assert status == 503 and "<Code>ServiceUnavailable</Code>" in body
    # One code: the services that use it answer with it, the others with their own default.
    emu.set_faults(throttle=1.0, throttle_code="Throttling.User")
    status, _, body = _raw_mns(emu, dto, f"/queues/{name}/messages?numOfMessages=16&waitseconds=0")
    assert status == 429 and "<Code>QpsLimitExceeded</Code>" in body
    emu.set_faults(throttle=1.0, throttle_code="Throttling.User", throttle_status=503, apis="token")
    with pytest.raises(ServerException) as exc:
        query_token(emu)
    assert (exc.value.get_http_status(), exc.value.get_error_code()) == (503, "Throttling.User")


def test_unknown_throttle_code_is_refused_by_name(emu):
    with pytest.raises(ValueError, match="Throttling.Userr.*Throttling.User"):
        emu.set_faults(throttle=1.0, throttle_code="Throttling.Userr")
    with pytest.raises(ValueError, match="mns has no code 'Throttling.User'"):
        emu.set_faults(throttle=1.0, throttle_code={"mns": "Throttling.User"})
    status, body = admin(emu, "PUT", "/_admin/faults", {"throttle": 1.0, "throttle_code": "Nope"})
    assert status == 400 and "Nope" in body["error"]
    status, body = admin(emu, "PUT", "/_admin/faults", {"hang": 0.5, "throttle": 0.5,
                                                        "throttle_code": "Throttling.User", "apis": ["token"]})
    assert status == 200 and (body["hang"], body["throttle_code"], body["throttle_status"]) == (
        0.5, "Throttling.User", None)


# --- scope: one message type -------------------------------------------------------------------

def test_faults_scoped_to_one_message_type(emu):
    report, up = make_queue(emu, "SmsReport"), make_queue(emu, "SmsUp")
    report_q, up_q = mns_queue(emu, report), mns_queue(emu, up)
    emu.set_faults(server_error=1.0, apis="mns", message_types="SmsUp")
    with pytest.raises(MNSServerException) as exc:
        up_q.batch_receive_message(16, 0)
    assert exc.value.type == "InternalError"
    with pytest.raises(MNSServerException) as exc:
        report_q.batch_receive_message(16, 0)
    assert exc.value.type == "MessageNotExist"
    assert query_token(emu, "SmsUp")["Code"] == "OK"          # apis="mns": tokens untouched
    emu.set_faults(throttle=1.0, throttle_code="Throttling.User", message_types=["SmsUp"])
    with pytest.raises(ServerException) as exc:
        query_token(emu, "SmsUp")
    assert (exc.value.get_http_status(), exc.value.get_error_code()) == (400, "Throttling.User")
    assert query_token(emu, "SmsReport")["Code"] == "OK"
    assert emu.stats()["fault_throttle"] == 1 and emu.stats()["fault_server_error"] == 1
    status, body = admin(emu, "PUT", "/_admin/faults", {"hang": 1.0, "message_types": ["SmsUp"]})
    assert status == 200 and body["message_types"] == ["SmsUp"]
