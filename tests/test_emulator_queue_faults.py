"""Queue-level controls of the emulator: malformed receive answers, partly failing
deletes, the visibility timeout changed after creation — through the real MNS SDK
(and the raw wire where the SDK hides what came back)."""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest
from mns.mns_exception import MNSClientNetworkException, MNSServerException

from scripts.emulator import Emulator
from tests.test_emulator import (AK, SECRET, _raw_mns, admin, make_queue, mns_queue, query_token, receive_error,
                                 wait_for)

NS = "{http://mns.aliyuncs.com/doc/v1/}"
FIELDS = ("MessageId", "ReceiptHandle", "MessageBodyMD5", "MessageBody", "EnqueueTime", "NextVisibleTime",
          "FirstDequeueTime", "DequeueCount", "Priority")


@pytest.fixture
def emu():
    with Emulator(customer_keys={AK: SECRET}, seed=0) as e:
        yield e


def raw_receive(emu, dto, name):
    """(status, [{field: text or None}] per message) of one BatchReceiveMessage on the wire."""
    status, _, body = _raw_mns(emu, dto, f"/queues/{name}/messages?numOfMessages=16&waitseconds=0")
    if status != 200:
        return status, body
    root = ET.fromstring(body)
    return status, [{f: (m.find(NS + f).text if m.find(NS + f) is not None else "<absent>") for f in FIELDS}
                    for m in root.findall(NS + "Message")]


# --- malformed receives ------------------------------------------------------------------

@pytest.mark.parametrize("field", ["MessageId", "ReceiptHandle", "EnqueueTime", "MessageBody"])
@pytest.mark.parametrize("mode", ["empty", "missing"])
def test_malformed_receive_breaks_one_field_and_leaves_the_queue_alone(emu, field, mode):
    name = make_queue(emu)
    first = emu.enqueue(name, "Zmlyc3Q=")
    emu.enqueue(name, "c2Vjb25k")
    dto = query_token(emu)["MessageTokenDTO"]
    emu.malform_receives(name, field, mode)
    status, messages = raw_receive(emu, dto, name)
    assert status == 200 and len(messages) == 1
    broken = messages[0]
    assert broken[field] == (None if mode == "empty" else "<absent>")   # <X></X> parses as text None
    intact = {f: v for f, v in broken.items() if f != field}
    assert all(v not in (None, "<absent>") for v in intact.values())
    if field != "MessageId":
        assert broken["MessageId"] == first
    if field != "ReceiptHandle":
        # The answer's handle deletes nothing.
        with pytest.raises(MNSServerException) as exc:
            mns_queue(emu, name, dto).delete_message(broken["ReceiptHandle"])
        assert exc.value.type == "ReceiptHandleError"
    state = emu.queue_state(name)
    assert (state["visible"], state["in_flight"], state["received"], state["malformed_served"]) == (2, 0, 0, 1)
    # The next receive is normal and sees both messages as never received.
    got = mns_queue(emu, name, dto).batch_receive_message(16, 0)
    assert [(m.message_id, m.dequeue_count) for m in got] == [(first, 1), (got[1].message_id, 1)]


def test_the_sdk_calls_a_malformed_answer_damaged_and_it_waits_for_a_message(emu):
    name = make_queue(emu)
    queue = mns_queue(emu, name)
    emu.malform_receives(name, "EnqueueTime", "missing", count=2)
    # No visible message: an ordinary empty answer, and the malformed ones stay pending.
    assert receive_error(queue).type == "MessageNotExist"
    emu.enqueue(name, "eA==")
    for _ in range(2):
        with pytest.raises(MNSClientNetworkException) as exc:
            queue.batch_receive_message(16, 0)
        assert exc.value.type == "RespDataDamaged"
    msg = queue.batch_receive_message(16, 0)[0]
    assert (msg.message_body, msg.dequeue_count) == ("eA==", 1)
    assert emu.queue_state(name)["malformed_served"] == 2
    with pytest.raises(ValueError, match="EnqueueTime"):
        emu.malform_receives(name, "EnqueuTime")
    with pytest.raises(ValueError, match="empty, missing"):
        emu.malform_receives(name, "MessageId", mode="garbled")


# --- partly failing deletes ------------------------------------------------------------------

def test_failing_deletes_refuse_some_handles_and_delete_the_rest(emu):
    name = make_queue(emu, visibility_timeout=1)
    ids = [emu.enqueue(name, f"bTp{i}") for i in range(5)]
    queue = mns_queue(emu, name)
    msgs = queue.batch_receive_message(16, 0)
    handles = [m.receipt_handle for m in msgs]
    emu.fail_deletes(name, handles=2)
    with pytest.raises(MNSServerException) as exc:
        queue.batch_delete_message(handles)
    err = exc.value
    assert err.type == "ReceiptHandleError"
    assert [(e["ReceiptHandle"], e["ErrorCode"]) for e in err.sub_errors] == [
        (handles[0], "ReceiptHandleError"), (handles[1], "ReceiptHandleError")]
    assert emu.message_ids(name) == ids[:2]
    state = emu.queue_state(name)
    assert (state["deleted"], state["in_flight"], state["visible"], state["delete_failed"]) == (3, 2, 0, 2)
    # A failed handle is dead (the injection was for one delete only, this refusal is the queue's own).
    with pytest.raises(MNSServerException) as exc:
        queue.batch_delete_message(handles[:2])
    assert [e["ReceiptHandle"] for e in exc.value.sub_errors] == handles[:2]
    # After the visibility timeout the two come back and delete normally.
    time.sleep(1.05)
    again = queue.batch_receive_message(16, 0)
    assert [(m.message_id, m.dequeue_count) for m in again] == [(ids[0], 2), (ids[1], 2)]
    queue.batch_delete_message([m.receipt_handle for m in again])
    state = emu.queue_state(name)
    assert (state["deleted"], state["delete_failed"], state["redelivered"]) == (5, 4, 2)


def test_failing_single_delete_all_of_a_batch_and_clearing(emu):
    name = make_queue(emu)
    for i in range(5):
        emu.enqueue(name, "eA==")
    queue = mns_queue(emu, name)
    msgs = queue.batch_receive_message(16, 0)
    emu.fail_deletes(name, handles=1, times=2)
    with pytest.raises(MNSServerException) as exc:
        queue.delete_message(msgs[0].receipt_handle)
    assert exc.value.type == "ReceiptHandleError"
    with pytest.raises(MNSServerException) as exc:
        queue.batch_delete_message([m.receipt_handle for m in msgs[1:3]])
    assert [e["ReceiptHandle"] for e in exc.value.sub_errors] == [msgs[1].receipt_handle]
    assert emu.queue_state(name)["deleted"] == 1
    # More failing handles than the batch holds: all of it fails.
    emu.fail_deletes(name, handles=16)
    with pytest.raises(MNSServerException) as exc:
        queue.batch_delete_message([msgs[3].receipt_handle])
    assert len(exc.value.sub_errors) == 1 and emu.queue_state(name)["deleted"] == 1
    # Pending failures can be dropped.
    emu.fail_deletes(name, handles=1)
    emu.clear_queue_faults(name)
    queue.delete_message(msgs[4].receipt_handle)
    assert emu.queue_state(name)["deleted"] == 2
    with pytest.raises(ValueError):
        emu.fail_deletes(name, handles=0)


# --- visibility timeout ---------------------------------------------------------------------

def test_visibility_timeout_can_be_changed_after_creation(emu):
    name = make_queue(emu)
    assert emu.visibility_timeout(name) == 30.0
    emu.set_visibility_timeout(name, 2)
    assert emu.visibility_timeout(name) == 2.0 and emu.queue_state(name)["visibility_timeout"] == 2.0
    emu.enqueue(name, "eA==")
    m = mns_queue(emu, name).batch_receive_message(16, 0)[0]
    assert 1900 <= m.next_visible_time - m.first_dequeue_time <= 2100
    for bad in (-1, 43201):
        with pytest.raises(ValueError, match="visibility_timeout"):
            emu.set_visibility_timeout(name, bad)
    with pytest.raises(ValueError, match="visibility_timeout"):
        emu.create_queue(name, visibility_timeout=-5)
    assert emu.visibility_timeout(name) == 2.0


def test_queue_controls_over_admin_http(emu):
    name = make_queue(emu)
    status, state = admin(emu, "PUT", f"/_admin/queues/{name}", {"visibility_timeout": 7})
    assert status == 200 and state["visibility_timeout"] == 7.0 and emu.visibility_timeout(name) == 7.0
    assert admin(emu, "PUT", f"/_admin/queues/{name}", {"visibility_timeout": 50000})[0] == 400
    emu.enqueue(name, "eA==")
    dto = query_token(emu)["MessageTokenDTO"]
    assert admin(emu, "POST", f"/_admin/queues/{name}/malformed-receives",
                 {"field": "ReceiptHandle", "mode": "missing"})[0] == 200
    assert raw_receive(emu, dto, name)[1][0]["ReceiptHandle"] == "<absent>"
    assert admin(emu, "POST", f"/_admin/queues/{name}/malformed-receives", {"field": "Nope"})[0] == 400
    assert admin(emu, "POST", f"/_admin/queues/{name}/failing-deletes", {"handles": 1})[0] == 200
    queue = mns_queue(emu, name, dto)
    msg = queue.batch_receive_message(16, 0)[0]
    with pytest.raises(MNSServerException):
        queue.batch_delete_message([msg.receipt_handle])
    assert admin(emu, "POST", f"/_admin/queues/{name}/failing-deletes", {"handles": 1})[0] == 200
    assert admin(emu, "DELETE", f"/_admin/queues/{name}/faults")[0] == 200
    # The failed one stays in flight for 7 s; a second message, under a 0.2 s timeout, comes twice.
    assert admin(emu, "PUT", f"/_admin/queues/{name}", {"visibility_timeout": 0.2})[0] == 200
    second = emu.enqueue(name, "eQ==")
    queue.batch_receive_message(16, 0)
    time.sleep(0.25)
    msg = queue.batch_receive_message(16, 0)[0]
    assert admin(emu, "GET", f"/_admin/queues/{name}/redeliveries") == (200, {second: 2})
    queue.batch_delete_message([msg.receipt_handle])
    assert emu.queue_state(name)["deleted"] == 1


# --- a trickle of messages -------------------------------------------------------------------------

def test_trickle_enqueues_in_the_background_and_stops(emu):
    name = make_queue(emu)
    trickle = emu.trickle(name, ["YQ==", {"biz_id": "b1"}, "Yw=="], interval=0.05)
    assert trickle.wait(5)
    assert emu.message_ids(name) == trickle.ids and len(trickle.ids) == 3
    bodies = [m.message_body for m in mns_queue(emu, name).batch_receive_message(16, 0)]
    assert bodies[0] == "YQ==" and bodies[2] == "Yw==" and bodies[1] == "eyJiaXpfaWQiOiAiYjEifQ=="
    long = emu.trickle(name, ["eA=="] * 1000, interval=0.05)
    assert wait_for(lambda: len(long.ids) >= 2)
    long.stop()
    assert long.wait(5) and 2 <= len(long.ids) < 1000
    emu.stop()
    after_stop = emu.trickle(name, ["eA=="] * 3, interval=0)
    assert after_stop.wait(5) and after_stop.ids == []
