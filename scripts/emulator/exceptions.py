"""Service error codes, one class per wire protocol.

Models and request handlers raise these; `responses.py` renders them. Each
carries the HTTP status, the service's error code and a non-empty message.
"""
from __future__ import annotations


class EmulatorError(Exception):
    """Base: an error the emulator answers with (never a crash)."""

    status = 400
    code = "InternalError"

    def __init__(self, code: str | None = None, message: str = "", status: int | None = None):
        super().__init__(message or code or self.code)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.message = message or self.code


# --- MNS (XML errors) -------------------------------------------------------

class MnsError(EmulatorError):
    """An MNS error, rendered as `<Error><Code>..</Code>..</Error>` XML."""


class QueueNotExist(MnsError):
    def __init__(self, name: str):
        super().__init__("QueueNotExist", "The queue name you provided is not exist.", 404)
        self.queue_name = name


class MessageNotExist(MnsError):
    def __init__(self):
        super().__init__("MessageNotExist", "Message not exist.", 404)


class ReceiptHandleError(MnsError):
    def __init__(self, handle: str):
        super().__init__("ReceiptHandleError", "The receipt handle you provide is not valid.", 400)
        self.handle = handle


class BatchDeleteFailed(MnsError):
    """Some handles of a BatchDeleteMessage failed; the rest were deleted.

    `failures` is a list of (receipt_handle, error_code, error_message).
    """

    def __init__(self, failures: list[tuple[str, str, str]]):
        # Real MNS answers a partial batch failure with 404 and an <Errors> body.
        super().__init__("ReceiptHandleError", "Some receipt handles are not valid.", 404)
        self.failures = failures


def mns_invalid_argument(message: str) -> MnsError:
    return MnsError("InvalidArgument", message, 400)


# --- POP RPC (Dybaseapi, Dysmsapi: JSON errors) -----------------------------

class RpcError(EmulatorError):
    """A POP RPC error, rendered as `{"Code","Message","RequestId","HostId"}`."""


# --- Function Compute 2.0 ----------------------------------------------------

class FcError(EmulatorError):
    """Rendered as `{"ErrorCode","ErrorMessage"}` with an x-fc-request-id header."""


# --- AWS Lambda --------------------------------------------------------------

class LambdaError(EmulatorError):
    """Rendered as `{"Type","message"}` with an x-amzn-ErrorType header."""

    def __init__(self, code: str, message: str, status: int = 400, error_type: str = "User"):
        super().__init__(code, message, status)
        self.error_type = error_type


# --- Throttling, as each service answers it ------------------------------------

# service -> {code: (HTTP status, message)}; the first code is the service's default.
# POP APIs answer flow control with 400 (Throttling.*) or 503; MNS with 429 or 503.
THROTTLING = {
    "mns": {
        "QpsLimitExceeded": (429, "The QPS of your requests exceeds the limit."),
        "TooManyRequests": (429, "Too many requests, please try again later."),
        "ServiceUnavailable": (503, "The service is unavailable temporarily, please try again later."),
    },
    "rpc": {
        "Throttling.User": (400, "Request was denied due to user flow control."),
        "Throttling": (400, "Request was denied due to request throttling."),
        "Throttling.Api": (400, "Request was denied due to api flow control."),
        "ServiceUnavailable": (503, "The request has failed due to a temporary failure of the server."),
    },
    "fc": {"ResourceThrottled": (429, "Request was throttled.")},
    "lambda": {"TooManyRequestsException": (429, "Rate exceeded")},
}
LEGACY_THROTTLE_STATUS = 429   # status of a throttle fault that names no code (kept for old callers)


def throttling_error(service: str, code: str | None = None, status: int | None = None) -> EmulatorError:
    """The service's throttling answer for `code` (None or a code it does not use: its default).

    The status is the code's own unless `status` overrides it; with neither a known code
    nor a status, 429.
    """
    table = THROTTLING[service]
    known = code in table
    if not known:
        code = next(iter(table))
    real_status, message = table[code]
    if status is None:
        status = real_status if known else LEGACY_THROTTLE_STATUS
    return EmulatorError(code, message, status)
