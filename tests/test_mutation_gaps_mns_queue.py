"""Tests that close gaps a mutation run (scripts/mutation/run) found in shared/mns_queue.py.

What each failure of the MNS SDK becomes: the code, the flags the drain acts on (auth: replace
the token; fatal: stop asking; throttled: back off) and the text the operator reads. The
exceptions are the SDK's own classes, built as the SDK builds them.
"""
from __future__ import annotations

import time

import pytest
from mns.mns_exception import MNSClientException, MNSClientNetworkException, MNSServerException

from shared.mns_queue import _error, read_received_messages
from shared.queues import QueueError

CLOCK_HINT = ("the request's Date is more than 15 minutes off MNS's clock: this host's clock is off "
              "(check its time synchronisation)")


def server(code: str) -> MNSServerException:
    return MNSServerException(code, "refused by the test", "REQ-1", "host-1")


@pytest.mark.parametrize("exc,expected", [
    (server("AccessDenied"), ("MNS BatchReceiveMessage failed: AccessDenied", "AccessDenied", True, False, False)),
    (server("SecurityTokenExpired"),
     ("MNS BatchReceiveMessage failed: SecurityTokenExpired", "SecurityTokenExpired", True, False, False)),
    (server("QueueNotExist"), ("MNS BatchReceiveMessage failed: QueueNotExist", "QueueNotExist", False, True, False)),
    (server("TimeExpired"), (f"MNS BatchReceiveMessage failed: TimeExpired: {CLOCK_HINT}", "TimeExpired", False, True,
                             False)),
    (server("QpsLimitExceeded"),
     ("MNS BatchReceiveMessage failed: QpsLimitExceeded", "QpsLimitExceeded", False, False, True)),
    (server("InternalError"), ("MNS BatchReceiveMessage failed: InternalError", "InternalError", False, False, False)),
    (server(""), ("MNS BatchReceiveMessage failed: Unknown", "Unknown", False, False, False)),
    (MNSClientException("", "no answer"), ("MNS BatchReceiveMessage failed: NetworkError", "NetworkError", False,
                                           False, False)),
    (MNSClientNetworkException("RespDataDamaged", "not XML"),
     ("MNS BatchReceiveMessage failed: RespDataDamaged", "RespDataDamaged", False, False, False)),
    (TimeoutError("timed out"), ("MNS BatchReceiveMessage failed: TimeoutError", "TimeoutError", False, False, False)),
])
def test_what_each_sdk_failure_becomes(exc, expected):
    error = _error("BatchReceiveMessage", exc)
    assert (str(error), error.code, error.auth, error.fatal, error.throttled) == expected


# -- reading a BatchReceiveMessage answer ------------------------------------------------------

NS = "http://mns.aliyuncs.com/doc/v1/"
FIELDS = {"MessageId": "MID-1", "ReceiptHandle": "RH-1", "MessageBody": "eyJhIjoxfQ==",
          "MessageBodyMD5": "D41D8CD98F00B204E9800998ECF8427E", "EnqueueTime": "1795572000000",
          "NextVisibleTime": "1795572030000", "FirstDequeueTime": "1795572000100", "DequeueCount": "1",
          "Priority": "8"}


def message_xml(**changed) -> str:
    fields = {**FIELDS, **changed}
    return "<Message>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items() if v is not None) + "</Message>"


def answer(*messages: str, root: str = "Messages") -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><{root} xmlns="{NS}">{"".join(messages)}</{root}>'


def test_messages_nested_below_the_root_are_found_as_the_sdk_finds_them():
    wrapped = f'<Answer xmlns="{NS}"><Messages>{message_xml()}</Messages></Answer>'
    entries = read_received_messages(wrapped, "REQ-9")
    assert [(e.message_id, e.receipt_handle, e.dequeue_count) for e in entries] == [("MID-1", "RH-1", 1)]


def test_an_element_other_than_a_message_is_passed_over_not_the_end_of_the_batch():
    entries = read_received_messages(answer("<Unknown>x</Unknown>", message_xml(), message_xml(MessageId="MID-2")))
    assert [e.message_id for e in entries] == ["MID-1", "MID-2"]


@pytest.mark.parametrize("xml_text,message", [
    ("", 'Xml data is ""!'),
    ("<Messages", "answer is not XML"),
    (f'<Error xmlns="{NS}"><Code>x</Code></Error>', "No element with tag name 'Messages'."),
    (answer(message_xml(DequeueCount="one")), "a message lacks a required field"),
    (answer(message_xml(ReceiptHandle=None)), "a message lacks a required field"),
    (answer(message_xml(MessageId="")), "a message lacks a required field"),
])
def test_each_damaged_answer_says_what_is_wrong_under_its_request_id(xml_text, message):
    with pytest.raises(MNSClientNetworkException) as damaged:
        read_received_messages(xml_text, "REQ-9")
    assert (damaged.value.type, damaged.value.message, damaged.value.req_id) == ("RespDataDamaged", message, "REQ-9")


def test_without_a_request_id_a_damaged_answer_carries_an_empty_one():
    with pytest.raises(MNSClientNetworkException) as damaged:
        read_received_messages("")
    assert damaged.value.req_id == ""


# -- deleting, over the emulator ---------------------------------------------------------------

def sms_report_queue():
    """SmsReport's queue, opened as the drain opens it (the runtime's token and settings)."""
    from shared.runtime import drain_runtime

    runtime = drain_runtime()
    return runtime.open_queue("SmsReport", runtime.tokens.get("SmsReport", 5))


def received_handles(emulator, n: int) -> tuple[object, list[str]]:
    """A queue of SmsReport with `n` receipts received (not yet deleted): the queue and their handles."""
    from scripts.receipts import make_receipts

    for body in make_receipts("SmsReport", n, seed=5):
        emulator.enqueue_receipt(emulator.queue_name("SmsReport"), body)
    queue = sms_report_queue()
    handles: list[str] = []
    while len(handles) < n:
        handles += [m.receipt_handle for m in queue.receive(16, 1)]
    return queue, handles


def test_a_delete_of_20_handles_is_two_calls_and_counts_every_deleted_one(emulator, drain_env):
    drain_env()
    queue, handles = received_handles(emulator, 20)
    outcome = queue.delete(handles)
    assert (outcome.calls, outcome.deleted, outcome.failed) == (2, 20, {})
    assert emulator.undeleted(emulator.queue_name("SmsReport")) == 0


def test_handles_refused_in_each_batch_are_reported_and_the_rest_counted(emulator, drain_env):
    drain_env()
    queue, handles = received_handles(emulator, 20)
    emulator.fail_deletes(emulator.queue_name("SmsReport"), handles=2, times=2)
    outcome = queue.delete(handles)
    refused = [handles[0], handles[1], handles[16], handles[17]]
    assert (outcome.calls, outcome.deleted) == (2, 16)
    assert outcome.failed == {h: "ReceiptHandleError" for h in refused}


@pytest.mark.parametrize("fault,code", [({"server_error": 1.0}, "InternalError"),
                                        ({"hang": 1.0}, "NetWorkException")],  # the SDK's spelling
                         ids=["refused", "unanswered"])
def test_a_failed_delete_names_the_call(emulator, drain_env, fault, code):
    """A delete refused whole, or not answered within the socket timeout, is a QueueError naming
    BatchDeleteMessage (neither an auth nor a fatal one: the handles come back and dedupe)."""
    drain_env()
    queue, handles = received_handles(emulator, 3)
    queue.set_timeout(0.5)
    emulator.set_faults(apis=["BatchDeleteMessage"], **fault)
    try:
        with pytest.raises(QueueError) as failed:
            queue.delete(handles)
    finally:
        emulator.set_faults()
    assert str(failed.value).startswith(f"MNS BatchDeleteMessage failed: {code}"), str(failed.value)
    assert (failed.value.code, failed.value.auth, failed.value.fatal) == (code, False, False)


# -- opening a queue -------------------------------------------------------------------------------

def test_a_queue_keeps_its_token_and_takes_an_endpoint_with_trailing_slashes(emulator, drain_env):
    from scripts.receipts import make_receipts
    from shared.mns_queue import MnsQueue
    from shared.runtime import drain_runtime

    drain_env()
    for body in make_receipts("SmsReport", 2, seed=6):
        emulator.enqueue_receipt(emulator.queue_name("SmsReport"), body)
    token = drain_runtime().tokens.get("SmsReport", 5)
    queue = MnsQueue(emulator.url + "//", emulator.queue_name("SmsReport"), token, 5)  # the SDK strips only one
    assert queue.token is token
    assert len(queue.receive(16, 1)) == 2


def test_a_queue_refuses_plain_http_to_a_remote_host():
    from datetime import datetime

    from shared.mns_queue import MnsQueue
    from shared.tokens import MnsToken

    token = MnsToken(access_key_id="STS.x", access_key_secret="s", security_token="t", expire_at=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="plain http is allowed only for loopback; use https:// for mns.example.com"):
        MnsQueue("http://mns.example.com", "Alicom-Queue-1-SmsReport", token, 5)


def test_a_socket_timeout_under_a_second_is_kept_not_rounded_up(emulator, drain_env):
    """A last receive or delete may have a fraction of a second left: 0.3 s is 0.3 s (floor 0.1 s)."""
    drain_env()
    queue = sms_report_queue()
    queue.set_timeout(0.3)
    emulator.set_faults(hang=1.0, apis=["BatchReceiveMessage"])
    try:
        started = time.monotonic()
        with pytest.raises(QueueError):
            queue.receive(16, 0)
        took = time.monotonic() - started
    finally:
        emulator.set_faults()
    assert 0.25 <= took < 0.9, took


# -- receiving, over the emulator ------------------------------------------------------------------

def test_a_receive_asks_for_no_more_than_it_may_take_and_carries_each_messages_mns_fields(emulator, drain_env):
    from scripts.receipts import make_receipts

    drain_env()
    name = emulator.queue_name("SmsReport")
    before_ms = int(time.time() * 1000)
    for body in make_receipts("SmsReport", 3, seed=7):
        emulator.enqueue_receipt(name, body)
    after_ms = int(time.time() * 1000)
    (one,) = sms_report_queue().receive(1, 0)
    assert emulator.queue_state(name)["visible"] == 2  # only one was taken out of sight
    assert one.meta.message_id in emulator.message_ids(name)
    assert before_ms - 1000 <= one.meta.enqueue_time <= after_ms + 1000
    assert (one.meta.dequeue_count, one.body[:3]) == (1, "eyJ")  # base64 of a JSON object, as stored


@pytest.mark.parametrize("fault", [{"server_error": 1.0}, {"hang": 1.0}], ids=["refused", "unanswered"])
def test_a_failed_receive_names_the_call(emulator, drain_env, fault):
    drain_env()
    queue = sms_report_queue()
    queue.set_timeout(0.5)
    emulator.set_faults(apis=["BatchReceiveMessage"], **fault)
    try:
        with pytest.raises(QueueError) as failed:
            queue.receive(16, 0)
    finally:
        emulator.set_faults()
    assert str(failed.value).startswith("MNS BatchReceiveMessage failed: "), str(failed.value)


def test_a_shorter_timeout_is_applied_when_it_differs_by_more_than_a_quarter_second(emulator, drain_env):
    """The SDK reconnects on a new timeout, so a change of 0.25 s or less is not applied; 2 s then
    1 s is, and an unanswered receive is given up after about 1 s, not 2."""
    drain_env()
    queue, _ = received_handles(emulator, 1)
    queue.set_timeout(2.0)
    queue.set_timeout(1.0)
    emulator.set_faults(apis=["BatchReceiveMessage"], hang=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(QueueError):
            queue.receive(1, 0)
    finally:
        took = time.monotonic() - started
        emulator.set_faults()
    assert took < 1.6, took


@pytest.mark.parametrize("wait", [0, 1, 2])
def test_a_receive_sends_the_long_poll_it_was_asked_for(emulator, drain_env, wait):
    """waitseconds is sent whatever its value (MNS would otherwise use the queue's own
    polling wait, which Alicom sets, not us)."""
    from scripts.receipts import make_receipts
    from shared.runtime import drain_runtime

    drain_env()
    name = emulator.queue_name("SmsReport")
    emulator.enqueue_receipt(name, make_receipts("SmsReport", 1, 0)[0])
    runtime = drain_runtime()
    queue = runtime.open_queue("SmsReport", runtime.tokens.get("SmsReport", timeout=10))
    assert len(queue.receive(16, wait)) == 1
    assert emulator.receives(name) == [(16, wait, 1)]
