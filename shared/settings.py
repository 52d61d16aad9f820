"""Settings from environment variables, validated once per container.

Every variable the functions read is declared here, once: the templates (`template.yml`,
`s.yaml`) are checked against this list by the tests. A missing or malformed variable
raises `SettingsError` at start-up, naming the variable and the form it expects.

Validation is msgspec's: a frozen Struct whose field names map to the variables, with
range and pattern constraints as `Meta`. msgspec builds the Struct in well under a
millisecond, where a pydantic model of the same fields costs tens of milliseconds at
cold start (issue 6: our modules may add at most 50 ms to the SDKs' import time).
"""
from __future__ import annotations

import math
import os
import re
from typing import Annotated, Any, Mapping, Optional
from urllib.parse import urlparse

import msgspec
from msgspec import Meta

from shared.message_types import KNOWN_MESSAGE_TYPES, MESSAGE_TYPES
from shared.queues import BUFFERS_PER_RUN, MAX_BATCH, UNDELETED_BUDGET, UNDELETED_LIMIT, undeleted_footprint
from shared.sinks import sink_names, sink_needs

SINKS = sink_names()  # shared/sinks/__init__.py's table
DEFAULT_MNS_ENDPOINT = "https://1943695596114318.mns.cn-hangzhou.aliyuncs.com/"
DEFAULT_TOKEN_ENDPOINT = "https://dybaseapi.aliyuncs.com"
DEFAULT_SMS_ENDPOINT = "https://dysmsapi.aliyuncs.com"

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and the expected form."""


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def check_endpoint(url: str) -> str:
    """Endpoints are URLs; plain HTTP only for loopback (docs/ARCHITECTURE.md, invariant 7).
    The caller names the setting in its own error (Settings does: `_missing(variable, ...)`)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"expected a URL like https://host[:port], got {url!r}")
    if parsed.scheme == "http" and not is_loopback(url):
        raise ValueError(f"plain http is allowed only for loopback; use https:// for {parsed.hostname}")
    return url.rstrip("/")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


# Each field's alias is the environment variable it comes from; `ENV_FORMS` says the
# expected form for error messages.
ENV_FORMS = {
    "ALICOM_MESSAGE_TYPES": "comma-separated message types from " + ", ".join(KNOWN_MESSAGE_TYPES),
    "ALICOM_UID": "your Alibaba Cloud account id (digits), used to name queues Alicom-Queue-<uid>-<type>",
    "ALICOM_QUEUE_NAMES": "comma-separated Type=QueueName pairs, e.g. SmsReport=Alicom-Queue-123-SmsReport",
    "ALICOM_MNS_ENDPOINT": "https URL of the Alicom MNS endpoint",
    "ALICOM_TOKEN_ENDPOINT": "https URL of the Dybaseapi endpoint",
    "ALICOM_SMS_ENDPOINT": "https URL of the Dysmsapi endpoint",
    "ALICOM_REGION": "an Alibaba Cloud region id such as cn-hangzhou",
    "ALICOM_OWNER_ID": "the numeric account id passed as OwnerId to QueryTokenForMnsQueue (resellers and "
                       "sub-accounts whose queues belong to another account; leave unset otherwise)",
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "the AccessKey id (or the function role's STS key id)",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "the AccessKey secret",
    "ALICOM_CREDENTIALS_SECRET": "AWS Secrets Manager secret id/ARN holding {\"access_key_id\",\"access_key_secret\"}",
    "ALICOM_CREDENTIALS_PARAMETER": "SSM SecureString parameter name holding the same JSON",
    "SINK": "one of " + ", ".join(SINKS),
    "SINK_PATH": "a directory (file sink) or database file path (sqlite sink)",
    "SINK_BUCKET": "a bucket name (s3, oss)",
    "SINK_TABLE": "a table name (dynamodb, tablestore)",
    "SINK_ENDPOINT": "the sink's https URL (oss: e.g. https://oss-cn-hangzhou.aliyuncs.com; tablestore: the "
                     "instance's endpoint)",
    "TABLESTORE_INSTANCE": "the Tablestore instance name (tablestore)",
    "DRAIN_MAX_MESSAGES": "a whole number >= 1",
    "DRAIN_WAIT_SECONDS": "a whole number of seconds from 0 to 30 (MNS long poll)",
    "DRAIN_CONCURRENCY": "a whole number from 1 to 64",
    "DRAIN_COALESCE_SECONDS": "seconds from 0 to 60, well below the queue's visibility timeout "
                              "(0 writes every batch at once)",
    "TOKEN_REFRESH_BUFFER_SECONDS": "a whole number of seconds >= 0",
    "FC_REGION": "the region Function Compute runs the function in (FC sets it)",
    "DRAIN_MAX_WORKERS": "a whole number from 1 to 64: runs of the drain at once when a backlog fans out "
                         "(1: never fan out); the function's reserved concurrency should equal it",
    "DRAIN_BACKLOG_SECONDS": "a whole number of seconds from 0 to 86400: a full receive whose oldest message "
                             "waited longer than this means the queue is behind (use the schedule's period)",
    "DRAIN_INVOKE_ENDPOINT": "https URL of the invoke API the drain starts its workers through (default: the "
                             "platform's own; http only for loopback)",
}


# The variable each field comes from; ENV_FORMS says the expected form for error messages.
VARIABLES = {
    "message_types": "ALICOM_MESSAGE_TYPES",
    "uid": "ALICOM_UID",
    "queue_names_raw": "ALICOM_QUEUE_NAMES",
    "mns_endpoint": "ALICOM_MNS_ENDPOINT",
    "token_endpoint": "ALICOM_TOKEN_ENDPOINT",
    "sms_endpoint": "ALICOM_SMS_ENDPOINT",
    "region": "ALICOM_REGION",
    "owner_id": "ALICOM_OWNER_ID",
    "access_key_id": "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "access_key_secret": "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "security_token": "ALIBABA_CLOUD_SECURITY_TOKEN",
    "credentials_secret": "ALICOM_CREDENTIALS_SECRET",
    "credentials_parameter": "ALICOM_CREDENTIALS_PARAMETER",
    "sink": "SINK",
    "sink_path": "SINK_PATH",
    "sink_bucket": "SINK_BUCKET",
    "sink_prefix": "SINK_PREFIX",
    "sink_table": "SINK_TABLE",
    "sink_endpoint": "SINK_ENDPOINT",
    "sink_region": "SINK_REGION",
    "sink_sse": "SINK_SSE",
    "sink_kms_key_id": "SINK_KMS_KEY_ID",
    "sink_ttl_days": "SINK_TTL_DAYS",
    "tablestore_instance": "TABLESTORE_INSTANCE",
    "max_messages": "DRAIN_MAX_MESSAGES",
    "wait_seconds": "DRAIN_WAIT_SECONDS",
    "safety_margin_seconds": "DRAIN_SAFETY_MARGIN_SECONDS",
    "concurrency": "DRAIN_CONCURRENCY",
    "mns_timeout_seconds": "MNS_TIMEOUT_SECONDS",
    "coalesce_seconds": "DRAIN_COALESCE_SECONDS",
    "token_refresh_buffer_seconds": "TOKEN_REFRESH_BUFFER_SECONDS",
    "max_workers": "DRAIN_MAX_WORKERS",
    "backlog_seconds": "DRAIN_BACKLOG_SECONDS",
    "invoke_endpoint": "DRAIN_INVOKE_ENDPOINT",
    "fc_region": "FC_REGION",
    "reconcile_grace_seconds": "RECONCILE_GRACE_SECONDS",
    "reconcile_qps": "RECONCILE_QPS",
    "reconcile_max_targets": "RECONCILE_MAX_TARGETS",
    "reconcile_lookback_days": "RECONCILE_LOOKBACK_DAYS",
    "reconcile_concurrency": "RECONCILE_CONCURRENCY",
    "reconcile_max_attempts": "RECONCILE_MAX_ATTEMPTS",
    "reconcile_backoff_seconds": "RECONCILE_BACKOFF_SECONDS",
    "reconcile_backoff_max_seconds": "RECONCILE_BACKOFF_MAX_SECONDS",
    "reconcile_safety_margin_seconds": "RECONCILE_SAFETY_MARGIN_SECONDS",
    "reconcile_timeout_seconds": "RECONCILE_TIMEOUT_SECONDS",
}
SECRET_VARIABLES = frozenset({"ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
                              "ALIBABA_CLOUD_SECURITY_TOKEN"})
_CSV_VARIABLES = ("ALICOM_MESSAGE_TYPES", "ALICOM_QUEUE_NAMES")
_ENDPOINT_FIELDS = ("mns_endpoint", "token_endpoint", "sms_endpoint", "sink_endpoint", "invoke_endpoint")

_REGION = Meta(pattern=r"^[a-z]{2,}-[a-z0-9-]+$")


class Settings(msgspec.Struct, frozen=True, kw_only=True, rename=VARIABLES):
    """Everything the drain and reconcile functions are configured with."""

    # Alicom
    message_types: Annotated[tuple[str, ...], Meta(min_length=1)] = ("SmsReport",)
    uid: Optional[Annotated[str, Meta(pattern=r"^\d{1,20}$")]] = None
    queue_names_raw: tuple[str, ...] = ()
    mns_endpoint: str = DEFAULT_MNS_ENDPOINT
    token_endpoint: str = DEFAULT_TOKEN_ENDPOINT
    sms_endpoint: str = DEFAULT_SMS_ENDPOINT
    region: Annotated[str, _REGION] = "cn-hangzhou"
    owner_id: Optional[Annotated[str, Meta(pattern=r"^\d{1,20}$")]] = None

    # Credentials for the token and send-record APIs (never logged: see shared/logs.py and
    # `__repr__` below).
    access_key_id: Optional[str] = None
    access_key_secret: Optional[str] = None
    security_token: Optional[str] = None
    credentials_secret: Optional[str] = None
    credentials_parameter: Optional[str] = None

    # Sink
    sink: str
    sink_path: Optional[str] = None
    sink_bucket: Optional[Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")]] = None
    sink_prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9!_.*'()/=\-]*$")] = "alicom/"
    sink_table: Optional[Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.\-]{3,255}$")]] = None
    sink_endpoint: Optional[str] = None
    sink_region: Optional[Annotated[str, _REGION]] = None
    sink_sse: Optional[Annotated[str, Meta(pattern=r"^(AES256|aws:kms|KMS|SM4)$")]] = None
    sink_kms_key_id: Optional[str] = None
    sink_ttl_days: Optional[Annotated[int, Meta(ge=1, le=36500)]] = None
    tablestore_instance: Optional[Annotated[str, Meta(pattern=r"^[A-Za-z][A-Za-z0-9\-]{2,15}$")]] = None

    # Drain loop
    max_messages: Annotated[int, Meta(ge=1)] = 100_000
    wait_seconds: Annotated[int, Meta(ge=0, le=30)] = 3
    safety_margin_seconds: Annotated[float, Meta(ge=0, le=120)] = 2.0
    concurrency: Annotated[int, Meta(ge=1, le=64)] = 3
    mns_timeout_seconds: Annotated[float, Meta(gt=0, le=120)] = 10.0
    coalesce_seconds: Annotated[float, Meta(ge=0, le=60)] = 5.0
    token_refresh_buffer_seconds: Annotated[int, Meta(ge=0, le=3600)] = 120

    # Fan-out (a backlog starts more runs of the same function)
    max_workers: Annotated[int, Meta(ge=1, le=64)] = 1
    backlog_seconds: Annotated[int, Meta(ge=0, le=86400)] = 60
    invoke_endpoint: Optional[str] = None
    fc_region: Optional[Annotated[str, _REGION]] = None  # set by Function Compute in the function's environment

    # Reconcile (QuerySendDetails)
    reconcile_grace_seconds: Annotated[int, Meta(ge=0, le=7 * 86400)] = 3600
    reconcile_qps: Annotated[float, Meta(gt=0, le=5000)] = 50.0
    reconcile_max_targets: Annotated[int, Meta(ge=1, le=1_000_000)] = 5000
    reconcile_lookback_days: Annotated[int, Meta(ge=1, le=30)] = 30
    reconcile_concurrency: Annotated[int, Meta(ge=1, le=32)] = 4
    reconcile_max_attempts: Annotated[int, Meta(ge=1, le=20)] = 5
    reconcile_backoff_seconds: Annotated[float, Meta(ge=0, le=30)] = 0.2
    reconcile_backoff_max_seconds: Annotated[float, Meta(ge=0, le=120)] = 5.0
    reconcile_safety_margin_seconds: Annotated[float, Meta(ge=0, le=120)] = 2.0
    reconcile_timeout_seconds: Annotated[float, Meta(gt=0, le=120)] = 10.0

    def __post_init__(self) -> None:
        # Checks of one field raise "VARIABLE|detail" so the error names the variable.
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise _missing(VARIABLES[name], "is not a finite number")
        unknown = [t for t in self.message_types if t not in MESSAGE_TYPES]
        if unknown:
            raise _missing("ALICOM_MESSAGE_TYPES", f"unknown message type(s) {', '.join(unknown)}")
        if len(set(self.message_types)) != len(self.message_types):
            raise _missing("ALICOM_MESSAGE_TYPES", "a message type is listed twice")
        for pair in self.queue_names_raw:
            mtype, sep, name = pair.partition("=")
            if not sep or mtype not in MESSAGE_TYPES or not re.fullmatch(r"[A-Za-z0-9\-]{1,256}", name):
                raise _missing("ALICOM_QUEUE_NAMES", f"malformed pair {pair!r}")
        for name in _ENDPOINT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                try:
                    check_endpoint(value)
                except ValueError as exc:
                    raise _missing(VARIABLES[name], str(exc)) from None
        if self.sink not in sink_names():  # the table as it is now (a test may add a sink to it)
            raise _missing("SINK", f"unknown sink {self.sink!r}")
        self._complete()

    def _complete(self) -> None:
        """Checks across fields."""
        named = dict(p.split("=", 1) for p in self.queue_names_raw)
        missing = [t for t in self.message_types if t not in named]
        if missing and not self.uid:
            raise _missing("ALICOM_UID",
                           f"no queue name for {', '.join(missing)}: set ALICOM_UID or ALICOM_QUEUE_NAMES")
        field_of = {variable: name for name, variable in VARIABLES.items()}
        for variable in sink_needs(self.sink):
            if not getattr(self, field_of[variable]):
                raise _missing(variable, f"SINK={self.sink} needs {variable}")
        if bool(self.access_key_id) != bool(self.access_key_secret):
            raise _missing("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_ACCESS_KEY_ID and ..._SECRET go together")
        # Every run holds up to DRAIN_CONCURRENCY batches per queue being received, and up to
        # BUFFERS_PER_RUN buffers of at least one batch each; all of them together must stay under
        # what MNS lets a queue hold received and undeleted (shared/queues.py undeleted_footprint).
        footprint = undeleted_footprint(self.max_workers, self.concurrency)
        if footprint > UNDELETED_BUDGET:
            raise _missing("DRAIN_MAX_WORKERS", f"{self.max_workers} runs x (DRAIN_CONCURRENCY {self.concurrency} + "
                           f"{BUFFERS_PER_RUN}) x {MAX_BATCH} messages = {footprint} received and undeleted at once, "
                           f"over the {UNDELETED_BUDGET} this package keeps each queue under (MNS throttles a queue "
                           f"past {UNDELETED_LIMIT}): lower DRAIN_MAX_WORKERS or DRAIN_CONCURRENCY")

    def required(self, name: str) -> str:
        """A setting the configured sink needs, e.g. "sink_bucket" (checked at load for the sink's
        own needs; this names the variable if a sink reads one its table entry does not list)."""
        value = getattr(self, name)
        if not value:
            raise SettingsError(f"invalid settings: {VARIABLES[name]}: SINK={self.sink} needs it")
        return value

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.safe_view().items())
        return f"Settings({shown})"

    def queue_name(self, message_type: str) -> Optional[str]:
        """The MNS queue of a message type: named explicitly, or Alicom-Queue-<uid>-<type>."""
        named = dict(p.split("=", 1) for p in self.queue_names_raw)
        if message_type in named:
            return named[message_type]
        return f"Alicom-Queue-{self.uid}-{message_type}" if self.uid else None

    @property
    def queue_names(self) -> dict[str, str]:
        """Message type -> MNS queue name, for the configured types."""
        # Every configured type has one: _complete() refused the settings otherwise.
        return {t: name for t in self.message_types if (name := self.queue_name(t)) is not None}

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__struct_fields__}

    def safe_view(self) -> dict[str, Any]:
        """The settings without credentials, for logs."""
        return {k: v for k, v in self.as_dict().items() if VARIABLES[k] not in SECRET_VARIABLES}

    def check_timeout(self, seconds: float, function: str = "drain") -> None:
        """Refuse a safety margin that leaves no time to work within the function's timeout.

        Checked against the time the platform gives the first invocation (FC: the configured
        timeout; Lambda: the remaining time at the start): a margin at or above it would make
        every run stop before its first receive, while messages age in the queue."""
        variable = "DRAIN_SAFETY_MARGIN_SECONDS" if function == "drain" else "RECONCILE_SAFETY_MARGIN_SECONDS"
        margin = self.safety_margin_seconds if function == "drain" else self.reconcile_safety_margin_seconds
        if margin >= seconds:
            raise SettingsError(f"invalid settings: {variable}: {margin:g} s is at or above the function's "
                                f"{seconds:.0f} s timeout, so no run could receive anything; expected seconds well "
                                f"below the timeout (the default is {Settings.default(variable_field(variable)):g})")

    @staticmethod
    def default(name: str) -> Any:
        """A field's default value (the benchmark and the docs quote them)."""
        return next(f.default for f in msgspec.structs.fields(Settings) if f.name == name)


def variable_field(variable: str) -> str:
    """The Settings field a variable sets."""
    return next(name for name, var in VARIABLES.items() if var == variable)


def _missing(variable: str, detail: str) -> ValueError:
    return ValueError(f"{variable}|{detail}")


def load_settings(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Validate the environment; raise SettingsError naming every bad variable."""
    given = dict(os.environ if environ is None else environ)
    # Empty strings mean "not set" (templates often pass "" for unused parameters).
    env: dict[str, Any] = {k: v for k, v in given.items() if k in _VARIABLES and v != ""}
    # Undecodable bytes in os.environ arrive as lone surrogates: name them here, before any
    # parsing tries to encode them.
    garbled = sorted(k for k in env if isinstance(env[k], str) and not _is_utf8(env[k]))
    if garbled:
        raise SettingsError("invalid settings: "
                            + "; ".join(_describe(k, "is not valid UTF-8 text", None) for k in garbled))
    for name in _CSV_VARIABLES:
        if isinstance(env.get(name), str):
            env[name] = _csv(env[name])
    for name in _ENDPOINT_FIELDS:
        if isinstance(env.get(VARIABLES[name]), str):
            env[VARIABLES[name]] = env[VARIABLES[name]].rstrip("/")
    # msgspec stops at the first problem; set the named variable aside and look again, so
    # one error message lists every bad variable.
    problems: dict[str, str] = {}
    while True:
        try:
            settings = msgspec.convert(env, Settings, strict=False)
            break
        except msgspec.ValidationError as exc:
            variable, message = _locate(str(exc))
            if variable in problems or variable not in _VARIABLES:
                problems.setdefault(variable or "settings", message)
                break
            problems[variable] = message
            env.pop(variable, None)
    if not problems:
        return settings
    raise SettingsError("invalid settings: " + "; ".join(
        _describe(variable, message, given.get(variable)) for variable, message in problems.items()))


_VARIABLES = frozenset(VARIABLES.values())


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


_AT = re.compile(r" - at `\$\.([A-Za-z0-9_]+)`(?:\[\d+\])?$")


def _locate(error: str) -> tuple[str, str]:
    """(variable, message) from a msgspec error: "... - at `$.VAR`", or our "VAR|detail"."""
    match = _AT.search(error)
    if match:
        return match.group(1), error[:match.start()]
    head, bar, rest = error.partition("|")
    if bar and head in _VARIABLES:  # a value may hold "|" too: only our own form counts
        return head, rest
    if error.startswith("Object missing required field `"):
        return error.split("`")[1], "is required"
    return "", error


def _describe(variable: str, message: str, shown: Optional[str]) -> str:
    detail = f"{variable}: {message}"
    if shown is not None and variable not in SECRET_VARIABLES:
        detail += f" (got {shown[:60]!r})"
    form = ENV_FORMS.get(variable)
    if form:
        detail += f"; expected {form}"
    return detail


ENV_FORMS.update({
    "RECONCILE_GRACE_SECONDS": "a whole number of seconds from 0 to 604800: "
                               "how long a recorded send may wait for its receipt",
    "RECONCILE_QPS": "QuerySendDetails calls per second, a number above 0 and at most 5000 "
                     "(the documented account limit)",
    "RECONCILE_MAX_TARGETS": "a whole number >= 1: phone-days one reconcile run queries at most",
    "RECONCILE_LOOKBACK_DAYS": "a whole number of days from 1 to 30 (QuerySendDetails answers for the last 30 days)",
    "RECONCILE_CONCURRENCY": "a whole number from 1 to 32",
    "RECONCILE_MAX_ATTEMPTS": "a whole number from 1 to 20: tries per QuerySendDetails call when throttled",
    "RECONCILE_BACKOFF_SECONDS": "seconds from 0 to 30: first backoff after a throttled call "
                                 "(doubles per try, with jitter)",
    "RECONCILE_BACKOFF_MAX_SECONDS": "seconds from 0 to 120: the longest single backoff",
    "RECONCILE_SAFETY_MARGIN_SECONDS": "seconds from 0 to 120 kept free before the function's deadline",
    "RECONCILE_TIMEOUT_SECONDS": "seconds above 0 and at most 120: socket timeout of one QuerySendDetails call",
})
