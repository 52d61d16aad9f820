"""shared/mns_queue.py's own XML steps, checked against the MNS SDK's decoder and encoder.

`ReceiptClient` leaves signing, sending and error handling to the SDK and reads a
successful BatchReceiveMessage answer with ElementTree instead of the SDK's minidom
decoder (the drain's largest CPU cost). These tests hold the two readers to the same
result on the same bytes, and the delete body to the SDK encoder's bytes. The token cache,
which every receive and delete asks, is checked here too.
"""
from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timedelta

import pytest
from mns.mns_exception import MNSClientNetworkException
from mns.mns_xml_handler import BatchRecvMessageDecoder, ReceiptHandlesEncoder

from scripts.emulator.models import ReceivedMessage as EmulatorMessage, receipt_body
from scripts.emulator.responses import mns_messages
from scripts.receipts import make_receipts
from shared.clock import SYSTEM_CLOCK
from shared.mns_queue import read_received_messages, receipt_handles_xml
from shared.runtime import drain_runtime
from shared.tokens import TokenCache, TokenError

FIELDS = ("message_id", "receipt_handle", "message_body", "message_body_md5", "enqueue_time",
          "next_visible_time", "first_dequeue_time", "dequeue_count", "priority", "message_group_id")
XMLNS = "http://mns.aliyuncs.com/doc/v1/"


def emulator_answer(bodies: list[str]) -> str:
    """A BatchReceiveMessage answer as the emulator puts it on the wire."""
    messages = [EmulatorMessage(message_id=f"E4354B84F1508096-1-{i:08X}", receipt_handle=f"1-MS2HR/q+{i}=",
                                body=body, body_md5="0B5294833581FC5693249B4DAD666F48",
                                enqueue_time=1795635193190 + i, next_visible_time=1795635223190 + i,
                                first_dequeue_time=1795635193200 + i, dequeue_count=1 + i % 3, priority=8)
                for i, body in enumerate(bodies)]
    return mns_messages(messages, "req-1").body.decode("utf-8")


def as_tuples(entries) -> list[tuple]:
    return [tuple(getattr(e, f) for f in FIELDS) for e in entries]


def sdk_read(xml_text: str) -> list[tuple]:
    return as_tuples(BatchRecvMessageDecoder.decode(xml_text, False, "req-1"))


def our_read(xml_text: str) -> list[tuple]:
    return as_tuples(read_received_messages(xml_text, "req-1"))


# --- the receive reader -------------------------------------------------------------

def test_reads_emulator_answers_exactly_as_the_sdk_does():
    bodies = [receipt_body(p) for t in ("SmsReport", "SmsUp") for p in make_receipts(t, 8, seed=3)]
    bodies += ["a <b> & \"c\" 'd'", "中文 短信 😀", "  padded  ", "line\nbreak"]
    xml_text = emulator_answer(bodies)
    ours = our_read(xml_text)
    assert ours == sdk_read(xml_text)
    assert [t[2] for t in ours] == bodies  # entities undone, text kept byte for byte
    assert len(ours) == len(bodies)


def test_reads_pretty_printed_cdata_and_prefixed_answers_as_the_sdk_does():
    pretty = f"""<?xml version="1.0" encoding="UTF-8"?>
<Messages xmlns="{XMLNS}">
  <Message>
    <MessageId>id-1</MessageId>
    <ReceiptHandle>rh-1</ReceiptHandle>
    <MessageBodyMD5>md5</MessageBodyMD5>
    <MessageBody><![CDATA[eyJhIjogMX0=]]></MessageBody>
    <EnqueueTime>1</EnqueueTime>
    <NextVisibleTime>2</NextVisibleTime>
    <FirstDequeueTime>3</FirstDequeueTime>
    <DequeueCount>4</DequeueCount>
    <Priority>5</Priority>
    <MessageGroupId>g</MessageGroupId>
  </Message>
</Messages>"""
    assert our_read(pretty) == sdk_read(pretty)
    assert our_read(pretty)[0][:4] == ("id-1", "rh-1", "eyJhIjogMX0=", "md5")
    no_namespace = pretty.replace(f' xmlns="{XMLNS}"', "")
    assert our_read(no_namespace) == sdk_read(no_namespace) == our_read(pretty)


@pytest.mark.parametrize("damaged", [
    "",
    "this is not XML",
    f'<?xml version="1.0"?><Error xmlns="{XMLNS}"><Code>x</Code></Error>',
    # a message without its receipt handle: nothing could delete it
    emulator_answer(["eyJhIjogMX0="]).replace("<ReceiptHandle>1-MS2HR/q+0=</ReceiptHandle>", ""),
    emulator_answer(["eyJhIjogMX0="]).replace("<DequeueCount>1</DequeueCount>", "<DequeueCount>one</DequeueCount>"),
    emulator_answer(["eyJhIjogMX0="])[:-20],  # cut short on the wire
], ids=["empty", "not-xml", "no-messages", "no-receipt-handle", "bad-integer", "truncated"])
def test_rejects_what_the_sdk_rejects_with_the_same_error(damaged):
    with pytest.raises(MNSClientNetworkException) as sdk:
        BatchRecvMessageDecoder.decode(damaged, False, "req-1")
    with pytest.raises(MNSClientNetworkException) as ours:
        read_received_messages(damaged, "req-1")
    assert ours.value.type == sdk.value.type == "RespDataDamaged"
    assert ours.value.req_id == "req-1"


def test_an_empty_body_is_read_as_empty_text_where_the_sdk_fails_the_whole_batch():
    # MNS refuses empty bodies on send, so this is defence only: were one to arrive, the SDK
    # would fail its whole batch on every receive; ours hands it on to become a dead letter.
    xml_text = emulator_answer(["eyJhIjogMX0=", "", "eyJiIjogMn0="])
    with pytest.raises(MNSClientNetworkException):
        BatchRecvMessageDecoder.decode(xml_text, False, "req-1")  # one empty body, sixteen blocked
    assert [t[2] for t in our_read(xml_text)] == ["eyJhIjogMX0=", "", "eyJiIjogMn0="]


# --- the delete body ----------------------------------------------------------------

@pytest.mark.parametrize("handles", [
    [],
    ["1-MS2HRqLR5GrL8ZIHcTHsHNPN9/Q="],
    [f"{i}-MS2HRqLR5Gr+L8ZIH/cTHsH{i:04d}=" for i in range(16)],
], ids=["none", "one", "sixteen"])
def test_delete_body_is_byte_for_byte_the_sdk_encoders(handles):
    assert receipt_handles_xml(handles) == ReceiptHandlesEncoder.encode(handles)


def test_delete_body_escapes_what_xml_needs_escaped():
    odd = ["a&b", "<c>", 'q"uote', "中文"]
    root = ElementTree.fromstring(receipt_handles_xml(odd))
    assert root.tag == f"{{{XMLNS}}}ReceiptHandles"
    assert [e.text for e in root] == odd
    assert [e.text for e in ElementTree.fromstring(ReceiptHandlesEncoder.encode(odd))] == odd
    assert receipt_handles_xml(odd) == ReceiptHandlesEncoder.encode(odd)  # '>' and '"' escaped as minidom does


# --- the token cache every receive and delete asks -----------------------------------

class ShiftedClock:
    """The system clock moved forward by `ahead` seconds (tokens age without waiting)."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def now(self) -> datetime:
        return SYSTEM_CLOCK.now() + timedelta(seconds=self.ahead)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        pass


def test_token_cache_fetches_once_for_many_threads_and_again_near_expiry(emulator, drain_env):
    drain_env()
    clock = ShiftedClock()
    cache = TokenCache(drain_runtime().tokens.source, clock, refresh_buffer=120)
    got, start = [], threading.Barrier(24)

    def ask() -> None:
        start.wait()
        got.extend(cache.get("SmsReport", timeout=5) for _ in range(50))

    threads = [threading.Thread(target=ask) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 24 * 50 and len({id(t) for t in got}) == 1
    assert emulator.stats()["QueryTokenForMnsQueue"] == cache.fetches == 1
    # The emulator's tokens live an hour: 59 minutes on, inside the 2-minute buffer, a new one.
    clock.ahead = 59 * 60
    renewed = cache.get("SmsReport", timeout=5)
    assert renewed is not got[0] and cache.fetches == 2
    clock.ahead = 0  # (the emulator's own clock did not move: its new token is an hour long again)
    assert cache.get("SmsReport") is renewed and cache.fetches == 2
    cache.invalidate("SmsReport", renewed)
    assert cache.get("SmsReport") is not renewed and cache.fetches == 3
    assert emulator.stats()["QueryTokenForMnsQueue"] == 3


def test_a_refused_token_is_refused_once_word_for_word_and_asked_again_next_run(emulator, drain_env):
    drain_env()
    emulator.refuse_tokens("SmsUp", "Forbidden.NoPermission", "not subscribed to SmsUp")
    cache = TokenCache(drain_runtime().tokens.source, ShiftedClock())
    answers = []
    for _ in range(2):  # the second caller gets the same answer without a call
        with pytest.raises(TokenError) as refused:
            cache.get("SmsUp", timeout=5)
        answers.append(refused.value)
    for error in answers:
        assert (error.message_type, error.code, error.message) == ("SmsUp", "Forbidden.NoPermission",
                                                                   "not subscribed to SmsUp")
        assert (error.retryable, error.throttled) == (False, False)  # retrying cannot fix it: fail the type now
    assert str(answers[1]) == str(answers[0]) and cache.fetches == 1 and len(emulator.token_requests()) == 1
    cache.forget_refusals()  # a new run asks again
    with pytest.raises(TokenError):
        cache.get("SmsUp", timeout=5)
    assert cache.fetches == 2


@pytest.mark.parametrize("fault,retryable,throttled", [
    ({"server_error": 1.0}, True, False),
    ({"throttle": 1.0, "throttle_code": "Throttling.User"}, True, True),
], ids=["server-error", "throttled"])
def test_a_failing_token_api_says_whether_to_retry_and_is_asked_again(emulator, drain_env, fault, retryable, throttled):
    drain_env()
    emulator.set_faults(apis=["token"], **fault)
    cache = TokenCache(drain_runtime().tokens.source, ShiftedClock())
    for _ in range(2):  # not remembered as a refusal: every caller asks the API again
        with pytest.raises(TokenError) as failed:
            cache.get("SmsReport", timeout=5)
        assert (failed.value.retryable, failed.value.throttled) == (retryable, throttled)
    assert cache.fetches == 2 == emulator.stats().get("QueryTokenForMnsQueue")
    emulator.set_faults()
    assert cache.get("SmsReport", timeout=5).seconds_left(SYSTEM_CLOCK.now()) > 3000


def test_invalidating_a_token_the_cache_does_not_hold_changes_nothing(emulator, drain_env):
    drain_env()
    cache = TokenCache(drain_runtime().tokens.source, ShiftedClock())
    cache.invalidate("SmsUp")  # nothing cached yet: no error
    held = cache.get("SmsReport", timeout=5)
    cache.invalidate("SmsUp")
    cache.invalidate("SmsReport", token=cache.get("SmsUp", timeout=5))  # another type's token: kept
    assert cache.get("SmsReport", timeout=5) is held and cache.fetches == 2
