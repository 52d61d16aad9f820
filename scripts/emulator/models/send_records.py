"""The send records Dysmsapi QuerySendDetails pages through."""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class SendRecord:
    phone: str
    send_date: str           # yyyyMMdd (Asia/Shanghai)
    biz_id: str
    status: int              # 1 waiting for receipt, 2 failed, 3 delivered
    err_code: str
    template_code: str
    content: str
    send_time: str           # yyyy-MM-dd HH:mm:ss
    receive_time: str
    out_id: str


@dataclass(frozen=True)
class SendDetailsRefusal:
    code: str
    message: str
    phones: frozenset | None = None     # None: every phone number


class SendRecordStore:
    def __init__(self):
        self._lock = threading.Lock()
        self._records: list[SendRecord] = []
        self.refusal: SendDetailsRefusal | None = None

    def add(self, phone: str, send_date: str, biz_id: str, status: int, err_code: str = "DELIVERED",
            template_code: str = "SMS_1", content: str = "test message", send_time: str | None = None,
            receive_time: str | None = None, out_id: str = "") -> SendRecord:
        if not re.fullmatch(r"\d{8}", send_date):
            raise ValueError("send_date is yyyyMMdd")
        if status not in (1, 2, 3):
            raise ValueError("status is 1 (waiting), 2 (failed) or 3 (delivered)")
        if send_time is None:
            send_time = f"{send_date[:4]}-{send_date[4:6]}-{send_date[6:]} 12:00:00"
        if receive_time is None:
            receive_time = send_time if status in (2, 3) else ""
        rec = SendRecord(str(phone), send_date, str(biz_id), int(status), err_code, template_code,
                         content, send_time, receive_time, out_id)
        with self._lock:
            self._records.append(rec)
        return rec

    def query(self, phone: str, send_date: str, biz_id: str | None, page_size: int,
              page: int) -> tuple[int, list[SendRecord]]:
        with self._lock:
            rows = [r for r in self._records if r.phone == phone and r.send_date == send_date
                    and (not biz_id or r.biz_id == biz_id)]
        rows.sort(key=lambda r: r.send_time)   # stable: insertion order within a second
        start = (page - 1) * page_size
        return len(rows), rows[start:start + page_size]

