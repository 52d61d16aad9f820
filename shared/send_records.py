"""Send records from Dysmsapi `QuerySendDetails`: one phone number, one day, every page.

What reconcile needs from the API, and nothing of the platform:

- `SendDate` is checked against the last 30 days by the **Beijing** calendar (and must not
  lie in the future) before any call: a UTC host just after midnight Beijing time is
  still on yesterday.
- Every page is 50 rows; pages are read from 1 until `TotalCount` rows were collected or
  a page comes back short. `Code` is checked on every response: a non-OK code fails
  that query (that target only) with `SendDetailsError` carrying the code.
- A client-side token bucket keeps calls under `RECONCILE_QPS` across threads.
- Throttling (`isv.BUSINESS_LIMIT_CONTROL`, `Throttling*`, HTTP 429), 5xx answers and
  network errors are retried with exponential backoff and jitter (shared/retry.py), bounded
  in attempts and by the deadline: a query that cannot finish in time raises
  `DeadlineReached`, so the caller reports its target as unreached instead of failed.
  The SDK's own retries are switched off: one retry policy, one place that sees the deadline.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Optional

from shared.clock import SYSTEM_CLOCK, Clock, Deadline
from shared.decode import SHANGHAI
from shared.pop import Credentials, ThreadClients, call_rpc, is_retryable, point_request
from shared.retry import ExponentialBackoff, OutOfTime, retry_call

ACTION = "QuerySendDetails"
PAGE_SIZE = 50
QUERY_WINDOW_DAYS = 30
MAX_PAGES = 2000  # 100,000 rows for one phone and day: far beyond any real sender

# Dysmsapi's own "slow down" (per-number flow control), beside the POP-wide ones in shared/pop.py.
BUSINESS_LIMIT_CODE = "isv.BUSINESS_LIMIT_CONTROL"

# QuerySendDetails' SendStatus values: 1 waiting for a receipt, 2 failed, 3 delivered.
STATUS_WAITING, STATUS_FAILED, STATUS_DELIVERED = 1, 2, 3


class SendDateError(ValueError):
    """SendDate is outside what QuerySendDetails answers for; no call was made."""


class DeadlineReached(Exception):
    """The query could not be (completely) made before the deadline; try again in a later run."""


class SendDetailsError(Exception):
    """QuerySendDetails answered with a non-OK Code (or failed); carries the code, never a credential."""

    def __init__(self, code: str, message: str, status: int = 0, attempts: int = 1):
        super().__init__(f"{ACTION} failed: {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.attempts = attempts

    @property
    def retryable(self) -> bool:
        return self.code == BUSINESS_LIMIT_CODE or is_retryable(self.code, self.status)

    @property
    def about_the_target(self) -> bool:
        """The API refused this query's own parameters (isv.*: the number, the date...): the same
        query will be refused again, whatever the time; other queries are not affected."""
        return self.code.startswith("isv.") and not self.retryable


# Phone numbers as QuerySendDetails takes them (PhoneNumber) and receipts carry them
# (phone_number): mainland mobiles as 11 digits, other numbers as country code + number.
_MAINLAND = re.compile(r"1[3-9]\d{9}")
_INTERNATIONAL = re.compile(r"(?:\+|00)([1-9]\d{6,14})")
PHONE_FORMS = ("a mainland China mobile number of 11 digits (1[3-9] and 9 more digits, +86 or 0086 prefix "
               "allowed), or an international number written with + or 00 and 7 to 15 digits (e.g. +85212345678)")


class PhoneError(ValueError):
    """Not a phone number in a form we accept (PHONE_FORMS)."""


def normalize_phone(value: Any) -> str:
    """The API's form of a phone number: `13800000000`, or country code + number (`85212345678`).

    `+8613800000000` and `008613800000000` become the 11-digit mainland form, because that is
    how receipts carry mainland numbers (and so how their business keys are built).
    """
    if not isinstance(value, str):
        raise PhoneError(f"a phone number must be a string, not {type(value).__name__}")
    text = value.strip()
    if _MAINLAND.fullmatch(text):
        return text
    international = _INTERNATIONAL.fullmatch(text)
    if international:
        digits = international.group(1)
        if digits.startswith("86") and _MAINLAND.fullmatch(digits[2:]):
            return digits[2:]
        return digits
    raise PhoneError(f"malformed phone number {_masked(text)!r}")


def _masked(text: str) -> str:
    # Error messages end up in logs: never a full number (invariant 6).
    return text[:3] + "***" + text[-2:] if len(text) > 6 else "***"


def beijing_today(clock: Clock = SYSTEM_CLOCK) -> date:
    """Today's date on the vendor's calendar (Asia/Shanghai), whatever the host's zone."""
    return clock.now().astimezone(SHANGHAI).date()


def oldest_queryable(today: date) -> date:
    return today - timedelta(days=QUERY_WINDOW_DAYS)


def parse_send_date(value: Any) -> date:
    """A `date`, or text `YYYYMMDD` / `YYYY-MM-DD`."""
    if isinstance(value, datetime):
        return value.astimezone(SHANGHAI).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise SendDateError(f"send date {text!r} is not YYYY-MM-DD or YYYYMMDD")


def check_send_date(day: date, today: date) -> None:
    """Raise SendDateError unless `day` is within the last 30 days (Beijing) and not in the future."""
    if day > today:
        raise SendDateError(f"send date {day.isoformat()} is in the future (today is {today.isoformat()} in Beijing)")
    if day < oldest_queryable(today):
        raise SendDateError(f"send date {day.isoformat()} is more than {QUERY_WINDOW_DAYS} days ago "
                            f"(the oldest QuerySendDetails answers for is {oldest_queryable(today).isoformat()})")


class TokenBucket:
    """Thread-safe token bucket: at most `rate` acquisitions per second, bursts up to `burst`.

    Each caller reserves its token under the lock and sleeps outside it, so waiters are
    served in arrival order and the lock is never held while sleeping.
    """

    def __init__(self, rate: float, burst: Optional[float] = None, clock: Clock = SYSTEM_CLOCK):
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = float(rate)
        self.capacity = float(burst if burst is not None else max(1.0, min(rate, 10.0)))
        self.clock = clock
        self._tokens = self.capacity
        self._last = clock.monotonic()
        self._lock = threading.Lock()
        self.waited = 0.0

    def acquire(self, max_wait: Optional[float] = None) -> bool:
        """Take one token, sleeping as needed; False (nothing taken) if that would exceed `max_wait`."""
        with self._lock:
            now = self.clock.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
            if max_wait is not None and wait > max_wait:
                return False
            self._tokens -= 1
            self.waited += wait
        self.clock.sleep(wait)
        return True


@dataclass(frozen=True)
class SendDetail:
    """One row of QuerySendDetails (the API's names in comments). Rows carry no BizId."""

    phone: str  # PhoneNum
    status: int  # SendStatus: 1 waiting, 2 failed, 3 delivered
    err_code: str  # ErrCode
    template_code: str  # TemplateCode
    content: str  # Content
    send_time: str  # SendDate, "yyyy-MM-dd HH:mm:ss" Beijing
    receive_time: str  # ReceiveDate ("" while waiting)
    out_id: str  # OutId
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dto(cls, dto: dict[str, Any]) -> "SendDetail":
        try:
            status = int(dto.get("SendStatus") or 0)
        except (TypeError, ValueError):
            status = 0
        return cls(
            phone=str(dto.get("PhoneNum") or ""),
            status=status,
            err_code=str(dto.get("ErrCode") or ""),
            template_code=str(dto.get("TemplateCode") or ""),
            content=str(dto.get("Content") or ""),
            send_time=str(dto.get("SendDate") or ""),
            receive_time=str(dto.get("ReceiveDate") or ""),
            out_id=str(dto.get("OutId") or ""),
            raw=dict(dto),
        )


@dataclass
class QueryResult:
    phone: str
    send_date: date
    biz_id: Optional[str]
    total: int
    rows: list[SendDetail]
    calls: int  # API calls this query made, retries included
    pages: int


@dataclass
class _Timing:
    """The slowest call seen (seconds): what the next call is budgeted at."""

    call: float = 0.5
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, seconds: float) -> None:
        with self.lock:
            self.call = max(self.call * 0.9, seconds)  # forget a single slow outlier slowly


class SendRecordClient:
    """QuerySendDetails through aliyun-python-sdk-dysmsapi; safe to share between threads."""

    def __init__(self, credentials: Credentials, endpoint: str, region: str = "cn-hangzhou", *,
                 timeout: float = 10.0, qps: float = 50.0, max_attempts: int = 5, backoff: float = 0.2,
                 backoff_max: float = 5.0, margin: float = 1.0, clock: Clock = SYSTEM_CLOCK,
                 limiter: Optional[TokenBucket] = None):
        self.credentials = credentials
        self.endpoint = endpoint
        self.region = region
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.retry_backoff = ExponentialBackoff(max(1, max_attempts), backoff, backoff_max)
        self.margin = margin
        self.clock = clock
        self.limiter = limiter or TokenBucket(qps, clock=clock)
        self.timing = _Timing()
        self._clients = ThreadClients(credentials, region, timeout)
        self._lock = threading.Lock()
        self.calls = 0
        self.retries = 0

    # -- public ---------------------------------------------------------------
    def query(self, phone: str, send_date: Any, biz_id: Optional[str] = None,
              deadline: Optional[Deadline] = None) -> QueryResult:
        """Every row for `phone` on `send_date` (optionally one BizId). Raises SendDateError before
        any call, SendDetailsError for a non-OK answer, DeadlineReached when out of time."""
        day = parse_send_date(send_date)
        check_send_date(day, beijing_today(self.clock))
        rows: list[SendDetail] = []
        calls = pages = 0
        total = 0
        for page in range(1, MAX_PAGES + 1):
            body, made = self._page_with_retries(phone, day, page, biz_id, deadline)
            calls += made
            pages += 1
            dtos = _dtos(body)
            total = _int(body.get("TotalCount"))
            rows.extend(SendDetail.from_dto(d) for d in dtos)
            if len(rows) >= total or len(dtos) < PAGE_SIZE:
                break
        return QueryResult(phone, day, biz_id, total, rows, calls, pages)

    # -- one page -------------------------------------------------------------
    def _page_with_retries(self, phone: str, day: date, page: int, biz_id: Optional[str],
                           deadline: Optional[Deadline]) -> tuple[dict, int]:
        made = 0

        def attempt(_timeout: float) -> dict:
            nonlocal made
            self._wait_for_budget(deadline)
            made += 1
            return self._call(phone, day, page, biz_id, deadline)  # its timeout: from the deadline

        def count_retry(_exc: BaseException, _delay: float) -> None:
            with self._lock:
                self.retries += 1

        try:
            # Another try only while its backoff and one more call (the slowest seen) fit before
            # the deadline less the margin.
            body = retry_call(attempt, retryable=lambda e: isinstance(e, SendDetailsError) and e.retryable,
                              backoff=self.retry_backoff, attempt_timeout=self.timeout, min_attempt=self.timing.call,
                              deadline=None if deadline is None else deadline.earlier(self.margin),
                              sleep=self.clock.sleep, on_retry=count_retry)
        except OutOfTime:
            raise DeadlineReached("no time left for another call") from None
        except SendDetailsError as exc:
            exc.attempts = made
            if exc.retryable and made < self.max_attempts and deadline is not None:  # stopped by the deadline
                raise DeadlineReached(f"out of time after {made} tries ({exc.code})") from exc
            raise
        return body, made

    def _wait_for_budget(self, deadline: Optional[Deadline]) -> None:
        if deadline is None:
            self.limiter.acquire()
            return
        spare = deadline.remaining() - self.margin - self.timing.call
        if spare < 0 or not self.limiter.acquire(max_wait=spare):
            raise DeadlineReached("no time left for another call")

    def _call(self, phone: str, day: date, page: int, biz_id: Optional[str], deadline: Optional[Deadline]) -> dict:
        from aliyunsdkdysmsapi.request.v20170525.QuerySendDetailsRequest import QuerySendDetailsRequest

        request = QuerySendDetailsRequest()
        request.set_PhoneNumber(phone)
        request.set_SendDate(day.strftime("%Y%m%d"))
        request.set_PageSize(PAGE_SIZE)
        request.set_CurrentPage(page)
        if biz_id:
            request.set_BizId(biz_id)
        point_request(request, self.endpoint)
        timeout = self.timeout
        if deadline is not None:
            # A hung connection must not carry the run past its deadline.
            timeout = max(0.5, min(timeout, deadline.remaining() - self.margin))
        request.set_read_timeout(timeout)
        request.set_connect_timeout(min(timeout, 5.0))
        with self._lock:
            self.calls += 1
        t0 = self.clock.monotonic()
        body, error = call_rpc(self._clients.get(), request)
        self.timing.observe(self.clock.monotonic() - t0)
        code = str(body.get("Code") or "")
        if error is not None or code != "OK":
            raise SendDetailsError(code or "Unknown", str(body.get("Message") or ""), int(body.get("_status") or 0))
        return body


def _dtos(body: dict) -> list[dict]:
    holder = body.get("SmsSendDetailDTOs") or {}
    rows = holder.get("SmsSendDetailDTO") if isinstance(holder, dict) else holder
    if isinstance(rows, dict):  # a single row rendered as an object
        rows = [rows]
    return [r for r in rows or () if isinstance(r, dict)]


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
