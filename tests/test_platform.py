import json
from types import SimpleNamespace

import pytest

from shared.events import DrainEvent, parse_event
from shared.platform import EventError, adapt


class LambdaContext:
    aws_request_id = "aws-req-1"
    function_name = "DrainFunction"

    def get_remaining_time_in_millis(self):
        return 42_000


def fc_context(timeout=60):
    return SimpleNamespace(request_id="fc-req-1", function=SimpleNamespace(name="alicom-drain", timeout=timeout),
                           credentials=None)


def test_fc_timer_event_bytes_with_payload():
    event = json.dumps({"triggerTime": "2026-11-25T05:49:00Z", "triggerName": "every-minute",
                        "payload": json.dumps({"max_messages": 5})}).encode()
    inv = adapt(event, fc_context(timeout=30))
    assert (inv.platform, inv.trigger, inv.request_id) == ("fc", "timer", "fc-req-1")
    assert inv.options == {"max_messages": 5}
    assert 29 < inv.deadline.remaining() <= 30


def test_fc_timer_with_empty_payload_and_manual_invoke():
    timer = adapt(b'{"triggerTime":"2026-11-25T05:49:00Z","triggerName":"t","payload":""}', fc_context())
    assert timer.trigger == "timer" and timer.options == {}
    manual = adapt(b'{"message_types":["SmsUp"]}', fc_context())
    assert manual.trigger == "manual" and manual.options == {"message_types": ["SmsUp"]}


def test_lambda_dict_event_and_remaining_time():
    inv = adapt({"max_messages": 10}, LambdaContext())
    assert (inv.platform, inv.request_id, inv.options) == ("lambda", "aws-req-1", {"max_messages": 10})
    assert 41 < inv.deadline.remaining() <= 42
    scheduled = adapt({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}, LambdaContext())
    assert scheduled.trigger == "timer" and scheduled.options == {}
    marked = adapt({"_trigger": "schedule", "max_messages": 3}, LambdaContext())
    assert marked.trigger == "timer" and marked.options == {"max_messages": 3}


@pytest.mark.parametrize("event,field", [
    (b"not json", "not valid JSON"),
    (b"[1,2]", "JSON object"),
    (b"\xff", "UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested more than 16 levels deep"),
    (b'{"a":' * 17 + b"1" + b"}" * 17, "nested more than 16 levels deep"),
    (b'{"phones": "' + b"1" * (6 * 1024 * 1024) + b'"}', "6,291,470 bytes; at most 6,291,456"),
])
def test_malformed_fc_events_are_rejected_clearly(event, field):
    invocation = adapt(event, fc_context())  # the platform's part is read; the event's error waits
    assert invocation.platform == "fc" and invocation.deadline.remaining() > 0
    with pytest.raises(EventError) as err:
        invocation.options
    assert field in str(err.value) and str(err.value).startswith("invalid event: ")


def test_a_deep_event_the_platform_parsed_is_rejected_without_recursion():
    deep: dict = {}
    node = deep
    for _ in range(100_000):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(EventError, match="nested more than 16 levels deep"):
        adapt(deep, LambdaContext()).options
    sixteen: dict = {"x": 1}
    for _ in range(15):
        sixteen = {"a": sixteen}
    assert adapt(sixteen, LambdaContext()).options == sixteen  # at the limit: accepted


@pytest.mark.parametrize("options,field", [
    ({"message_type": ["SmsUp"]}, "message_type: unknown field"),
    ({"max_messages": "ten"}, "max_messages"),
    ({"max_messages": 0}, "max_messages"),
    ({"message_types": []}, "message_types"),
    ({"message_types": ["Sms"]}, "message_types"),
    ({"wait_seconds": 60}, "wait_seconds"),
    ({"message_types": ["SmsUp", "SmsReport", "SmsUp"]}, "message_types: SmsUp listed more than once"),
])
def test_bad_manual_event_fields_are_named(options, field):
    with pytest.raises(EventError) as err:
        parse_event(DrainEvent, options)
    assert field in str(err.value)
