"""MNS queues: visibility timeouts, receipt handles that change on every receive,
dequeue counts, long-poll waits — and the queue-level faults tests ask for:

- malformed receives (`malform_receives`): the next N BatchReceiveMessage answers
  are a 200 holding one message whose required field is empty or missing. That
  message is a snapshot of the first visible one under a handle that deletes
  nothing; the queue is left as it was (the message stays visible).
- failing deletes (`fail_deletes`): the next delete fails N of its handles with
  ReceiptHandleError and deletes the rest. A failed handle stops working (as an
  expired one does); its message stays in flight and comes back when its
  visibility timeout ends.
"""
from __future__ import annotations

import base64
import hashlib
import heapq
import itertools
import json
import random
import re
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

from ..exceptions import (
    BatchDeleteFailed,
    MessageNotExist,
    QueueNotExist,
    ReceiptHandleError,
    mns_invalid_argument,
)

MAX_BATCH = 16
MAX_WAIT_SECONDS = 30
MAX_VISIBILITY_TIMEOUT = 43200
MAX_BODY_BYTES = 65536
# The fields of a received message; any may be broken by `malform_receives`.
MESSAGE_FIELDS = ("MessageId", "ReceiptHandle", "MessageBodyMD5", "MessageBody", "EnqueueTime",
                  "NextVisibleTime", "FirstDequeueTime", "DequeueCount", "Priority")
MALFORM_MODES = ("empty", "missing")
# XML 1.0 cannot carry these characters at all, not even as references.
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_QUEUE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,255}$")


def now_ms(t: float) -> int:
    return int(t * 1000)


@dataclass
class Message:
    message_id: str
    body: str
    body_md5: str
    enqueue_time: float
    priority: int = 8
    dequeue_count: int = 0
    first_dequeue_time: float = 0.0
    next_visible: float = 0.0          # epoch seconds; visible once now >= it
    handle: str | None = None          # the only handle that currently works
    generation: int = 0                # bumps on every receive / visibility change


@dataclass(frozen=True)
class ReceivedMessage:
    """A snapshot rendered outside the lock."""

    message_id: str
    receipt_handle: str
    body: str
    body_md5: str
    enqueue_time: int
    next_visible_time: int
    first_dequeue_time: int
    dequeue_count: int
    priority: int
    broken: tuple | None = None        # (field, "empty" | "missing") of a malformed answer


@dataclass
class MnsQueue:
    name: str
    visibility_timeout: float
    cond: threading.Condition
    messages: "OrderedDict[str, Message]" = field(default_factory=OrderedDict)
    ready: deque = field(default_factory=deque)          # message ids believed visible
    inflight: list = field(default_factory=list)          # heap of (next_visible, seq, id, generation)
    handles: dict = field(default_factory=dict)           # current handle -> message id
    malformed: deque = field(default_factory=deque)      # (field, mode) for the next receives
    delete_failures: deque = field(default_factory=deque)  # handles to fail, for the next deletes
    redeliveries: dict = field(default_factory=dict)      # message id -> receives, once more than 1
    enqueued: int = 0
    received: int = 0
    redelivered: int = 0        # receives of a message received before
    deleted: int = 0
    delete_failed: int = 0      # handles a delete refused (injected or stale)
    malformed_served: int = 0
    # Most messages received and not yet deleted at once (MNS throttles a queue past 5,000 of
    # them as "abnormal consumption"); counted at each receive.
    undeleted_peak: int = 0


class QueueBackend:
    """All queues, guarded by one lock (each queue waits on its own condition)."""

    def __init__(self, default_visibility_timeout: float = 30.0, seed: int | None = 0,
                 clock: Callable[[], float] = time.time):
        self.default_visibility_timeout = float(default_visibility_timeout)
        self.clock = clock
        self._lock = threading.RLock()
        self._queues: dict[str, MnsQueue] = {}
        self._seq = itertools.count(1)
        # Handles and ids come from their own RNG so they never shift the fault sequence.
        self._rng = random.Random(None if seed is None else f"handles-{seed}")
        self._closed = False
        # (queue, numOfMessages, waitseconds, messages returned) of the latest valid receives, in
        # order; bounded, since a demo or bench emulator may serve receives for hours.
        self.receive_log: deque[tuple[str, int, float, int]] = deque(maxlen=100_000)

    # -- admin ------------------------------------------------------------------

    def create_queue(self, name: str, visibility_timeout: float | None = None) -> MnsQueue:
        if not _QUEUE_NAME.match(name):
            raise ValueError(f"invalid MNS queue name: {name!r}")
        if visibility_timeout is not None:
            _check_visibility_timeout(visibility_timeout)
        with self._lock:
            q = self._queues.get(name)
            if q is None:
                vt = self.default_visibility_timeout if visibility_timeout is None else visibility_timeout
                q = MnsQueue(name, float(vt), threading.Condition(self._lock))
                self._queues[name] = q
            elif visibility_timeout is not None:
                q.visibility_timeout = float(visibility_timeout)
            return q

    def delete_queue(self, name: str) -> None:
        """Remove a queue and its messages (as Alicom might): its requests then get QueueNotExist."""
        with self._lock:
            q = self._queues.pop(name)
            q.cond.notify_all()

    def set_visibility_timeout(self, name: str, seconds: float) -> None:
        """Change the queue's VisibilityTimeout; it applies to the next receives."""
        _check_visibility_timeout(seconds)
        with self._lock:
            self._get(name).visibility_timeout = float(seconds)

    def visibility_timeout(self, name: str) -> float:
        with self._lock:
            return self._get(name).visibility_timeout

    def malform_receives(self, name: str, field_name: str, mode: str = "empty", count: int = 1) -> None:
        if field_name not in MESSAGE_FIELDS:
            raise ValueError(f"field must be one of {', '.join(MESSAGE_FIELDS)}, not {field_name!r}")
        if mode not in MALFORM_MODES:
            raise ValueError(f"mode must be one of {', '.join(MALFORM_MODES)}, not {mode!r}")
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._get(name).malformed.extend([(field_name, mode)] * count)

    def fail_deletes(self, name: str, handles: int, times: int = 1) -> None:
        if handles < 1 or times < 0:
            raise ValueError("handles must be >= 1 and times >= 0")
        with self._lock:
            self._get(name).delete_failures.extend([handles] * times)

    def clear_faults(self, name: str) -> None:
        """Forget pending malformed receives and failing deletes."""
        with self._lock:
            q = self._get(name)
            q.malformed.clear()
            q.delete_failures.clear()

    def redeliveries(self, name: str) -> dict[str, int]:
        """Message id -> times received, for every message received more than once (deleted or not)."""
        with self._lock:
            return dict(self._get(name).redeliveries)

    def queue_names(self) -> list[str]:
        with self._lock:
            return list(self._queues)

    def has_queue(self, name: str) -> bool:
        with self._lock:
            return name in self._queues

    def enqueue(self, name: str, body: str) -> str:
        if not isinstance(body, str):
            raise TypeError("an MNS message body is a str")
        if not body:
            raise ValueError("MNS refuses empty message bodies")
        if _XML_FORBIDDEN.search(body):
            raise ValueError("message body holds characters XML cannot carry")
        if len(body.encode("utf-8")) > MAX_BODY_BYTES:
            raise ValueError(f"MNS message bodies are at most {MAX_BODY_BYTES} bytes")
        with self._lock:
            q = self._get(name)
            now = self.clock()
            seq = next(self._seq)
            mid = "%016X-%d-%X-%09d" % (self._rng.getrandbits(64), 1, now_ms(now), seq)
            md5 = hashlib.md5(body.encode("utf-8")).hexdigest().upper()
            q.messages[mid] = Message(mid, body, md5, now, next_visible=now)
            q.ready.append(mid)
            q.enqueued += 1
            q.cond.notify_all()
            return mid

    def state(self, name: str) -> dict:
        with self._lock:
            q = self._get(name)
            now = self.clock()
            inflight = sum(1 for m in q.messages.values() if m.next_visible > now)
            return {
                "visible": len(q.messages) - inflight,
                "in_flight": inflight,
                "deleted": q.deleted,
                "enqueued": q.enqueued,
                "received": q.received,
                "redelivered": q.redelivered,
                "delete_failed": q.delete_failed,
                "malformed_served": q.malformed_served,
                "undeleted_peak": q.undeleted_peak,
                "visibility_timeout": q.visibility_timeout,
            }

    def undeleted(self, name: str) -> int:
        """How many messages the queue still holds, visible or in flight: cheap, unlike `state`
        (which walks every message), for a caller that polls while a backlog drains."""
        with self._lock:
            return len(self._get(name).messages)

    def message_ids(self, name: str) -> list[str]:
        """Ids of the messages still in the queue, visible or in flight."""
        with self._lock:
            return list(self._get(name).messages)

    def open(self) -> None:
        with self._lock:
            self._closed = False

    def close(self) -> None:
        """Wake every long poll so a stopping server does not hang on them."""
        with self._lock:
            self._closed = True
            for q in self._queues.values():
                q.cond.notify_all()

    # -- MNS operations -----------------------------------------------------------

    def receive(self, name: str, count: int, wait_seconds: float) -> list[ReceivedMessage]:
        """Take up to `count` visible messages, long-polling up to `wait_seconds`."""
        if not 1 <= count <= MAX_BATCH:
            raise mns_invalid_argument(
                f"The value of numOfMessages should between 1 and {MAX_BATCH}.")
        if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
            raise mns_invalid_argument(
                f"The value of waitseconds should between 0 and {MAX_WAIT_SECONDS} seconds.")
        with self._lock:
            q = self._get(name)
            deadline = self.clock() + wait_seconds
            while True:
                now = self.clock()
                taken = self._malformed(q, now) if q.malformed else self._take(q, count, now)
                if taken or now >= deadline or self._closed:
                    break
                # Sleep until new work arrives or the next in-flight message reappears.
                timeout = deadline - now
                if q.inflight:
                    timeout = min(timeout, max(q.inflight[0][0] - now, 0.001))
                q.cond.wait(timeout)
            self.receive_log.append((name, count, wait_seconds, len(taken)))
            if not taken:
                raise MessageNotExist()
            return taken

    def peek(self, name: str, count: int) -> list[Message]:
        with self._lock:
            q = self._get(name)
            now = self.clock()
            out = [m for m in q.messages.values() if m.next_visible <= now][:count]
            if not out:
                raise MessageNotExist()
            return [Message(**vars(m)) for m in out]

    def delete(self, name: str, handle: str) -> None:
        with self._lock:
            q = self._get(name)
            if q.delete_failures:
                q.delete_failures.popleft()
                self._refuse(q, handle)
            self._delete_one(q, handle, self.clock())

    def batch_delete(self, name: str, handles: list[str]) -> None:
        if not handles:
            raise mns_invalid_argument("ReceiptHandles must hold at least one ReceiptHandle.")
        if len(handles) > MAX_BATCH:
            raise mns_invalid_argument(
                f"The count of ReceiptHandle should between 1 and {MAX_BATCH}.")
        with self._lock:
            q = self._get(name)
            now = self.clock()
            refuse = q.delete_failures.popleft() if q.delete_failures else 0
            failures = []
            for i, h in enumerate(handles):
                try:
                    if i < refuse:
                        self._refuse(q, h)
                    self._delete_one(q, h, now)
                except ReceiptHandleError as e:
                    failures.append((h, e.code, e.message))
            if failures:
                raise BatchDeleteFailed(failures)

    def change_visibility(self, name: str, handle: str, timeout: float) -> tuple[str, int]:
        if not 0 <= timeout <= MAX_VISIBILITY_TIMEOUT:
            raise mns_invalid_argument(
                f"The value of VisibilityTimeout should between 0 and {MAX_VISIBILITY_TIMEOUT} seconds.")
        with self._lock:
            q = self._get(name)
            now = self.clock()
            m = self._by_handle(q, handle, now)
            self._make_invisible(q, m, now + timeout)
            q.cond.notify_all()
            return m.handle, now_ms(m.next_visible)

    # -- internals ----------------------------------------------------------------

    def _get(self, name: str) -> MnsQueue:
        q = self._queues.get(name)
        if q is None:
            raise QueueNotExist(name)
        return q

    def _requeue_expired(self, q: MnsQueue, now: float) -> None:
        # Messages whose visibility ran out go back behind the ready ones.
        while q.inflight and q.inflight[0][0] <= now:
            _, _, mid, gen = heapq.heappop(q.inflight)
            m = q.messages.get(mid)
            if m is not None and m.generation == gen:
                q.ready.append(mid)

    def _malformed(self, q: MnsQueue, now: float) -> list[ReceivedMessage]:
        """One broken snapshot of the first visible message, or [] if none is visible.
        Nothing changes for the message; its snapshot's handle deletes nothing."""
        self._requeue_expired(q, now)
        m = next((q.messages[mid] for mid in q.ready
                  if mid in q.messages and q.messages[mid].next_visible <= now), None)
        if m is None:
            return []
        broken = q.malformed.popleft()
        q.malformed_served += 1
        ghost_handle = "1-" + base64.b64encode(b"malformed-" + self._rng.getrandbits(96).to_bytes(12, "big")).decode()
        return [ReceivedMessage(
            m.message_id, ghost_handle, m.body, m.body_md5, now_ms(m.enqueue_time),
            now_ms(now + q.visibility_timeout), now_ms(m.first_dequeue_time or now), m.dequeue_count + 1,
            m.priority, broken)]

    def _take(self, q: MnsQueue, count: int, now: float) -> list[ReceivedMessage]:
        self._requeue_expired(q, now)
        out = []
        while q.ready and len(out) < count:
            mid = q.ready.popleft()
            m = q.messages.get(mid)
            if m is None or m.next_visible > now:
                continue  # deleted, or a stale entry for a message already re-hidden
            m.dequeue_count += 1
            if not m.first_dequeue_time:
                m.first_dequeue_time = now
            self._make_invisible(q, m, now + q.visibility_timeout)
            q.received += 1
            if m.dequeue_count > 1:
                q.redelivered += 1
                q.redeliveries[mid] = m.dequeue_count
            out.append(ReceivedMessage(
                m.message_id, m.handle, m.body, m.body_md5, now_ms(m.enqueue_time),
                now_ms(m.next_visible), now_ms(m.first_dequeue_time), m.dequeue_count, m.priority))
        q.undeleted_peak = max(q.undeleted_peak, len(q.handles))
        return out

    def _make_invisible(self, q: MnsQueue, m: Message, until: float) -> None:
        """Hide `m` until `until` under a brand-new handle (old handles stop working)."""
        if m.handle is not None:
            q.handles.pop(m.handle, None)
        m.generation += 1
        m.next_visible = until
        m.handle = self._new_handle(m)
        q.handles[m.handle] = m.message_id
        heapq.heappush(q.inflight, (until, next(self._seq), m.message_id, m.generation))

    def _new_handle(self, m: Message) -> str:
        # Real handles are base64-like and may hold '+' and '/'.
        raw = b"%d-" % m.generation + self._rng.getrandbits(144).to_bytes(18, "big")
        return "1-" + base64.b64encode(raw).decode("ascii")

    def _by_handle(self, q: MnsQueue, handle: str, now: float) -> Message:
        mid = q.handles.get(handle)
        m = q.messages.get(mid) if mid is not None else None
        # A handle dies when the message is received again, deleted, or its visibility ends.
        if m is None or m.handle != handle or m.next_visible <= now:
            raise ReceiptHandleError(handle)
        return m

    def _delete_one(self, q: MnsQueue, handle: str, now: float) -> None:
        try:
            m = self._by_handle(q, handle, now)
        except ReceiptHandleError:
            q.delete_failed += 1
            raise
        del q.messages[m.message_id]
        q.handles.pop(handle, None)
        q.deleted += 1

    def _refuse(self, q: MnsQueue, handle: str) -> None:
        """An injected delete failure: the handle stops working, its message stays in flight."""
        mid = q.handles.pop(handle, None)
        m = q.messages.get(mid) if mid is not None else None
        if m is not None and m.handle == handle:
            m.handle = None
        q.delete_failed += 1
        raise ReceiptHandleError(handle)


def _check_visibility_timeout(seconds: float) -> None:
    if not 0 <= seconds <= MAX_VISIBILITY_TIMEOUT:
        raise ValueError(f"visibility_timeout must be from 0 to {MAX_VISIBILITY_TIMEOUT} seconds, not {seconds!r}")


def receipt_body(payload: dict) -> str:
    """The body Alicom puts in MNS: base64 of one UTF-8 JSON object."""
    raw = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return base64.b64encode(raw).decode("ascii")

