"""Invariant 6 over a full run: no secret in any output, phone numbers masked in logs.

The drain runs as a separate process (the real handler, as a platform would call it), so
every byte it writes to stdout and stderr is captured and checked.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from scripts.receipts import BAD_BODIES, make_receipts
from shared.logs import PHONE_RE
from tests.conftest import AK, SECRET, TYPES


def run_drain(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.invoke_local", "drain", *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_full_run_output_has_no_secret_and_masks_phones(emulator, drain_env):
    env = dict(os.environ, **drain_env(), POWERTOOLS_LOG_LEVEL="DEBUG")
    phones = set()
    for mtype in TYPES:
        for body in make_receipts(mtype, 20, seed=11):
            emulator.enqueue_receipt(emulator.queue_name(mtype), body)
            phones.update(v for k, v in body.items() if k in ("phone_number", "callee"))
    for raw in BAD_BODIES:
        emulator.enqueue(emulator.queue_name("SmsReport"), raw)
    # Failing deletes and expiring tokens put warnings and refreshes in the output too.
    emulator.set_faults(server_error=0.5, apis=["BatchDeleteMessage"])
    emulator.set_token_lifetime(2.0)
    proc = run_drain(env, "--timer")
    text = proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["totals"]["stored"] == 80 and result["totals"]["dead_lettered"] == 5
    assert result["totals"]["delete_failures"] > 0, result  # the warning path ran
    assert "stored batch" in text and "dead-lettered" in text  # debug lines ran: the checks mean something
    issued = emulator.issued_tokens()
    assert len(issued) > len(TYPES)  # tokens expired and were replaced during the run
    forbidden = [AK, SECRET] + [v for t in issued for v in t]
    leaked = [s for s in forbidden if s and s in text]
    assert not leaked, f"{len(leaked)} secret value(s) in output"
    assert not re.search(r"Signature=|MNS [A-Za-z0-9]+:|security-token", text)
    unmasked = [p for p in phones if p in text]
    assert not unmasked, f"{len(unmasked)} unmasked phone numbers in output"
    assert re.search(r"1[3-9]\d\*{6}\d{2}", text), "expected masked phone numbers in the debug log"
    assert not PHONE_RE.search(text)


def test_sdk_loggers_that_print_signatures_stay_above_debug():
    import logging

    import shared.logs  # noqa: F401 - importing it pins the SDK loggers

    logging.getLogger().setLevel(logging.DEBUG)
    try:
        for name in ("botocore", "urllib3", "aliyunsdkcore", "oss2"):
            assert logging.getLogger(name).getEffectiveLevel() >= logging.INFO, name
    finally:
        logging.getLogger().setLevel(logging.WARNING)


def test_reprs_of_values_holding_secrets_or_phones_leave_them_out():
    """The drain's value types are msgspec Structs (shared/structs.py), which have no per-field
    repr=False: a repr that slipped into a log or a traceback must still carry no secret and
    no message body."""
    from datetime import datetime, timezone

    from shared.clock import Deadline
    from shared.platform import Invocation
    from shared.pop import Credentials
    from shared.queues import ReceivedMessage
    from shared.records import MnsMeta
    from shared.run_summary import TypeStats
    from shared.tokens import MnsToken

    phone = "13800138000"
    values = [
        Credentials(AK, SECRET, "sts-token-xyz"),
        MnsToken("STS.token-ak", "token-secret", "token-sts", datetime(2030, 1, 1, tzinfo=timezone.utc)),
        ReceivedMessage("handle-abc", f'{{"phone_number": "{phone}"}}', MnsMeta(message_id="m1")),
        Invocation("local", "manual", {}, Deadline(10), "req-1", raw_event={"phones": [phone]}),
        TypeStats("SmsReport", last_failure=("ServerError", f"secret {SECRET}")),
    ]
    for value in values:
        text = repr(value)
        for hidden in (AK, SECRET, "sts-token-xyz", "STS.token-ak", "token-secret", "token-sts",
                       "handle-abc", phone):
            assert hidden not in text, (type(value).__name__, hidden, text)
    # What is not secret stays readable.
    assert "2030, 1, 1" in repr(values[1]) and "message_id='m1'" in repr(values[2])
    assert "req-1" in repr(values[3]) and "SmsReport" in repr(values[4])
