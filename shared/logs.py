"""Structured JSON logs (Powertools Logger) that never carry a secret or a full phone number.

Invariant 6 is enforced where every line passes: the formatter. Known secret values
(AccessKeys, STS tokens) are registered as they are loaded and replaced on output;
anything that looks like a phone number is masked to its first 3 and last 2 digits.
"""
from __future__ import annotations

import logging
import re
import threading
from typing import Iterable, Optional

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

SERVICE = "alicom-drain"

# SDK loggers that print request headers (signatures, STS tokens) at DEBUG. Our redaction
# only sees our own log lines, so these never go below INFO, whatever the root level is.
for _name in ("botocore", "boto3", "urllib3", "s3transfer", "aliyunsdkcore", "oss2", "tablestore"):
    _sdk_logger = logging.getLogger(_name)
    if _sdk_logger.level == logging.NOTSET or _sdk_logger.level < logging.INFO:
        _sdk_logger.setLevel(logging.INFO)

# Mainland mobiles (optionally +86/86), and international numbers written with a "+".
# The look-arounds keep epoch-millisecond timestamps and ids from being mistaken for phones.
PHONE_RE = re.compile(r"(?<![\w.])(?:\+?86)?1[3-9]\d{9}(?![\w.])|(?<![\w.])\+\d{7,15}(?![\w.])")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_re: Optional[re.Pattern] = None


def register_secret(*values: Optional[str]) -> None:
    """Never print these values (credentials, tokens, signatures)."""
    global _secret_re
    with _secrets_lock:
        added = {v for v in values if v and len(v) >= 6} - _secrets
        if added:
            _secrets.update(added)
            # Longest first, so a secret containing another is replaced whole.
            _secret_re = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))


def mask_phone(text: str) -> str:
    return PHONE_RE.sub(lambda m: _mask(m.group(0)), text)


def _mask(number: str) -> str:
    digits = number
    return digits[:-8] + "******" + digits[-2:] if len(digits) > 8 else "***"


def redact(text: str) -> str:
    pattern = _secret_re
    if pattern is not None:
        text = pattern.sub("***", text)
    return mask_phone(text)


class RedactingFormatter(LambdaPowertoolsFormatter):
    def format(self, record) -> str:  # noqa: A003 - logging API name
        return redact(super().format(record))


_loggers: dict[str, Logger] = {}


def get_logger(name: str = SERVICE) -> Logger:
    """One Powertools Logger per service name, with the redacting formatter."""
    if name not in _loggers:
        _loggers[name] = Logger(service=name, logger_formatter=RedactingFormatter())
    return _loggers[name]


def secrets_in(text: str, candidates: Iterable[str]) -> list[str]:
    """Which of `candidates` occur in `text` (for tests and the chaos harness)."""
    return [c for c in candidates if c and c in text]


# -- correlation id: the platform's request id on every line of an invocation -------------

# What Powertools' inject_lambda_context reads from the context; an FC context has none of it.
LAMBDA_CONTEXT_FIELDS = ("function_name", "memory_limit_in_mb", "invoked_function_arn", "aws_request_id")


def is_lambda_context(context: object) -> bool:
    """A real Lambda context (the decorator would raise AttributeError on anything else)."""
    return (context is not None and callable(getattr(context, "get_remaining_time_in_millis", None))
            and all(hasattr(context, name) for name in LAMBDA_CONTEXT_FIELDS))


def with_lambda_context(logger: Logger):
    """Decorate a handler: Powertools' inject_lambda_context on Lambda (function name, ARN,
    memory, cold start; keys cleared per invocation), a plain call on FC and locally."""
    import functools

    def wrap(handler):
        decorated = logger.inject_lambda_context(handler, clear_state=True)

        @functools.wraps(handler)
        def call(event, context):
            return (decorated if is_lambda_context(context) else handler)(event, context)

        return call

    return wrap


def bind_invocation(logger: Logger, invocation) -> None:
    """Our adapter for every platform: correlation_id = the request id (FC's or Lambda's)."""
    logger.set_correlation_id(invocation.request_id)
    logger.append_keys(request_id=invocation.request_id, platform=invocation.platform, trigger=invocation.trigger)
