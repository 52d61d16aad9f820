"""QuerySendDetails client: paging, codes, Beijing dates, rate limit, retries — SDK over a real socket to the emulator."""
from __future__ import annotations

import threading
import time
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from shared.clock import Deadline
from shared.send_records import (DeadlineReached, PhoneError, SendDateError, SendDetailsError, SendRecordClient,
                                 TokenBucket, beijing_today, check_send_date, normalize_phone)
from shared.tokens import Credentials
from tests.conftest import AK, SECRET

PHONE, OTHER = "13800000001", "13900000002"


def day_ago(n: int = 0) -> date:
    return (datetime.now(ZoneInfo("Asia/Shanghai")) - timedelta(days=n)).date()


def seed(emu, phone: str, day: date, n: int, biz: str = "biz") -> None:
    for i in range(n):
        emu.add_send_record(phone, day.strftime("%Y%m%d"), f"{biz}-{i}", status=3 if i % 5 else 2,
                            err_code="DELIVERED" if i % 5 else "MK:0001", content=f"message {i}",
                            send_time=f"{day.isoformat()} 09:{i // 60:02d}:{i % 60:02d}", out_id=f"o{i}")


def client(emu, **kw) -> SendRecordClient:
    kw.setdefault("backoff", 0.02)
    kw.setdefault("backoff_max", 0.2)
    kw.setdefault("margin", 0.2)
    return SendRecordClient(Credentials(AK, SECRET), emu.url, **kw)


def calls(emu) -> int:
    return emu.stats()["QuerySendDetails"]


class FakeClock:
    def __init__(self, now: datetime):
        self._now = now
        self.t = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


@pytest.mark.parametrize("rows, pages", [(0, 1), (49, 1), (50, 1), (100, 2), (120, 3), (151, 4)])
def test_pages_until_total_or_short_page(emulator, rows, pages):
    day = day_ago(1)
    seed(emulator, PHONE, day, rows)
    seed(emulator, OTHER, day, 7)  # another number's rows never leak in
    result = client(emulator).query(PHONE, day)
    assert (result.total, len(result.rows), result.pages) == (rows, rows, pages)
    assert calls(emulator) == pages
    assert len({r.send_time for r in result.rows}) == rows
    assert all(r.phone == PHONE for r in result.rows)


def test_biz_id_narrows_to_one_send(emulator):
    day = day_ago(2)
    seed(emulator, PHONE, day, 60)
    result = client(emulator).query(PHONE, day.strftime("%Y%m%d"), biz_id="biz-7")
    assert [(r.content, r.out_id, r.status) for r in result.rows] == [("message 7", "o7", 3)]


def test_send_date_checked_by_beijing_calendar_before_any_call(emulator):
    c = client(emulator)
    for bad in (day_ago(31), day_ago(-1), "2026-02-30", "yesterday"):
        with pytest.raises(SendDateError):
            c.query(PHONE, bad)
    assert calls(emulator) == 0
    c.query(PHONE, day_ago(30))  # the oldest day the API answers for
    assert calls(emulator) == 1


def test_beijing_today_is_not_the_host_date():
    # 17:30 UTC on the 24th is 01:30 on the 25th in Beijing: the 25th is today, not the future.
    clock = FakeClock(datetime(2026, 11, 24, 17, 30, tzinfo=timezone.utc))
    today = beijing_today(clock)
    assert today == date(2026, 11, 25)
    check_send_date(date(2026, 11, 25), today)
    check_send_date(date(2026, 10, 26), today)
    with pytest.raises(SendDateError):
        check_send_date(date(2026, 10, 25), today)
    # 15:59 UTC is still the same Beijing day
    assert beijing_today(FakeClock(datetime(2026, 11, 24, 15, 59, tzinfo=timezone.utc))) == date(2026, 11, 24)


def test_non_ok_code_fails_the_query_with_its_code_after_bounded_tries(emulator):
    emulator.set_send_details_error("isv.BUSINESS_LIMIT_CONTROL", phones=[PHONE])
    c = client(emulator, max_attempts=3)
    with pytest.raises(SendDetailsError) as exc:
        c.query(PHONE, day_ago(1))
    assert exc.value.code == "isv.BUSINESS_LIMIT_CONTROL" and exc.value.attempts == 3
    assert calls(emulator) == 3
    emulator.set_send_details_error("isv.MOBILE_NUMBER_ILLEGAL", phones=[OTHER])
    with pytest.raises(SendDetailsError) as exc:
        c.query(OTHER, day_ago(1))
    assert exc.value.code == "isv.MOBILE_NUMBER_ILLEGAL" and exc.value.attempts == 1  # not a throttle: no retry


def clear_after(emulator, n_calls: int, clear) -> threading.Thread:
    def watch():
        end = time.monotonic() + 10
        while calls(emulator) < n_calls and time.monotonic() < end:
            time.sleep(0.002)
        clear()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("kind", ["http429", "code", "dropped"])
def test_throttling_that_clears_is_retried(emulator, kind):
    day = day_ago(1)
    seed(emulator, PHONE, day, 3)
    if kind == "http429":
        emulator.set_faults(throttle=1.0, apis=["sms"])
        clear = emulator.set_faults
    elif kind == "code":
        emulator.set_send_details_error("isv.BUSINESS_LIMIT_CONTROL")
        clear = lambda: emulator.set_send_details_error(None)  # noqa: E731
    else:
        emulator.set_faults(drop=1.0, apis=["sms"])
        clear = emulator.set_faults
    watcher = clear_after(emulator, 2, clear)
    c = client(emulator, max_attempts=8, backoff=0.1, backoff_max=0.4)
    result = c.query(PHONE, day)
    watcher.join()
    assert len(result.rows) == 3
    assert c.retries >= 2 and result.calls == c.retries + 1 == calls(emulator)


def test_deadline_bounds_retries_and_calls(emulator):
    emulator.set_send_details_error("isv.BUSINESS_LIMIT_CONTROL")
    c = client(emulator, max_attempts=20, backoff=0.2, backoff_max=1.0, margin=0.2)
    started = time.monotonic()
    with pytest.raises(DeadlineReached):
        c.query(PHONE, day_ago(1), deadline=Deadline(1.5))
    assert time.monotonic() - started < 1.5
    before = calls(emulator)
    with pytest.raises(DeadlineReached):
        c.query(PHONE, day_ago(1), deadline=Deadline(0.1))  # no room for even one call
    assert calls(emulator) == before


def test_token_bucket_paces_threads():
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    bucket = TokenBucket(20, burst=10, clock=clock)
    for _ in range(30):
        assert bucket.acquire()
    assert clock.t == pytest.approx(1.0)  # 10 from the burst, 20 more at 20/s
    assert not bucket.acquire(max_wait=0.01)  # would have to wait 50 ms
    assert bucket.acquire(max_wait=0.06)

    real = TokenBucket(50, burst=5)
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: [real.acquire() for _ in range(10)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started >= (40 - 5) / 50 * 0.95  # never faster than the rate


def test_rate_limit_applies_to_api_calls(emulator):
    day = day_ago(1)
    c = client(emulator, qps=25)
    c.limiter.capacity = c.limiter._tokens = 1.0
    started = time.monotonic()
    for i in range(11):
        c.query(f"1380000{i:04d}", day)
    assert time.monotonic() - started >= 10 / 25 * 0.95
    assert calls(emulator) == 11


@pytest.mark.parametrize("given, stored", [
    ("13800000000", "13800000000"), ("+8613800000000", "13800000000"), ("008613800000000", "13800000000"),
    ("+85212345678", "85212345678"), ("0085212345678", "85212345678"), ("+12025550123", "12025550123"),
])
def test_phone_forms(given, stored):
    assert normalize_phone(given) == stored


@pytest.mark.parametrize("bad", ["1380000000", "23800000000", "138000000001", "+123456", "+0123456789",
                                 "138-0000-0000", "", "00", 13800000000])
def test_malformed_phones(bad):
    with pytest.raises(PhoneError) as exc:
        normalize_phone(bad)
    assert "13800000000" not in str(exc.value)  # messages never carry a full number
