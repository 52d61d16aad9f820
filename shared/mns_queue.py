"""One Alicom MNS queue, read with aliyun-mns-sdk (module `mns`).

The SDK object is not thread-safe: each consumer thread owns one `MnsQueue`. Bodies are
left undecoded (`set_encoding(False)`): with SDK decoding on, a single body with bad
base64 fails the whole batch, so one poison message would block every message received
with it. We decode each body ourselves (shared/decode.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from mns.account import Account
from mns.mns_exception import MNSClientException, MNSServerException

from shared.records import MnsMeta
from shared.settings import check_endpoint
from shared.tokens import MnsToken

MAX_BATCH = 16

# Codes after which the token must be replaced (no dedicated "token expired" code exists).
AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "SecurityTokenExpired",
              "InvalidSecurityToken", "SecurityTokenMalformed", "Unauthorized"}
# Codes that say the request itself can never succeed as configured.
FATAL_CODES = {"QueueNotExist", "InvalidArgument", "MessageNotExist", "TimeExpired"}
# What to tell the operator when retrying cannot help until something outside is fixed.
HINTS = {
    "TimeExpired": "the request's Date is more than 15 minutes off MNS's clock: this host's clock is off "
                   "(check its time synchronisation)",
}


class QueueError(Exception):
    """A queue call failed. `auth` says the token should be replaced; `code` is MNS's code."""

    def __init__(self, operation: str, code: str, auth: bool = False, fatal: bool = False):
        hint = HINTS.get(code)
        super().__init__(f"MNS {operation} failed: {code}" + (f": {hint}" if hint else ""))
        self.code = code
        self.auth = auth
        self.fatal = fatal


@dataclass(frozen=True)
class ReceivedMessage:
    receipt_handle: str = field(repr=False)
    body: str = field(repr=False)
    meta: MnsMeta = MnsMeta()


@dataclass
class DeleteOutcome:
    deleted: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # receipt handle -> error code
    calls: int = 0


def _error(operation: str, exc: Exception) -> QueueError:
    if isinstance(exc, MNSServerException):
        code = str(exc.type or "Unknown")
        return QueueError(operation, code, auth=code in AUTH_CODES, fatal=code in FATAL_CODES)
    if isinstance(exc, MNSClientException):
        return QueueError(operation, str(getattr(exc, "type", "") or "NetworkError"))
    return QueueError(operation, type(exc).__name__)


class MnsQueue:
    """Receive and delete in batches of up to 16 on one queue with one token."""

    def __init__(self, endpoint: str, queue_name: str, token: MnsToken, timeout: float = 10.0):
        check_endpoint(endpoint, "ALICOM_MNS_ENDPOINT")  # https except loopback
        self.token = token
        self.queue_name = queue_name
        self.account = Account(endpoint.rstrip("/"), token.access_key_id, token.access_key_secret, token.security_token)
        self.queue = self.account.get_queue(queue_name)
        self.queue.set_encoding(False)
        self.timeout = None
        self.set_timeout(timeout)

    def set_timeout(self, seconds: float) -> None:
        """Socket timeout for the next calls (the SDK reconnects, so change it rarely)."""
        seconds = max(0.1, float(seconds))  # a last delete may have only a fraction of a second left
        if self.timeout is None or abs(seconds - self.timeout) > 0.25:
            self.account.mns_client.set_connection_timeout(seconds)
            self.timeout = seconds

    def receive(self, max_messages: int, wait_seconds: int) -> list[ReceivedMessage]:
        """Up to `max_messages` (<= 16); [] when the queue has none (after the long poll)."""
        try:
            messages = self.queue.batch_receive_message(max(1, min(MAX_BATCH, max_messages)), int(wait_seconds))
        except MNSServerException as exc:
            if exc.type == "MessageNotExist":
                return []
            raise _error("BatchReceiveMessage", exc) from None
        except Exception as exc:  # network errors, malformed answers
            raise _error("BatchReceiveMessage", exc) from None
        out = []
        for m in messages:
            body = m.message_body
            if isinstance(body, (bytes, bytearray)):
                body = bytes(body).decode("utf-8", "surrogateescape")
            out.append(ReceivedMessage(
                receipt_handle=m.receipt_handle,
                body=body,
                meta=MnsMeta(message_id=m.message_id, enqueue_time=int(m.enqueue_time),
                             dequeue_count=int(m.dequeue_count), first_dequeue_time=int(m.first_dequeue_time)),
            ))
        return out

    def delete(self, handles: Sequence[str]) -> DeleteOutcome:
        """Batch-delete; per-handle failures are reported, not raised (they come back and are deduplicated)."""
        outcome = DeleteOutcome()
        for start in range(0, len(handles), MAX_BATCH):
            chunk = list(handles[start:start + MAX_BATCH])
            outcome.calls += 1
            try:
                self.queue.batch_delete_message(chunk)
                outcome.deleted += len(chunk)
            except MNSServerException as exc:
                if exc.sub_errors:
                    failed = {e.get("ReceiptHandle", ""): e.get("ErrorCode", "Unknown") for e in exc.sub_errors}
                    outcome.failed.update(failed)
                    outcome.deleted += len([h for h in chunk if h not in failed])
                else:
                    raise _error("BatchDeleteMessage", exc) from None
            except Exception as exc:
                raise _error("BatchDeleteMessage", exc) from None
        return outcome
