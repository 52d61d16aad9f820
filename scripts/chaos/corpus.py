"""The corpus a run enqueues: valid receipts of every type, the same facts twice, bad bodies,
and valid receipts whose business keys are at and beyond the table backends' key limits."""
from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field

from scripts.chaos.config import TYPES
from scripts.receipts import BAD_BODIES, b64json, make_receipts, phone
from shared.decode import decode_message
from shared.records import MnsMeta, Record

# Bodies beyond scripts/receipts.BAD_BODIES (type None: any queue), each of which broke a
# decoder or a sink once: see the fixes in shared/decode.py and shared/sinks/base.py.
EXTRA_BODIES = [
    # An SMS reply cut in the middle of an emoji: valid JSON with an unpaired surrogate escape.
    ("SmsUp", base64.b64encode(b'{"phone_number": "13800138000", "sequence_id": 7, '
                               b'"send_time": "2026-11-25 10:00:00", "content": "\\ud83d"}').decode()),
    (None, b64json({"biz_id": "x" * 300, "phone_number": "13900139000"})),  # key part too long
    (None, b64json(42)),
    (None, "e30"),  # "{}" without its base64 padding
    # Valid, but U+2028 inside a string (JSONL readers must not split there).
    ("SmsUp", b64json({"phone_number": "13700137000", "sequence_id": 99, "send_time": "2026-11-25 10:00:01",
                       "content": "line\u2028separator\u2029and\x85next"})),
]

# Key limits in UTF-8 bytes: Tablestore's string primary-key column, DynamoDB's partition key.
TABLESTORE_KEY_BYTES = 1024
DYNAMODB_KEY_BYTES = 2048
WIDE = "\U0001d11e"  # 4 bytes in UTF-8: a key part of 256 characters (the decoder's cap) is 1,024 bytes
HASH = "#"  # escaped to "%23" in a key: 3 bytes a character


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def long_key_receipts(rng: random.Random) -> list[tuple[str, dict, str]]:
    """(type, body, label) of valid receipts whose keys sit at, one byte over and far over each
    limit. Key parts keep within the decoder's 256 characters; UTF-8 and escaping make the bytes.
    SmsReport keys are `SmsReport#<biz_id>#<phone>`, VoiceCallReport keys
    `VoiceCallReport#<call_id>#<status_code>#<status_time>`; `build_corpus` checks each size."""
    time = "2026-11-25 10:00:00"
    out = []
    # SmsReport: 10 + biz_id + 1 + 11 bytes.
    for label, biz in (("at 1024", WIDE * 250 + _digits(rng, 2)), ("over 1024 by 1", WIDE * 250 + _digits(rng, 3)),
                       ("over 1024", WIDE * 256)):
        out.append(("SmsReport", {"phone_number": phone(rng), "success": True, "biz_id": biz, "out_id": "long-key",
                                  "send_time": time, "report_time": time, "err_code": "DELIVERED", "err_msg": "",
                                  "sms_size": "1"}, label))
    # VoiceCallReport: 16 + call_id + 1 + status_code + 1 + status_time bytes.
    call = WIDE * 250 + _digits(rng, 6)
    for label, status, when in (("far over 1024", HASH * 256, time),
                                ("at 2048", WIDE * 250 + _digits(rng, 5), time),
                                ("over 2048 by 1", WIDE * 250 + _digits(rng, 6), time),
                                ("over 2048", WIDE * 256, time),
                                ("far over 2048", WIDE * 256, WIDE * 256)):
        out.append(("VoiceCallReport", {"call_id": call, "status_code": status, "smart_status_code": "",
                                        "status_time": when, "out_id": "long-key"}, label))
    return out


@dataclass
class Corpus:
    items: list[tuple[str, str]]                      # (message type, body) in enqueue order
    message_ids: list[str] = field(default_factory=list)
    phones: set[str] = field(default_factory=set)
    long_keys: dict[str, str] = field(default_factory=dict)  # business key -> label ("at 2048", ...)

    def expected(self) -> tuple[dict[str, dict], set[str], dict[str, set[str]]]:
        """Record key -> body, the dead-letter keys, and key -> the message ids that carry it."""
        keys: dict[str, dict] = {}
        dead: set[str] = set()
        carriers: dict[str, set[str]] = {}
        for (mtype, body), mid in zip(self.items, self.message_ids):
            decoded = decode_message(mtype, body, MnsMeta(message_id=mid))
            if isinstance(decoded, Record):
                keys[decoded.key] = decoded.body
            else:
                dead.add(decoded.key)
            carriers.setdefault(decoded.key, set()).add(mid)
        return keys, dead, carriers


def fits_label(size: int, label: str) -> bool:
    """Whether a key of `size` bytes is what its label says ("at N", "over N by 1", "over N", "far over N")."""
    limit = int(label.rsplit(" ", 1)[-1]) if not label.endswith("by 1") else int(label.split()[1])
    if label.startswith("at "):
        return size == limit
    if label.endswith("by 1"):
        return size == limit + 1
    return size >= 1.5 * limit if label.startswith("far ") else size > limit


def build_corpus(rng: random.Random, messages: int) -> Corpus:
    per = max(1, messages // len(TYPES))
    items: list[tuple[str, str]] = []
    phones: set[str] = set()
    for mtype in TYPES:
        bodies = make_receipts(mtype, per, seed=rng.randrange(10 ** 9))
        for body in bodies:
            phones.update(str(body[k]) for k in ("phone_number", "callee") if k in body)
            items.append((mtype, b64json(body)))
        for body in rng.sample(bodies, max(1, per // 20)):  # the same fact delivered twice
            items.append((mtype, b64json(body)))
    for mtype, raw in [(None, b) for b in BAD_BODIES] + EXTRA_BODIES:
        items.append((mtype or rng.choice(TYPES), raw))
    phones.update({"13800138000", "13900139000", "13700137000"})
    long_keys = {}
    longs = long_key_receipts(rng)
    for mtype, body, label in longs + [longs[2], longs[-1]]:  # the longest of each type delivered twice
        decoded = decode_message(mtype, b64json(body))
        if not isinstance(decoded, Record):
            raise AssertionError(f"long-key receipt {label} does not decode: {decoded.error}")
        if not fits_label(len(decoded.key.encode("utf-8")), label):
            raise AssertionError(f"long-key receipt {label} has a key of {len(decoded.key.encode())} bytes")
        long_keys[decoded.key] = label
        phones.update(str(body[k]) for k in ("phone_number",) if k in body)
        items.append((mtype, b64json(body)))
    rng.shuffle(items)
    return Corpus(items, phones=phones, long_keys=long_keys)
