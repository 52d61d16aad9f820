"""Shared fixtures: the loopback Alicom emulator and the environment of a drain run."""
from __future__ import annotations

import pytest

import sys

from scripts.emulator import Emulator
from shared.logs import get_logger
from shared.runtime import reset_runtime

AK = "LTAI5tTestCustomerKey"
SECRET = "customerSecret-NeverPrintMe-0123456789"
UID = "1234567890123456"
TYPES = ("SmsReport", "SmsUp", "VoiceReport", "VoiceCallReport")


@pytest.fixture
def emulator():
    emu = Emulator(customer_keys={AK: SECRET}, uid=UID, token_lifetime=3600.0, visibility_timeout=30.0, seed=7)
    emu.start()
    for mtype in TYPES:
        emu.create_queue(emu.queue_name(mtype))
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def drain_env(emulator, tmp_path, monkeypatch):
    """Point the drain's settings at the emulator and a file sink; returns a setter for more."""
    env = {
        "ALICOM_UID": UID,
        "ALICOM_MESSAGE_TYPES": ",".join(TYPES),
        "ALICOM_MNS_ENDPOINT": emulator.url,
        "ALICOM_TOKEN_ENDPOINT": emulator.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": AK,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
        "SINK": "file",
        "SINK_PATH": str(tmp_path / "receipts"),
        "DRAIN_WAIT_SECONDS": "0",
        "DRAIN_SAFETY_MARGIN_SECONDS": "0.5",
        "MNS_TIMEOUT_SECONDS": "5",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reset_runtime()

    def update(**more: str) -> dict:
        for k, v in more.items():
            monkeypatch.setenv(k, v)
        env.update(more)
        reset_runtime()
        return env

    yield update
    reset_runtime()


@pytest.fixture
def reconcile_env(emulator, drain_env, tmp_path, monkeypatch):
    """Drain and reconcile against the emulator, one sqlite sink; quick backoff. Returns a setter for more."""
    from shared.runtime import reset_reconcile_runtime

    drain_env(SINK="sqlite", SINK_PATH=str(tmp_path / "alicom.db"), ALICOM_SMS_ENDPOINT=emulator.url,
              RECONCILE_BACKOFF_SECONDS="0.02", RECONCILE_BACKOFF_MAX_SECONDS="0.2",
              RECONCILE_SAFETY_MARGIN_SECONDS="0.3", RECONCILE_TIMEOUT_SECONDS="5", RECONCILE_QPS="500")
    reset_reconcile_runtime()

    def update(**more: str) -> dict:
        env = drain_env(**more)
        reset_reconcile_runtime()
        return env

    yield update
    reset_reconcile_runtime()


class _CurrentStdout:
    """Whatever sys.stdout is at the moment of writing (pytest swaps it between phases)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def captured(capsys):
    """stdout as the test sees it, log lines included: the Logger's handler was bound to the
    stdout of import time, so point it at the current one for the test."""
    handler = get_logger().registered_handler
    # Not setStream: it flushes the old stream, which a runner that swapped stdout (mutmut) may have closed.
    old, handler.stream = handler.stream, _CurrentStdout()
    try:
        yield capsys
    finally:
        handler.stream = old


# Loopback stand-ins for the cloud sinks (session-wide servers shared by every test module).
from tests.fakes.moto_server import fault_proxy, moto, moto_server  # noqa: E402,F401
from tests.fakes.oss_gateway import oss_gateway  # noqa: E402,F401
from tests.fakes.tablestore import ots, tablestore_server  # noqa: E402,F401
