"""Stand-ins for deployed FC / Lambda functions: Python callables, or commands run per invocation.

A callable (`register`) runs in the emulator's process: fn(payload: bytes) -> bytes. A command
(`register_process`) runs as a process of its own for every invocation, with the payload as its
last argument, as the platforms run each invocation in an instance of its own: a drain that fans
out over K workers then really runs K processes, each with its own interpreter and GIL.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional


@dataclass
class ProcessFunction:
    command: list[str]  # the payload (UTF-8 JSON) is appended as the last argument
    env: Optional[dict[str, str]] = None
    cwd: Optional[str] = None
    log_dir: Optional[str] = None  # each invocation's stdout and stderr, one file each, if set
    runs: list[subprocess.Popen] = field(default_factory=list)


class FunctionRegistry:
    def __init__(self):
        self._lock = threading.Lock()
        self._functions: dict[str, Callable[[bytes], bytes]] = {}
        self._processes: dict[str, ProcessFunction] = {}
        self._payloads: dict[str, list[bytes]] = {}
        self._async: list[threading.Thread] = []

    def register(self, name: str, fn: Callable[[bytes], bytes]) -> None:
        with self._lock:
            self._functions[name] = fn
            self._payloads.setdefault(name, [])

    def register_process(self, name: str, command: list[str], env: Optional[dict[str, str]] = None,
                         cwd: Optional[str] = None, log_dir: Optional[str] = None) -> None:
        with self._lock:
            self._processes[name] = ProcessFunction(list(command), env, cwd, log_dir)
            self._payloads.setdefault(name, [])

    def resolve(self, *candidates: str) -> str | None:
        with self._lock:
            return next((c for c in candidates if c in self._functions or c in self._processes), None)

    def invocations(self, name: str) -> list[bytes]:
        with self._lock:
            return list(self._payloads.get(name, []))

    def exit_codes(self, name: str) -> list[Optional[int]]:
        """Exit codes of the processes a command function started (None: still running)."""
        with self._lock:
            runs = list(self._processes[name].runs) if name in self._processes else []
        return [p.poll() for p in runs]

    def invoke(self, name: str, payload: bytes) -> bytes:
        """Run synchronously; the function's exception (or a process's failure) propagates."""
        with self._lock:
            self._payloads[name].append(payload)
            fn, proc = self._functions.get(name), self._processes.get(name)
        if proc is not None:
            done = subprocess.run(proc.command + [payload.decode("utf-8")], env=proc.env, cwd=proc.cwd,
                                  capture_output=True, timeout=900)
            if done.returncode != 0:
                raise RuntimeError(f"exit code {done.returncode}: {done.stderr.decode('utf-8', 'replace')[-500:]}")
            lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
            return (lines[-1] if lines else "null").encode("utf-8")
        out = fn(payload)
        if out is None:
            return b"null"
        return out.encode("utf-8") if isinstance(out, str) else bytes(out)

    def invoke_async(self, name: str, payload: bytes) -> None:
        with self._lock:
            fn, proc = self._functions.get(name), self._processes.get(name)
            self._payloads[name].append(payload)
            number = len(self._payloads[name])
        if proc is not None:
            self._start(name, proc, payload, number)
            return

        def run():
            try:
                fn(payload)
            except Exception:
                pass  # an async failure is the function's business, as on the real platforms

        t = threading.Thread(target=run, name=f"async-{name}", daemon=True)
        with self._lock:
            self._async = [x for x in self._async if x.is_alive()] + [t]
        t.start()

    def _start(self, name: str, proc: ProcessFunction, payload: bytes, number: int) -> None:
        out = err = subprocess.DEVNULL
        if proc.log_dir:
            base = Path(proc.log_dir) / f"{name}-{number:04d}"
            base.parent.mkdir(parents=True, exist_ok=True)
            out, err = open(f"{base}.out", "wb"), open(f"{base}.err", "wb")
        try:
            child = subprocess.Popen(proc.command + [payload.decode("utf-8")], env=proc.env, cwd=proc.cwd,
                                     stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        finally:
            for stream in (out, err):
                if stream is not subprocess.DEVNULL:
                    stream.close()
        with self._lock:
            proc.runs.append(child)

    def wait_async(self, timeout: float = 10.0) -> bool:
        """Wait for running async invocations (threads and processes); True if all finished."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._async)
            children = [p for f in self._processes.values() for p in f.runs]
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for child in children:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        return not any(t.is_alive() for t in threads) and all(c.poll() is not None for c in children)

    def kill_all(self) -> None:
        """Stop every process a command function started (the emulator is stopping)."""
        with self._lock:
            children = [p for f in self._processes.values() for p in f.runs]
        for child in children:
            if child.poll() is None:
                child.kill()
        for child in children:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                pass


def default_env() -> dict[str, str]:
    """This process's environment, for a command function that should see the same settings."""
    return dict(os.environ)
