"""What the drain needs from a receipt queue, free of any SDK: the `Queue` protocol and its values.

`shared/mns_queue.py` implements it with the MNS SDK; the drain and the tests' own queues
depend only on this module, so importing the drain never loads the SDK.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Protocol, Sequence

import msgspec

from shared.records import MnsMeta
from shared.structs import repr_hiding

if TYPE_CHECKING:
    from shared.tokens import MnsToken

MAX_BATCH = 16  # messages per BatchReceiveMessage / handles per BatchDeleteMessage
# MNS throttles a queue holding more received-but-undeleted messages than this ("abnormal
# consumption"). All runs draining one queue stay within UNDELETED_BUDGET, a fifth below it for
# what the budget cannot see (deletes that failed, visibility that ran out before a delete).
UNDELETED_LIMIT = 5000
UNDELETED_BUDGET = 4000
# What one run holds per queue besides its consumers' batches in flight: the buffer filling, and
# up to two more buffers' worth written and waiting for their deletes (shared/drain.py coalesce_cap).
BUFFERS_PER_RUN = 3


def undeleted_footprint(runs: int, concurrency: int) -> int:
    """Most messages `runs` runs hold received and undeleted in one queue at the smallest buffer
    (one batch): each run's `concurrency` batches in flight plus BUFFERS_PER_RUN buffers of one."""
    return runs * (concurrency + BUFFERS_PER_RUN) * MAX_BATCH


class QueueError(Exception):
    """A queue call failed. `code` is the service's code; the flags say what the caller may do.

    auth: the token should be replaced (then the call tried again);
    fatal: the call can never succeed as configured (retrying only wastes the budget);
    throttled: the service asked us to slow down (back off, keep trying within the budget).
    """

    def __init__(self, operation: str, code: str, auth: bool = False, fatal: bool = False,
                 throttled: bool = False, hint: Optional[str] = None):
        super().__init__(f"MNS {operation} failed: {code}" + (f": {hint}" if hint else ""))
        self.code = code
        self.auth = auth
        self.fatal = fatal
        self.throttled = throttled


class ReceivedMessage(msgspec.Struct, frozen=True):
    receipt_handle: str
    body: str  # phone numbers inside: never in a repr
    meta: MnsMeta = msgspec.field(default_factory=MnsMeta)

    __repr__ = repr_hiding("receipt_handle", "body")


class DeleteOutcome(msgspec.Struct):
    deleted: int = 0
    failed: dict[str, str] = msgspec.field(default_factory=dict)  # receipt handle -> error code
    calls: int = 0


class Queue(Protocol):
    """One receipt queue read with one token; not shared between threads."""

    token: "MnsToken"

    def receive(self, max_messages: int, wait_seconds: int) -> list[ReceivedMessage]:
        """Up to `max_messages` (<= MAX_BATCH); [] when the queue had none within the wait."""

    def delete(self, handles: Sequence[str]) -> DeleteOutcome:
        """Delete by receipt handle; per-handle failures are reported, not raised."""

    def set_timeout(self, seconds: float) -> None:
        """Socket timeout of the next calls."""


QueueOpener = Callable[[str, "MnsToken"], Queue]
