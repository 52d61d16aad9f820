"""A switch that makes a loopback stand-in accept requests and never answer them.

`hang.on()` (optionally only for requests a predicate matches): a request handler that
calls `hang.hold(handler, ...)` after reading its request waits, unanswered, until
`hang.off()` or the server's `stop()`; the connection is then closed without an answer
(the client gave up long before, or sees the connection drop). Handler threads are
daemon threads and are released on stop, so a hung request never blocks test teardown.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional


class Hang:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._match: Optional[Callable[..., bool]] = None
        self._release = threading.Event()
        self.held = 0  # requests left unanswered so far

    def on(self, match: Optional[Callable[..., bool]] = None) -> None:
        """Hold every request from now on (or those `match(*request)` is true for)."""
        with self._lock:
            self._release = threading.Event()
            self._match = match or (lambda *request: True)

    def off(self) -> None:
        """Answer again; requests held so far are dropped unanswered."""
        with self._lock:
            self._match = None
            self._release.set()

    def hold(self, handler: Any, *request: Any) -> bool:
        """In a request handler: True if the request was held (and is now to be dropped)."""
        with self._lock:
            match, release = self._match, self._release
        if match is None or not match(*request):
            return False
        with self._lock:
            self.held += 1
        release.wait()
        handler.close_connection = True  # no answer; the server closes the connection
        return True
