"""MNS message body -> `Record`, or -> `DeadLetter` when it cannot be one.

Alicom puts base64 of one UTF-8 JSON object in each message body. Decoding never
raises: whatever arrives becomes either a record or a dead letter (invariant 4).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Union

from shared.message_types import EVENT_TIME_FIELDS, KEY_FIELDS, MESSAGE_TYPES
from shared.records import DeadLetter, MnsMeta, Record, canonical_json

# Beijing time (Asia/Shanghai) has been UTC+8 all year since 1991: a fixed offset is exact for
# every time Alicom or this package writes, and spares each cold start the zone database.
SHANGHAI = timezone(timedelta(hours=8), "CST")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# Key fields (naming the fact a message reports: docs/ARCHITECTURE.md, invariant 2) and
# event-time fields come from the one table of message types, read at each call (a dict
# lookup), so the table is the only place to add a type. KEY_FIELDS and EVENT_TIME_FIELDS
# are its two columns, for readers.
_UNPUBLISHED: tuple[None, tuple[str, ...]] = (None, ())
__all__ = ["KEY_FIELDS", "EVENT_TIME_FIELDS", "decode_message", "business_key", "event_time", "parse_body",
           "format_time", "shanghai_time", "DecodeError", "Decoded", "SHANGHAI", "TIME_FORMAT"]

MAX_KEY_PART = 256


def format_time(moment: datetime) -> str:
    """`YYYY-MM-DD HH:MM:SS` with a 4-digit year on every platform (strftime's %Y is not
    zero-padded below 1000 on some C libraries, e.g. Python 3.10 on glibc)."""
    return f"{moment.year:04d}-{moment:%m-%d %H:%M:%S}"


class DecodeError(ValueError):
    """Why a body is not a record; becomes the dead letter's error."""


Decoded = Union[Record, DeadLetter]


def shanghai_time(epoch_ms: int) -> str:
    """Epoch milliseconds as the vendor's clock shows it."""
    try:
        return format_time(datetime.fromtimestamp(epoch_ms / 1000, timezone.utc).astimezone(SHANGHAI))
    except (OverflowError, OSError, ValueError):
        return "1970-01-01 08:00:00"


def decode_message(message_type: str, raw_body: Any, mns: MnsMeta = MnsMeta()) -> Decoded:
    """Turn one MNS message body into a record or a dead letter. Never raises."""
    text = _str_as_text(raw_body) if isinstance(raw_body, str) else _bytes_as_text(raw_body)
    try:
        payload = parse_body(text)
        return to_record(message_type, payload, mns)
    except DecodeError as exc:
        error = str(exc)
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:  # pathological JSON
        error = f"undecodable body: {type(exc).__name__}"
    return DeadLetter(message_type=message_type, raw_body=text, error=error,
                      event_time=shanghai_time(mns.enqueue_time), mns=mns)


def _str_as_text(raw: str) -> str:
    """`raw` itself, unless it holds lone surrogates (bytes read with surrogateescape).

    No sink can encode those, so such a body would fail every write and block its queue;
    keep its bytes instead, the way `_bytes_as_text` keeps bytes that are not UTF-8.
    """
    if raw.isascii():  # the usual case (base64 text): nothing to check
        return raw
    try:
        raw.encode("utf-8")
        return raw
    except UnicodeEncodeError:
        try:
            data = raw.encode("utf-8", "surrogateescape")  # the bytes that arrived
        except UnicodeEncodeError:
            data = raw.encode("utf-8", "surrogatepass")
        return _bytes_as_text(data)


def _bytes_as_text(raw: Any) -> str:
    if isinstance(raw, (bytes, bytearray)):
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            # Keep every byte: a dead letter must hold exactly what arrived.
            return "base64:" + base64.b64encode(bytes(raw)).decode("ascii")
    return str(raw)


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"body JSON has a non-standard number {name}")


_JSON = json.JSONDecoder(parse_constant=_reject_constant)  # one decoder: json.loads(**kw) builds one per call


def parse_body(text: str) -> dict[str, Any]:
    """base64 -> UTF-8 -> JSON object."""
    try:
        raw = base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise DecodeError("body is not base64") from None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("body is base64 but not UTF-8 text") from None
    try:
        payload = _JSON.decode(decoded)
    except DecodeError:
        raise
    except json.JSONDecodeError as exc:
        raise DecodeError(f"body is not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(payload, dict):
        raise DecodeError(f"body JSON is a {type(payload).__name__}, not an object")
    if _SURROGATE_ESCAPE.search(decoded) and not _is_unicode(payload):
        # e.g. an SMS reply cut in the middle of an emoji ("\\ud83d"): valid JSON, but text no
        # sink can encode; stored as a record it would fail every write and block the queue.
        raise DecodeError("body JSON holds an unpaired surrogate escape (text that is not valid Unicode)")
    return payload


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _is_unicode(payload: Any) -> bool:
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _key_part(payload: dict[str, Any], field: str) -> str:
    value = payload.get(field)
    if value is None or value == "":
        raise DecodeError(f"missing key field {field}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DecodeError(f"key field {field} is a {type(value).__name__}, expected a string or number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DecodeError(f"key field {field} is not a finite number")
        # sequence_id arrives as a JSON number (the vendor documents a Double): 123456.0 == 123456.
        value = int(value) if value.is_integer() else repr(value)
    text = str(value).strip()
    if not text or len(text) > MAX_KEY_PART:
        raise DecodeError(f"key field {field} is empty or longer than {MAX_KEY_PART} characters")
    # '#' separates key parts; escape it (and the escape) so two parts never run together.
    return text.replace("%", "%25").replace("#", "%23")


def business_key(message_type: str, payload: dict[str, Any]) -> str:
    fields = MESSAGE_TYPES.get(message_type, _UNPUBLISHED)[0]
    if fields is None:
        # Unknown or unpublished format: the body itself is the identity of the fact.
        digest = hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()[:32]
        return f"{message_type}#sha256:{digest}"
    return "#".join([message_type] + [_key_part(payload, f) for f in fields])


# ASCII digits only: a str pattern's \d matches any Unicode digit, and a time written in, say,
# Arabic-Indic digits must not reach partition names as it came (strptime then refuses it).
_CANONICAL_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})", re.ASCII)


def _normalise_time(value: str) -> str:
    """`yyyy-MM-dd HH:mm:ss` (checked to be a real time), else ValueError.

    The vendor's canonical form is checked with a regex and integer fields (strptime was a
    tenth of the drain's CPU); anything else goes through strptime as before."""
    text = value.strip()[:19]
    match = _CANONICAL_TIME.fullmatch(text)
    if match:
        year, month, day, hour, minute, second = map(int, match.groups())
        datetime(year, month, day, hour, minute, second)  # rejects 2017-13-45 25:61:00
        return text
    return format_time(datetime.strptime(text, TIME_FORMAT))


def event_time(message_type: str, payload: dict[str, Any], mns: MnsMeta) -> str:
    """The reported event's Beijing time, normalised; the enqueue time when absent or unparseable."""
    for field in MESSAGE_TYPES.get(message_type, _UNPUBLISHED)[1]:
        value = payload.get(field)
        if isinstance(value, str):
            try:
                return _normalise_time(value)
            except ValueError:
                continue
    return shanghai_time(mns.enqueue_time)


def to_record(message_type: str, payload: dict[str, Any], mns: MnsMeta) -> Record:
    return Record(
        message_type=message_type,
        key=business_key(message_type, payload),
        body=payload,
        event_time=event_time(message_type, payload, mns),
        mns=mns,
    )
