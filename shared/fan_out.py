"""Fan-out: a scheduled run that finds its queues behind starts more runs of the same function.

One Python process drains at most what its consumers' round trips allow (and on a fraction of a
vCPU, less); a backlog larger than one instance can clear grows until Alicom's retention drops
receipts. The platforms run many instances of one function at once, and MNS queues are safe for
competing consumers (visibility timeouts, at-least-once delivery, idempotent sinks), so the
answer is more instances: like AWS's event-source mapping for SQS, but started by the drain
itself through the platform's own invoke API (shared/invokers/).

Knows nothing of the platform: it is given a way to make an `Invoker` and how many workers to
start. The workers get a manual event `{"worker": true, "message_types": [...], "parent": id}`:
they drain those types and stop when the queue is empty or at their deadline, and never fan
out further (the function's reserved concurrency, set from DRAIN_MAX_WORKERS in both templates,
caps the runs at once). An invoke that fails is counted and logged, never fatal to the run.
"""
from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Protocol, Sequence

from shared.clock import Deadline

PARALLEL_INVOKES = 8  # invoke calls in flight at once
INVOKE_TIMEOUT = 5.0  # seconds one invoke call may take at most (an async invoke answers at once)


class InvokeError(Exception):
    """The platform did not accept an invocation; `code` says why (never a credential)."""

    def __init__(self, code: str, message: str = ""):
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


class Invoker(Protocol):
    def invoke_async(self, payload: bytes, timeout: float) -> None:
        """Queue one asynchronous invocation of the function; raise InvokeError if not accepted."""


class FanOut:
    """Starts up to `workers` further runs, once, in the background."""

    def __init__(self, make_invoker: Callable[[], Invoker], workers: int, deadline: Deadline, parent: str,
                 logger: Any = None):
        self.make_invoker = make_invoker
        self.workers = workers
        self.deadline = deadline
        self.parent = parent
        self.logger = logger
        self.message_types: list[str] = []
        self.invoked = 0
        self.errors: Counter = Counter()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def start(self, message_types: Sequence[str]) -> None:
        """Invoke the workers for these message types (once per run; returns at once)."""
        with self._lock:
            if self._thread is not None or self.workers < 1 or not message_types:
                return
            self.message_types = sorted(message_types)
            self._thread = threading.Thread(target=self._invoke_all, name="fan-out", daemon=True)
            self._thread.start()

    def finish(self) -> Optional[dict[str, Any]]:
        """Wait for the invoke calls (each bounded by the deadline); what the fan-out did, or None."""
        if self._thread is None:
            return None
        self._thread.join(timeout=max(0.0, self.deadline.remaining()))
        with self._lock:
            return {"message_types": list(self.message_types), "workers": self.workers, "invoked": self.invoked,
                    "failed": sum(self.errors.values()), "errors": dict(self.errors)}

    def _invoke_all(self) -> None:
        payload = json.dumps({"worker": True, "message_types": self.message_types, "parent": self.parent}).encode()
        try:
            invoker = self.make_invoker()  # the platform's SDK is imported here, and only here
        except Exception as exc:  # a missing SDK or a bad endpoint: the run goes on without workers
            self._count_failure(type(exc).__name__, self.workers, str(exc))
            return
        with ThreadPoolExecutor(max_workers=min(PARALLEL_INVOKES, self.workers), thread_name_prefix="invoke") as pool:
            for _ in range(self.workers):
                pool.submit(self._invoke_one, invoker, payload)

    def _invoke_one(self, invoker: Invoker, payload: bytes) -> None:
        timeout = min(INVOKE_TIMEOUT, self.deadline.remaining() / 2)
        if timeout < 0.2:
            self._count_failure("Deadline", 1, "no time left to invoke a worker")
            return
        try:
            invoker.invoke_async(payload, timeout)
        except Exception as exc:  # InvokeError, or a transport error the invoker did not map
            self._count_failure(getattr(exc, "code", type(exc).__name__), 1, str(exc))
            return
        with self._lock:
            self.invoked += 1

    def _count_failure(self, code: str, n: int, message: str) -> None:
        with self._lock:
            self.errors[code] += n
        if self.logger is not None:
            self.logger.warning("worker invocation failed (the run goes on)",
                                extra={"code": code, "workers": n, "error": message[:300]})
