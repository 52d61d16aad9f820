"""What the AWS sinks (s3, dynamodb) share: boto3 clients and the reading of botocore errors.

Clients have botocore's retries off (one attempt each): the sink retries itself, inside
the write's deadline (shared/sinks/calls.py). Throttling, 5xx answers and connection or
timeout errors are retried; other 4xx answers are final.
"""
from __future__ import annotations

from typing import Any, Optional

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ChecksumError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    ResponseStreamingError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from shared.sinks.calls import CONNECT_TIMEOUT, DEFAULT_ATTEMPT, ClientsByTimeout, Timeouts

# Error codes AWS services answer for throttling or a passing fault (botocore's standard
# retry mode retries the same ones).
RETRYABLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled", "SlowDown",
    "PriorRequestNotComplete", "TransactionInProgressException", "RequestTimeout",
    "RequestTimeoutException", "InternalError", "InternalServerError", "InternalFailure",
    "ServiceUnavailable",
})
# Transport errors worth another attempt: refused or timed-out connections, timeouts while
# reading, a body cut short, a response that arrived damaged.
RETRYABLE_ERRORS = (BotoConnectionError, HTTPClientError, IncompleteReadError, ResponseStreamingError, ChecksumError)


def aws_client(service: str, *, region: Optional[str] = None, endpoint_url: Optional[str] = None,
               timeouts: Timeouts = Timeouts(CONNECT_TIMEOUT, 30.0), max_attempts: int = 5,
               session: Optional[boto3.session.Session] = None, **credentials: Any):
    """A boto3 client with bounded timeouts; `max_attempts=1` turns botocore's retries off.
    `credentials` only for tests and tools (the functions use the role's)."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},  # attempts, first one included
        connect_timeout=timeouts.connect,
        read_timeout=timeouts.read,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    # A session per client unless given one: boto3's default session is not safe to share across threads.
    session = session or boto3.session.Session()
    return session.client(service, region_name=region, endpoint_url=endpoint_url, config=config, **credentials)


def aws_clients(service: str, *, region: Optional[str] = None, endpoint_url: Optional[str] = None,
                **credentials: Any) -> ClientsByTimeout:
    """Clients of one service without botocore's retries, one per attempt budget step.

    The first (for an attempt without deadline) is built now, so a bad region or endpoint
    fails at start-up rather than at the first write."""
    session = boto3.session.Session()  # shared by the clients: ClientsByTimeout builds one at a time

    def build(timeouts: Timeouts):
        return aws_client(service, region=region, endpoint_url=endpoint_url, timeouts=timeouts, max_attempts=1,
                          session=session, **credentials)

    clients = ClientsByTimeout(build)
    clients.for_attempt(DEFAULT_ATTEMPT)
    return clients


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return (exc.response.get("Error") or {}).get("Code") or "Unknown"
    return type(exc).__name__


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
        return status == 429 or status >= 500 or error_code(exc) in RETRYABLE_CODES
    return isinstance(exc, RETRYABLE_ERRORS)


def describe(exc: BaseException) -> str:
    """`<code> (HTTP n)` for a service answer, the exception's class for a transport error.

    Never the service's message or botocore's text: those can carry request details."""
    if isinstance(exc, ClientError):
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode", "?")
        return f"{error_code(exc)} (HTTP {status})"
    return type(exc).__name__


def service_message(exc: BaseException, limit: int = 200) -> str:
    """The service's own message for a refused item, cut short (stored with its dead letter)."""
    if isinstance(exc, ClientError):
        return str((exc.response.get("Error") or {}).get("Message") or "")[:limit]
    return ""


def settings_error(variable: str, detail: str) -> Exception:
    from shared.settings import SettingsError

    return SettingsError(f"invalid settings: {variable}: {detail}")
