"""State and semantics of the emulated services (no wire formats here), one module
per API as moto keeps one `models.py` per service:

- `queues`: MNS queues — visibility timeouts, receipt handles that change on every
  receive, dequeue counts, long-poll waits, and the queue-level faults.
- `tokens`: the temporary credentials QueryTokenForMnsQueue hands out, each scoped
  to one message type.
- `stats`: request counts per API action.
- `send_records`: the send records QuerySendDetails pages through.
- `functions`: Python callables standing in for FC / Lambda functions.
- `backend`: `EmulatorBackend`, everything one emulator holds.
"""
from .backend import EmulatorBackend, RoleCredentials, RpcRefusal
from .functions import FunctionRegistry
from .queues import (
    MALFORM_MODES,
    MAX_BATCH,
    MAX_BODY_BYTES,
    MAX_VISIBILITY_TIMEOUT,
    MAX_WAIT_SECONDS,
    MESSAGE_FIELDS,
    Message,
    MnsQueue,
    QueueBackend,
    ReceivedMessage,
    now_ms,
    receipt_body,
)
from .send_records import SendDetailsRefusal, SendRecord, SendRecordStore
from .stats import FUNCTION_ACTIONS, MNS_ACTIONS, RPC_ACTIONS, RequestStats
from .tokens import TokenGrant, TokenRefusal, TokenRequest, TokenStore

__all__ = [
    "EmulatorBackend", "RoleCredentials", "RpcRefusal", "FunctionRegistry", "MAX_BATCH", "MAX_BODY_BYTES",
    "MAX_VISIBILITY_TIMEOUT", "MAX_WAIT_SECONDS", "MALFORM_MODES", "MESSAGE_FIELDS", "Message", "MnsQueue",
    "QueueBackend",
    "ReceivedMessage", "now_ms", "receipt_body", "SendDetailsRefusal", "SendRecord", "SendRecordStore",
    "FUNCTION_ACTIONS", "MNS_ACTIONS", "RPC_ACTIONS", "RequestStats", "TokenGrant", "TokenRefusal", "TokenRequest",
    "TokenStore",
]
