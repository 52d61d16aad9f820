"""The message types Alicom publishes, in one table: adding a type is one entry here.

Settings (ALICOM_MESSAGE_TYPES, ALICOM_QUEUE_NAMES), the drain event's `message_types` and the
decoder (shared/decode.py) all read it. No imports: settings load it at every cold start.
"""
from __future__ import annotations

from typing import Optional

# type -> (key fields, event-time fields)
#   key fields: together they name the fact a message reports (docs/ARCHITECTURE.md, invariant 2),
#     so a redelivered receipt gets the same key. None: the format is unpublished, and a hash of
#     the body is the key. VoiceReport / VoiceRecordReport report one call once each, so call_id
#     and the type (the key's first part) suffice; VoiceCallReport reports every state change.
#   event-time fields: where the time of the reported event is, most specific first (the
#     vendor's clock, Beijing time); none found: the time MNS enqueued the message.
MESSAGE_TYPES: dict[str, tuple[Optional[tuple[str, ...]], tuple[str, ...]]] = {
    "SmsReport": (("biz_id", "phone_number"), ("report_time", "send_time")),
    "SmsUp": (("phone_number", "sequence_id", "send_time"), ("send_time",)),
    "GlobeSmsReport": (("MessageId",), ("ReceiveDate", "SendDate")),
    "VoiceReport": (("call_id",), ("end_time", "start_time", "originate_time")),
    "VoiceCallReport": (("call_id", "status_code", "status_time"), ("status_time",)),
    "VoiceRecordReport": (("call_id",), ("end_time", "start_time", "record_begin_time", "originate_time")),
    "FlowReport": (None, ()),  # format unpublished: drained and stored with a body-hash key
}

KNOWN_MESSAGE_TYPES = tuple(MESSAGE_TYPES)
KEY_FIELDS = {name: keys for name, (keys, _) in MESSAGE_TYPES.items() if keys is not None}
EVENT_TIME_FIELDS = {name: times for name, (_, times) in MESSAGE_TYPES.items() if times}
