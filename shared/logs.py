"""Structured JSON logs (Powertools Logger) that never carry a secret or a full phone number.

Invariant 6 is enforced where every line passes: the formatter. Known secret values
(AccessKeys, STS tokens) are registered as they are loaded and replaced on output;
anything that looks like a phone number is masked to its first 3 and last 2 digits.
"""
from __future__ import annotations

import re
import threading
from typing import Iterable, Optional

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

SERVICE = "alicom-drain"

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
