"""pytest fixtures over the fake. Import them into a test module, or expose them from
conftest.py: `tablestore_server` (session), `ots` (per test: reset first)."""
from __future__ import annotations

import pytest

from .server import TablestoreServer


@pytest.fixture(scope="session")
def tablestore_server():
    server = TablestoreServer().start()
    yield server
    server.stop()


@pytest.fixture
def ots(tablestore_server):
    """The session's Tablestore fake, emptied before the test (instance test-instance, test-ak / test-secret)."""
    tablestore_server.reset()
    return tablestore_server
