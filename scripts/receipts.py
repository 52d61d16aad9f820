"""Realistic Alicom receipt bodies for the demo, tests and benchmarks (formats from the vendor docs)."""
from __future__ import annotations

import base64
import json
import random
from datetime import datetime, timedelta
from typing import Any


def b64json(payload: Any) -> str:
    return base64.b64encode(json.dumps(payload, ensure_ascii=False).encode("utf-8")).decode("ascii")


def phone(rng: random.Random) -> str:
    return "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))


def sms_report(rng: random.Random, i: int, when: datetime) -> dict[str, Any]:
    ok = rng.random() < 0.9
    return {
        "phone_number": phone(rng),
        "success": ok,
        "biz_id": f"{rng.randrange(10**11, 10**12)}^{i}",
        "out_id": f"order-{i}",
        "send_time": when.strftime("%Y-%m-%d %H:%M:%S"),
        "report_time": (when + timedelta(seconds=rng.randint(1, 30))).strftime("%Y-%m-%d %H:%M:%S"),
        "err_code": "DELIVERED" if ok else rng.choice(["MK:0001", "IC:0015", "UNKNOWN"]),
        "err_msg": "用户接收成功" if ok else "失败",
        "sms_size": str(rng.randint(1, 3)),
    }


def sms_up(rng: random.Random, i: int, when: datetime) -> dict[str, Any]:
    return {
        "phone_number": phone(rng),
        "content": rng.choice(["TD", "好的，谢谢", "1", "STOP"]),
        "sign_name": "【阿里云】",
        "send_time": when.strftime("%Y-%m-%d %H:%M:%S"),
        "dest_code": "1234",
        "sequence_id": 100000 + i,
    }


def voice_report(rng: random.Random, i: int, when: datetime) -> dict[str, Any]:
    return {
        "call_id": f"{rng.randrange(10**9, 10**10)}^{i}",
        "start_time": when.strftime("%Y-%m-%d %H:%M:%S"),
        "end_time": (when + timedelta(seconds=35)).strftime("%Y-%m-%d %H:%M:%S"),
        "duration": 35,
        "status_code": "200000",
        "status_msg": "用户听完自动挂断",
        "out_id": f"call-{i}",
        "caller": "057188773344",
        "callee": phone(rng),
        "hangup_direction": 2,
        "voice_type": "voice",
    }


def voice_call_report(rng: random.Random, i: int, when: datetime) -> dict[str, Any]:
    return {
        "call_id": f"{rng.randrange(10**9, 10**10)}^{i}",
        "status_code": rng.choice(["200100", "200101", "200102"]),
        "smart_status_code": "",
        "status_time": when.strftime("%Y-%m-%d %H:%M:%S"),
        "out_id": f"call-{i}",
    }


BUILDERS = {
    "SmsReport": sms_report,
    "SmsUp": sms_up,
    "VoiceReport": voice_report,
    "VoiceCallReport": voice_call_report,
}

BAD_BODIES = [
    "this is not base64!!",
    base64.b64encode(b"\xff\xfe\xfd not utf-8").decode(),
    base64.b64encode(b"{not json").decode(),
    b64json(["a", "list"]),
    b64json({"phone_number": "13800138000"}),  # SmsReport without biz_id
]


def make_receipts(message_type: str, n: int, seed: int = 0,
                  start: datetime = datetime(2026, 11, 25, 10, 0, 0)) -> list[dict]:
    rng = random.Random(f"{seed}-{message_type}")
    build = BUILDERS[message_type]
    return [build(rng, i, start + timedelta(seconds=i)) for i in range(n)]
