"""Tests that close gaps a mutation run (scripts/mutation/run) found in shared/tokens.py.

What a refused token call tells the operator: the API's code and message, cut to 300
characters, and for a host clock more than 15 minutes off a hint to check the time
synchronisation. How the token cache waits: one lock per message type, a wait bounded by the
caller's timeout, the refresh buffer inclusive. Over real sockets: the SDK signs each call to
the emulator's POP endpoint.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Iterator, Optional

import pytest

from shared.clock import SYSTEM_CLOCK
from shared.runtime import drain_runtime
from shared.tokens import DybaseapiTokenSource, TokenCache, TokenError

CLOCK_HINT = " (this host's clock is more than 15 minutes off: check its time synchronisation)"


@pytest.mark.parametrize("skew", [20 * 60, -20 * 60])
def test_a_host_clock_15_minutes_off_is_a_final_refusal_that_says_to_check_the_clock(emulator, drain_env, skew):
    drain_env()
    emulator.set_clock_skew(skew)
    with pytest.raises(TokenError) as refused:
        drain_runtime().tokens.source.fetch("SmsReport", timeout=5)
    error = refused.value
    assert (error.message_type, error.code, error.retryable, error.throttled) == (
        "SmsReport", "InvalidTimeStamp.Expired", False, False)
    assert error.message.startswith("Specified time stamp or date value is expired. Timestamp ")  # the API's own text
    assert error.message.endswith(" is more than 15 minutes off." + CLOCK_HINT)
    assert str(error) == f"QueryTokenForMnsQueue(SmsReport) failed: InvalidTimeStamp.Expired: {error.message}"


def test_a_refusal_message_is_cut_to_300_characters_and_gets_no_clock_hint(emulator, drain_env):
    drain_env()
    long_message = "".join(f"reason {i:03d}; " for i in range(40))  # 480 characters
    emulator.refuse_tokens("SmsUp", "Forbidden.NoPermission", long_message)
    with pytest.raises(TokenError) as refused:
        drain_runtime().tokens.source.fetch("SmsUp", timeout=5)
    assert refused.value.code == "Forbidden.NoPermission"
    assert refused.value.message == long_message[:300]
    assert len(refused.value.message) == 300 and refused.value.message.endswith("reason 024; ")


# -- the token cache: one lock per type, waits bounded by the caller's time ------------------------

class FrozenClock:
    """The system clock's reading at creation (whole seconds), moved only by `ahead`."""

    def __init__(self) -> None:
        self.base = SYSTEM_CLOCK.now().replace(microsecond=0)
        self.ahead = 0.0

    def now(self) -> datetime:
        return self.base + timedelta(seconds=self.ahead)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _fetching(cache: TokenCache, message_type: str, timeout: Optional[float]) -> tuple[threading.Thread, dict]:
    """Start a get() in a thread; return once its token call is under way (counted, lock held)."""
    outcome: dict = {}

    def get() -> None:
        try:
            outcome["token"] = cache.get(message_type, timeout)
        except TokenError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=get, daemon=True)
    thread.start()
    give_up = time.monotonic() + 5
    while cache.fetches < 1 and time.monotonic() < give_up:
        time.sleep(0.01)
    assert cache.fetches == 1, "the first get() never started its token call"
    return thread, outcome


@contextmanager
def sms_report_token_call_hung(emulator, cache: TokenCache) -> Iterator[None]:
    """Within: a get() of SmsReport's token (timeout 6 s) is under way and its call hangs."""
    emulator.set_faults(hang=1.0, apis=["QueryTokenForMnsQueue"], message_types="SmsReport")
    try:
        hung, _ = _fetching(cache, "SmsReport", timeout=6)
        yield
    finally:
        emulator.set_faults()  # the held call is closed unanswered
    hung.join(10)


def test_a_token_with_exactly_the_refresh_buffer_left_is_kept(emulator, drain_env):
    """The buffer is inclusive: exactly 120 s left is still fresh (not one call more per boundary)."""
    drain_env()
    clock = FrozenClock()
    cache = TokenCache(drain_runtime().tokens.source, clock, refresh_buffer=120)
    first = cache.get("SmsReport", timeout=5)
    clock.ahead = first.seconds_left(clock.now()) - 120
    assert first.seconds_left(clock.now()) == 120.0
    assert cache.get("SmsReport", timeout=5) is first and cache.fetches == 1


def test_a_hung_token_call_for_one_type_does_not_hold_up_another_type(emulator, drain_env):
    """Each type has its own lock: while SmsReport's token call hangs, SmsUp's consumers get theirs."""
    drain_env()
    cache = TokenCache(drain_runtime().tokens.source)
    with sms_report_token_call_hung(emulator, cache):
        started = time.monotonic()
        token = cache.get("SmsUp", timeout=3)
        assert time.monotonic() - started < 2.0 and token.seconds_left(SYSTEM_CLOCK.now()) > 0
        assert cache.fetches == 2


def test_a_caller_waits_for_a_token_call_in_flight_no_longer_than_its_own_timeout(emulator, drain_env):
    """A second consumer of the same type waits for the fetch under way, but only as long as it was
    given, then gets a retryable 'Deadline' that names the type (the drain's deadline is kept)."""
    drain_env()
    cache = TokenCache(drain_runtime().tokens.source)
    with sms_report_token_call_hung(emulator, cache):
        started = time.monotonic()
        with pytest.raises(TokenError) as waited:
            cache.get("SmsReport", timeout=0.3)
        took = time.monotonic() - started
    assert 0.25 <= took < 0.8, took
    error = waited.value
    assert (error.message_type, error.code, error.retryable) == ("SmsReport", "Deadline", True)
    assert error.message == "no time left to wait for a token being fetched"
    assert cache.fetches == 1  # the waiter did not make a call of its own


def test_a_caller_without_a_timeout_waits_for_the_token_call_in_flight_and_shares_its_token(emulator, drain_env):
    """No timeout means wait as long as the fetch takes (here 2 s): one call, one token for both."""
    drain_env()
    cache = TokenCache(drain_runtime().tokens.source)
    emulator.set_latency(2.0)  # every answer comes 2 s late
    try:
        first, outcome = _fetching(cache, "SmsReport", timeout=None)
        token = cache.get("SmsReport")
    finally:
        emulator.set_latency(0.0)
    first.join(10)
    assert outcome.get("token") is token and cache.fetches == 1, outcome


class StoppedClock(FrozenClock):
    """A monotonic clock that does not move: what is left of a timeout is exactly the timeout."""

    def monotonic(self) -> float:
        return 1000.0


def test_a_caller_left_with_a_tenth_of_a_second_gets_a_deadline_and_makes_no_call(emulator, drain_env):
    """A token call is not started with 0.1 s or less to go (the bound is inclusive): it could only
    time out, and the drain's deadline is worth more than the attempt."""
    drain_env()
    cache = TokenCache(drain_runtime().tokens.source, StoppedClock())
    with pytest.raises(TokenError) as late:
        cache.get("SmsReport", timeout=0.1)
    error = late.value
    assert (error.message_type, error.code, error.retryable) == ("SmsReport", "Deadline", True)
    assert error.message == "no time left to fetch a token"
    assert cache.fetches == 0


class JumpingClock(FrozenClock):
    """A monotonic clock that moves half a second each time it is read."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = 1000.0

    def monotonic(self) -> float:
        self.reading += 0.5
        return self.reading


def test_the_time_spent_before_the_call_is_taken_off_the_callers_timeout(emulator, drain_env):
    """0.55 s given, 0.5 s gone by the time the lock is held: 0.05 s left, so no call."""
    drain_env()
    cache = TokenCache(drain_runtime().tokens.source, JumpingClock())
    with pytest.raises(TokenError) as late:
        cache.get("SmsReport", timeout=0.55)
    assert (late.value.code, late.value.message) == ("Deadline", "no time left to fetch a token")
    assert cache.fetches == 0


def test_a_caller_with_a_second_left_makes_the_call(emulator, drain_env):
    drain_env()
    cache = TokenCache(drain_runtime().tokens.source, StoppedClock())
    token = cache.get("SmsReport", timeout=1.0)
    assert token.seconds_left(SYSTEM_CLOCK.now()) > 0 and cache.fetches == 1


def test_a_hung_token_call_is_given_up_within_the_callers_timeout(emulator, drain_env):
    """The token call gets what is left of the caller's timeout, and no SDK retries: a hung
    endpoint costs about one timeout, not the client's default 10 s three times."""
    drain_env()
    cache = TokenCache(drain_runtime().tokens.source)
    emulator.set_faults(hang=1.0, apis=["QueryTokenForMnsQueue"], message_types="SmsReport")
    try:
        started = time.monotonic()
        with pytest.raises(TokenError) as hung:
            cache.get("SmsReport", timeout=1.0)
        took = time.monotonic() - started
    finally:
        emulator.set_faults()
    assert took < 3.0, took
    assert hung.value.retryable and cache.fetches == 1 and emulator.stats()["QueryTokenForMnsQueue"] == 1


# -- the token source: one request per call, the configured region, its own timeout -----------

def test_a_call_without_a_deadline_is_bounded_by_the_sources_own_timeout(emulator, drain_env):
    drain_env()
    configured = drain_runtime().tokens.source
    source = DybaseapiTokenSource(configured.credentials, configured.endpoint, configured.region, timeout=1.0)
    emulator.set_faults(hang=1.0, apis=["QueryTokenForMnsQueue"])
    try:
        started = time.monotonic()
        with pytest.raises(TokenError) as hung:
            source.fetch("SmsReport")
        took = time.monotonic() - started
    finally:
        emulator.set_faults()
    assert 0.9 <= took < 2.5, took
    assert hung.value.retryable and emulator.stats()["QueryTokenForMnsQueue"] == 1


@pytest.mark.parametrize("timeout", [None, 5.0])
@pytest.mark.parametrize("code,status", [("ServiceUnavailable", 503), ("Throttling.User", 400), ("InternalError", 500)])
def test_a_failed_token_call_is_one_request_whatever_the_answer(emulator, drain_env, code, status, timeout):
    """The SDK retries none of these for Dybaseapi (its retry list holds only ECS's APIs), and the
    client asks it for none: the callers retry, within their deadlines."""
    drain_env()
    emulator.refuse_tokens("SmsReport", code, status=status)
    with pytest.raises(TokenError) as refused:
        drain_runtime().tokens.source.fetch("SmsReport", timeout)
    assert (refused.value.code, refused.value.retryable) == (code, True)
    assert [r["answer"] for r in emulator.token_requests()] == [code]


def test_the_token_call_is_signed_for_the_configured_region(emulator, drain_env):
    """RegionId goes on the wire (api-facts: it is one of the signed query parameters)."""
    drain_env(ALICOM_REGION="ap-southeast-1")
    drain_runtime().tokens.source.fetch("SmsReport", 5)
    assert [(r["region_id"], r["answer"]) for r in emulator.token_requests()] == [("ap-southeast-1", "OK")]


def test_a_short_deadline_is_the_calls_timeout_down_to_a_tenth_of_a_second(emulator, drain_env):
    """0.3 s left: the call waits 0.3 s, not a rounded-up second."""
    drain_env()
    emulator.set_faults(hang=1.0, apis=["QueryTokenForMnsQueue"])
    try:
        started = time.monotonic()
        with pytest.raises(TokenError):
            drain_runtime().tokens.source.fetch("SmsReport", 0.3)
        took = time.monotonic() - started
    finally:
        emulator.set_faults()
    assert 0.25 <= took < 0.9, took


@pytest.mark.parametrize("code,status,message,expected", [
    # code, retryable, throttled, message
    ("isv.ACCOUNT_ABNORMAL", 200, "m", ("isv.ACCOUNT_ABNORMAL", False, False, "m")),  # a 200 whose Code is not OK
    ("", 200, "m", ("Unknown", False, False, "m")),                             # a 200 with an empty Code
    ("Backend.Unavailable", 503, "m", ("Backend.Unavailable", True, True, "m")),  # unknown code: the status decides
    ("Backend.Failure", 502, "m", ("Backend.Failure", True, False, "m")),
    ("Backend.Busy", 429, "m", ("Backend.Busy", True, True, "m")),
    ("Backend.Refused", 409, "m", ("Backend.Refused", False, False, "m")),
    ("isv.BLANK", 200, "", ("isv.BLANK", False, False, "")),  # no message: none made up
])
def test_what_a_refusal_becomes(emulator, drain_env, code, status, message, expected):
    drain_env()
    emulator.refuse_tokens("SmsReport", code, message, status=status)
    with pytest.raises(TokenError) as refused:
        drain_runtime().tokens.source.fetch("SmsReport", 5)
    error = refused.value
    assert (error.code, error.retryable, error.throttled, error.message) == expected


def test_an_ok_answer_without_a_token_is_an_invalid_response(emulator, drain_env):
    drain_env()
    emulator.refuse_tokens("SmsReport", "OK", "no token in this answer", status=200)  # Code OK, no MessageTokenDTO
    with pytest.raises(TokenError) as invalid:
        drain_runtime().tokens.source.fetch("SmsReport", 5)
    assert str(invalid.value) == ("QueryTokenForMnsQueue(SmsReport) failed: InvalidResponse: "
                                  "MessageTokenDTO missing or malformed")
    assert (invalid.value.message_type, invalid.value.retryable) == ("SmsReport", False)
