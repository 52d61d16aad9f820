"""Tests that close gaps a mutation run (scripts/mutation/run) found in shared/tokens.py.

What a refused token call tells the operator: the API's code and message, cut to 300
characters, and for a host clock more than 15 minutes off a hint to check the time
synchronisation. Over real sockets: the SDK signs each call to the emulator's POP endpoint.
"""
from __future__ import annotations

import pytest

from shared.runtime import drain_runtime
from shared.tokens import TokenError

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
    assert error.message.endswith(CLOCK_HINT)
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
