"""pytest fixtures over moto in server mode and its fault proxy (scripts/stand_ins/moto_server.py,
shared with the chaos harness). Import them into a test module, or expose them from conftest.py:
`moto_server` (session), `moto` (per test: reset first), `fault_proxy` (per test)."""
from __future__ import annotations

import pytest

from scripts.stand_ins.moto_server import (  # noqa: F401  (re-exported for the tests)
    CREDENTIALS,
    REGION,
    FaultProxy,
    MotoServer,
    closed_port_endpoint,
)


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def moto(moto_server):
    """The session's moto server, emptied before the test."""
    moto_server.reset()
    return moto_server


@pytest.fixture
def fault_proxy(moto):
    proxy = FaultProxy(moto.endpoint).start()
    yield proxy
    proxy.stop()
