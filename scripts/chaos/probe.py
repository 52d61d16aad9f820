"""Phase probe and crash points for the drain processes the chaos harness starts.

Loaded only through `scripts/chaos/hooks/sitecustomize.py`, which the harness puts first on
the drain process's PYTHONPATH, and only when one of these variables is set:

  ALICOM_CHAOS_PHASE_FILE=<path>     keep, in that file, what the process is doing right now:
                                     which calls are in flight (receive, write, delete) and how
                                     many messages are received-not-written, written-not-deleted,
                                     or being deleted. After a SIGKILL the harness reads it to
                                     know which phase the kill hit.
  ALICOM_CHAOS_CRASH_AT=<point>:<n>  SIGKILL this process the n-th time it reaches <point>
                                     (one of CRASH_POINTS), to hit a phase exactly.
  ALICOM_CHAOS_SABOTAGE=delete_before_write
                                     break invariant 1 on purpose (delete what was received at
                                     once), to prove that the harness notices lost messages.

No product file changes: the probe wraps the public seams the drain is built from
(`DrainRuntime.open_queue` and `make_sink` in shared/runtime.py; `shared.platform.adapt`, to
note when the handler starts its deadline clock; `shared.platform.RunFailed`, by a subclass
that notes when the handler raises it), observes a write from inside through
the object sinks' `on_object_stored` hook and the sqlite sink's connection (`db`), and
touches no private name of shared/. The product code never reads these variables, so on a
platform nothing of this exists.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from typing import Any, Optional, Sequence

PHASE_FILE_VAR = "ALICOM_CHAOS_PHASE_FILE"
CRASH_AT_VAR = "ALICOM_CHAOS_CRASH_AT"
SABOTAGE_VAR = "ALICOM_CHAOS_SABOTAGE"

# Where a process can be made to die, in the order a batch passes them.
CRASH_POINTS = (
    "receive",     # a receive is about to be sent
    "received",    # a receive returned messages; nothing of them written yet
    "write",       # a sink write is about to start
    "write_part",  # inside a write: an object of it stored (object sinks) / before COMMIT (sqlite)
    "written",     # a sink write returned; its messages not yet deleted
    "delete",      # a batch delete is about to be sent
    "deleted",     # a batch delete returned; the drain has not seen the answer yet
)


def parse_crash_at(text: Optional[str]) -> Optional[tuple[str, int]]:
    if not text:
        return None
    point, _, n = text.partition(":")
    if point not in CRASH_POINTS:
        raise ValueError(f"{CRASH_AT_VAR}: unknown crash point {point!r}; expected one of {CRASH_POINTS}")
    return point, max(1, int(n or 1))


class Probe:
    """Thread-safe record of in-flight calls and message states, mirrored to a file."""

    def __init__(self, phase_file: Optional[str], crash_at: Optional[tuple[str, int]]):
        self.crash_at = crash_at
        self.lock = threading.Lock()
        self.calls: Counter = Counter()      # call kind -> number in flight
        self.state: dict[str, str] = {}      # message id -> received | written | deleting
        self.handles: dict[str, str] = {}    # receipt handle -> message id
        self.points: Counter = Counter()     # crash point -> times reached
        self.invoked_at: Optional[float] = None  # CLOCK_MONOTONIC (system-wide) when the handler built its deadline
        self.raised = False                      # the handler raised RunFailed (a failed run, as the platform sees it)
        self.fd = os.open(phase_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if phase_file else None

    # -- bookkeeping ---------------------------------------------------------------------
    def _dump(self, crash: Optional[str] = None) -> None:
        if self.fd is None:
            return
        doc = {"calls": {k: v for k, v in self.calls.items() if v},
               "messages": dict(Counter(self.state.values())), "crash": crash, "invoked_at": self.invoked_at,
               "raised_run_failed": self.raised}
        data = json.dumps(doc, sort_keys=True).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def point(self, name: str) -> None:
        """Reach a crash point: die here if this is the configured one."""
        with self.lock:
            self.points[name] += 1
            if self.crash_at and self.crash_at == (name, self.points[name]):
                self._dump(crash=name)
                os.kill(os.getpid(), signal.SIGKILL)

    def invoked(self) -> None:
        with self.lock:
            self.invoked_at = time.monotonic()
            self._dump()

    def failed(self) -> None:
        with self.lock:
            self.raised = True
            self._dump()

    def begin(self, call: str) -> None:
        with self.lock:
            self.calls[call] += 1
            self._dump()

    def end(self, call: str, messages: Sequence[str] = (), state: Optional[str] = None) -> None:
        with self.lock:
            self.calls[call] -= 1
            for mid in messages:
                if state is None:
                    self.state.pop(mid, None)
                else:
                    self.state[mid] = state
            self._dump()

    def mark(self, messages: Sequence[str], state: str) -> None:
        with self.lock:
            for mid in messages:
                self.state[mid] = state
            self._dump()

    # -- wrappers ----------------------------------------------------------------------------
    def wrap_queue(self, queue: Any) -> Any:
        return _ProbedQueue(queue, self)

    def wrap_sink(self, sink: Any) -> Any:
        """Instrument `sink` in place (instance attributes), so its type and methods stay its own."""
        probe = self
        write = sink.write

        def probed_write(records, dead_letters, *args, **kwargs):
            ids = [r.mns.message_id for r in records] + [d.mns.message_id for d in dead_letters]
            probe.point("write")
            probe.begin("write")
            try:
                report = write(records, dead_letters, *args, **kwargs)
            except BaseException:
                probe.end("write")
                raise
            probe.end("write", ids, "written")
            probe.point("written")
            return report

        sink.write = probed_write
        if hasattr(sink, "on_object_stored"):  # object sinks: one object of the write is stored
            sink.on_object_stored = lambda path: probe.point("write_part")
        db = getattr(sink, "db", None)
        if db is not None and hasattr(db, "execute"):  # sqlite: rows written, not yet committed
            sink.db = _ProbedConnection(db, self)
        return sink


class _ProbedQueue:
    def __init__(self, inner: Any, probe: Probe):
        self._inner, self._probe = inner, probe

    @property
    def token(self):
        return self._inner.token

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def receive(self, max_messages: int, wait_seconds: int):
        p = self._probe
        p.point("receive")
        p.begin("receive")
        try:
            messages = self._inner.receive(max_messages, wait_seconds)
        except BaseException:
            p.end("receive")
            raise
        if messages and os.environ.get(SABOTAGE_VAR) == "delete_before_write":
            self._inner.delete([m.receipt_handle for m in messages])
        for m in messages:
            p.handles[m.receipt_handle] = m.meta.message_id
        p.end("receive", [m.meta.message_id for m in messages], "received")
        if messages:
            p.point("received")
        return messages

    def delete(self, handles: Sequence[str]):
        p = self._probe
        ids = [p.handles.get(h, h) for h in handles]
        p.point("delete")
        p.mark(ids, "deleting")
        p.begin("delete")
        try:
            outcome = self._inner.delete(handles)
        except BaseException:
            p.end("delete", ids, "written")
            raise
        p.end("delete", ids, None)
        p.point("deleted")
        return outcome


class _ProbedConnection:
    def __init__(self, inner: Any, probe: Probe):
        self._inner, self._probe = inner, probe

    def execute(self, sql: str, *args: Any):
        if sql.strip().upper() == "COMMIT":
            self._probe.point("write_part")
        return self._inner.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def install() -> Optional[Probe]:
    """Instrument shared.runtime's seams if the harness asked for it; otherwise do nothing."""
    phase_file, crash_at = os.environ.get(PHASE_FILE_VAR), parse_crash_at(os.environ.get(CRASH_AT_VAR))
    if not phase_file and not crash_at and not os.environ.get(SABOTAGE_VAR):
        return None
    import shared.platform as platform
    import shared.runtime as runtime

    probe = Probe(phase_file, crash_at)
    adapt = platform.adapt

    def probed_adapt(*args, **kwargs):
        probe.invoked()  # the handler is about to build its deadline from the platform's timeout
        return adapt(*args, **kwargs)

    platform.adapt = probed_adapt

    class ProbedRunFailed(platform.RunFailed):  # the handler and invoke_local import it after this
        def __init__(self, *args, **kwargs):
            probe.failed()
            super().__init__(*args, **kwargs)

    ProbedRunFailed.__name__ = ProbedRunFailed.__qualname__ = "RunFailed"
    platform.RunFailed = ProbedRunFailed
    open_queue, make_sink = runtime.DrainRuntime.open_queue, runtime.make_sink

    def probed_open_queue(self, message_type, token):
        return probe.wrap_queue(open_queue(self, message_type, token))

    def probed_make_sink(settings, credentials=None):
        return probe.wrap_sink(make_sink(settings, credentials))

    runtime.DrainRuntime.open_queue = probed_open_queue
    runtime.make_sink = probed_make_sink
    return probe


def read_phase(phase_text: Optional[str]) -> Optional[dict]:
    try:
        return json.loads(phase_text) if phase_text and phase_text.strip() else None
    except ValueError:
        return None


def classify(phase_text: Optional[str]) -> list[str]:
    """The phases a SIGKILL hit, from the phase file's last content."""
    doc = read_phase(phase_text)
    if doc is None or (doc.get("invoked_at") is None and not doc.get("calls") and not doc.get("messages")):
        return ["startup"]
    calls, messages = doc.get("calls", {}), doc.get("messages", {})
    hit = []
    if calls.get("receive"):
        hit.append("mid_receive")
    if messages.get("received"):
        hit.append("received_not_written")
    if calls.get("write"):
        hit.append("mid_write")
    if messages.get("written"):
        hit.append("between_write_and_delete")
    if calls.get("delete"):
        hit.append("mid_delete")
    return hit or ["between_batches"]
