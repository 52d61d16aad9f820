"""docs/ARCHITECTURE.md's "Add a message type" recipe: one entry in shared/message_types.py's
table, and settings, the drain event and the decoder all know the type; the AWS template's
allowed values follow the table."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from samtranslator.yaml_helper import yaml_parse

from scripts.receipts import b64json
from shared.decode import decode_message
from shared.events import DrainEvent, parse_event
from shared.message_types import MESSAGE_TYPES
from shared.platform import EventError
from shared.records import DeadLetter, MnsMeta, Record
from shared.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def toy_type(monkeypatch):
    """The recipe's one step: a table entry (key fields, event-time fields)."""
    monkeypatch.setitem(MESSAGE_TYPES, "ToyReport", (("toy_id", "seq"), ("toy_time",)))


def test_a_type_added_to_the_table_decodes_with_its_key_and_event_time(toy_type):
    body = b64json({"toy_id": "t#1", "seq": 7, "toy_time": "2026-11-25 10:00:05", "other": "x"})
    record = decode_message("ToyReport", body, MnsMeta(message_id="m1", enqueue_time=1_764_036_000_000))
    assert isinstance(record, Record)
    assert record.key == "ToyReport#t%231#7"
    assert record.event_time == "2026-11-25 10:00:05"
    missing = decode_message("ToyReport", b64json({"toy_id": "t1"}), MnsMeta(message_id="m2"))
    assert isinstance(missing, DeadLetter) and missing.error == "missing key field seq"


def test_a_type_added_to_the_table_is_accepted_by_settings_and_the_drain_event(toy_type):
    settings = load_settings({"ALICOM_UID": "123", "ALICOM_MESSAGE_TYPES": "SmsReport,ToyReport",
                              "SINK": "file", "SINK_PATH": "/tmp/x"})
    assert settings.message_types == ("SmsReport", "ToyReport")
    assert settings.queue_names["ToyReport"] == "Alicom-Queue-123-ToyReport"
    assert parse_event(DrainEvent, {"message_types": ["ToyReport"]}).message_types == ("ToyReport",)


def test_a_type_not_in_the_table_is_refused():
    with pytest.raises(SettingsError, match="ALICOM_MESSAGE_TYPES: unknown message type"):
        load_settings({"ALICOM_UID": "123", "ALICOM_MESSAGE_TYPES": "ToyReport", "SINK": "file", "SINK_PATH": "/x"})
    with pytest.raises(EventError, match="message_types: unknown message type"):
        parse_event(DrainEvent, {"message_types": ["ToyReport"]})


def test_the_aws_templates_allowed_message_types_are_the_tables():
    parameter = yaml_parse((REPO / "template.yml").read_text())["Parameters"]["AlicomMessageTypes"]
    first = re.match(r"\^\(([^)]*)\)", parameter["AllowedPattern"])
    assert first, parameter["AllowedPattern"]
    assert first.group(1).split("|") == ["SmsReport", "SmsUp", "GlobeSmsReport", "VoiceReport", "VoiceCallReport",
                                         "VoiceRecordReport", "FlowReport"]
    assert first.group(1).split("|") == list(MESSAGE_TYPES)
