"""Python callables standing in for deployed FC / Lambda functions."""
from __future__ import annotations

import threading
import time
from typing import Callable

class FunctionRegistry:
    """Python callables standing in for deployed functions: fn(payload: bytes) -> bytes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._functions: dict[str, Callable[[bytes], bytes]] = {}
        self._payloads: dict[str, list[bytes]] = {}
        self._async: list[threading.Thread] = []

    def register(self, name: str, fn: Callable[[bytes], bytes]) -> None:
        with self._lock:
            self._functions[name] = fn
            self._payloads.setdefault(name, [])

    def resolve(self, *candidates: str) -> str | None:
        with self._lock:
            return next((c for c in candidates if c in self._functions), None)

    def invocations(self, name: str) -> list[bytes]:
        with self._lock:
            return list(self._payloads.get(name, []))

    def invoke(self, name: str, payload: bytes) -> bytes:
        """Run synchronously; the function's exception propagates."""
        with self._lock:
            fn = self._functions[name]
            self._payloads[name].append(payload)
        out = fn(payload)
        if out is None:
            return b"null"
        return out.encode("utf-8") if isinstance(out, str) else bytes(out)

    def invoke_async(self, name: str, payload: bytes) -> None:
        with self._lock:
            fn = self._functions[name]
            self._payloads[name].append(payload)

        def run():
            try:
                fn(payload)
            except Exception:
                pass  # an async failure is the function's business, as on the real platforms

        t = threading.Thread(target=run, name=f"async-{name}", daemon=True)
        with self._lock:
            self._async = [x for x in self._async if x.is_alive()] + [t]
        t.start()

    def wait_async(self, timeout: float = 10.0) -> bool:
        """Wait for running async invocations; True if all finished."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._async)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

