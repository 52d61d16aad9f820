"""MNS queues: visibility timeouts, receipt handles that change on every receive,
dequeue counts, long-poll waits."""
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


@dataclass
class MnsQueue:
    name: str
    visibility_timeout: float
    cond: threading.Condition
    messages: "OrderedDict[str, Message]" = field(default_factory=OrderedDict)
    ready: deque = field(default_factory=deque)          # message ids believed visible
    inflight: list = field(default_factory=list)          # heap of (next_visible, seq, id, generation)
    handles: dict = field(default_factory=dict)           # current handle -> message id
    enqueued: int = 0
    received: int = 0
    deleted: int = 0


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

    # -- admin ------------------------------------------------------------------

    def create_queue(self, name: str, visibility_timeout: float | None = None) -> MnsQueue:
        if not _QUEUE_NAME.match(name):
            raise ValueError(f"invalid MNS queue name: {name!r}")
        with self._lock:
            q = self._queues.get(name)
            if q is None:
                vt = self.default_visibility_timeout if visibility_timeout is None else visibility_timeout
                q = MnsQueue(name, float(vt), threading.Condition(self._lock))
                self._queues[name] = q
            elif visibility_timeout is not None:
                q.visibility_timeout = float(visibility_timeout)
            return q

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
                "visibility_timeout": q.visibility_timeout,
            }

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
                taken = self._take(q, count, now)
                if taken or now >= deadline or self._closed:
                    break
                # Sleep until new work arrives or the next in-flight message reappears.
                timeout = deadline - now
                if q.inflight:
                    timeout = min(timeout, max(q.inflight[0][0] - now, 0.001))
                q.cond.wait(timeout)
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
            failures = []
            for h in handles:
                try:
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

    def _take(self, q: MnsQueue, count: int, now: float) -> list[ReceivedMessage]:
        # Messages whose visibility ran out go back behind the ready ones.
        while q.inflight and q.inflight[0][0] <= now:
            _, _, mid, gen = heapq.heappop(q.inflight)
            m = q.messages.get(mid)
            if m is not None and m.generation == gen:
                q.ready.append(mid)
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
            out.append(ReceivedMessage(
                m.message_id, m.handle, m.body, m.body_md5, now_ms(m.enqueue_time),
                now_ms(m.next_visible), now_ms(m.first_dequeue_time), m.dequeue_count, m.priority))
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
        m = self._by_handle(q, handle, now)
        del q.messages[m.message_id]
        q.handles.pop(handle, None)
        q.deleted += 1


def receipt_body(payload: dict) -> str:
    """The body Alicom puts in MNS: base64 of one UTF-8 JSON object."""
    raw = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return base64.b64encode(raw).decode("ascii")

