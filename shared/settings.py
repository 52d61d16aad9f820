"""Settings from environment variables, validated once per container.

Every variable the functions read is declared here, once: the templates (`template.yml`,
`s.yaml`) are checked against this list by the tests. A missing or malformed variable
raises `SettingsError` at start-up, naming the variable and the form it expects.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Message types Alicom publishes (api-facts §1). FlowReport's format is unpublished; it is
# drained and stored with a body-hash key like any unknown type.
KNOWN_MESSAGE_TYPES = (
    "SmsReport",
    "SmsUp",
    "GlobeSmsReport",
    "VoiceReport",
    "VoiceCallReport",
    "VoiceRecordReport",
    "FlowReport",
)
SINKS = ("file", "sqlite", "s3", "oss", "dynamodb", "tablestore")
DEFAULT_MNS_ENDPOINT = "https://1943695596114318.mns.cn-hangzhou.aliyuncs.com/"
DEFAULT_TOKEN_ENDPOINT = "https://dybaseapi.aliyuncs.com"
DEFAULT_SMS_ENDPOINT = "https://dysmsapi.aliyuncs.com"

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and the expected form."""


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def check_endpoint(url: str, variable: str) -> str:
    """Endpoints are URLs; plain HTTP only for loopback (DESIGN.md invariant 7)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"expected a URL like https://host[:port], got {url!r}")
    if parsed.scheme == "http" and not is_loopback(url):
        raise ValueError(f"plain http is allowed only for loopback; use https:// for {parsed.hostname}")
    return url.rstrip("/")


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


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
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "the AccessKey id (or the function role's STS key id)",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "the AccessKey secret",
    "ALICOM_CREDENTIALS_SECRET": "AWS Secrets Manager secret id/ARN holding {\"access_key_id\",\"access_key_secret\"}",
    "ALICOM_CREDENTIALS_PARAMETER": "SSM SecureString parameter name holding the same JSON",
    "SINK": "one of " + ", ".join(SINKS),
    "SINK_PATH": "a directory (file sink) or database file path (sqlite sink)",
    "SINK_BUCKET": "a bucket name (s3, oss)",
    "SINK_TABLE": "a table name (dynamodb, tablestore)",
    "DRAIN_MAX_MESSAGES": "a whole number >= 1",
    "DRAIN_WAIT_SECONDS": "a whole number of seconds from 0 to 30 (MNS long poll)",
    "DRAIN_CONCURRENCY": "a whole number from 1 to 64",
    "DRAIN_COALESCE_SECONDS": "seconds from 0 to 60, well below the queue's visibility timeout (0 writes every batch at once)",
    "TOKEN_REFRESH_BUFFER_SECONDS": "a whole number of seconds >= 0",
}


class Settings(BaseModel):
    """Everything the drain and reconcile functions are configured with."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    # Alicom
    message_types: tuple[str, ...] = Field(("SmsReport",), alias="ALICOM_MESSAGE_TYPES", min_length=1)
    uid: Optional[str] = Field(None, alias="ALICOM_UID", pattern=r"^\d{1,20}$")
    queue_names_raw: tuple[str, ...] = Field((), alias="ALICOM_QUEUE_NAMES")
    mns_endpoint: str = Field(DEFAULT_MNS_ENDPOINT, alias="ALICOM_MNS_ENDPOINT")
    token_endpoint: str = Field(DEFAULT_TOKEN_ENDPOINT, alias="ALICOM_TOKEN_ENDPOINT")
    sms_endpoint: str = Field(DEFAULT_SMS_ENDPOINT, alias="ALICOM_SMS_ENDPOINT")
    region: str = Field("cn-hangzhou", alias="ALICOM_REGION", pattern=r"^[a-z]{2,}-[a-z0-9-]+$")

    # Credentials for the token and send-record APIs (never logged: see shared/logs.py).
    access_key_id: Optional[str] = Field(None, alias="ALIBABA_CLOUD_ACCESS_KEY_ID", repr=False)
    access_key_secret: Optional[str] = Field(None, alias="ALIBABA_CLOUD_ACCESS_KEY_SECRET", repr=False)
    security_token: Optional[str] = Field(None, alias="ALIBABA_CLOUD_SECURITY_TOKEN", repr=False)
    credentials_secret: Optional[str] = Field(None, alias="ALICOM_CREDENTIALS_SECRET")
    credentials_parameter: Optional[str] = Field(None, alias="ALICOM_CREDENTIALS_PARAMETER")

    # Sink
    sink: str = Field(alias="SINK")
    sink_path: Optional[str] = Field(None, alias="SINK_PATH")
    sink_bucket: Optional[str] = Field(None, alias="SINK_BUCKET", pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
    sink_prefix: str = Field("alicom/", alias="SINK_PREFIX", pattern=r"^[A-Za-z0-9!_.*'()/=\-]*$")
    sink_table: Optional[str] = Field(None, alias="SINK_TABLE", pattern=r"^[A-Za-z0-9_.\-]{3,255}$")
    sink_endpoint: Optional[str] = Field(None, alias="SINK_ENDPOINT")
    sink_region: Optional[str] = Field(None, alias="SINK_REGION", pattern=r"^[a-z]{2,}-[a-z0-9-]+$")
    sink_sse: Optional[str] = Field(None, alias="SINK_SSE", pattern=r"^(AES256|aws:kms|KMS|SM4)$")
    sink_kms_key_id: Optional[str] = Field(None, alias="SINK_KMS_KEY_ID")
    sink_ttl_days: Optional[int] = Field(None, alias="SINK_TTL_DAYS", ge=1, le=36500)
    tablestore_instance: Optional[str] = Field(None, alias="TABLESTORE_INSTANCE", pattern=r"^[A-Za-z][A-Za-z0-9\-]{2,15}$")

    # Drain loop
    max_messages: int = Field(100_000, alias="DRAIN_MAX_MESSAGES", ge=1)
    wait_seconds: int = Field(3, alias="DRAIN_WAIT_SECONDS", ge=0, le=30)
    safety_margin_seconds: float = Field(2.0, alias="DRAIN_SAFETY_MARGIN_SECONDS", ge=0, le=120)
    concurrency: int = Field(2, alias="DRAIN_CONCURRENCY", ge=1, le=64)
    mns_timeout_seconds: float = Field(10.0, alias="MNS_TIMEOUT_SECONDS", gt=0, le=120)
    coalesce_seconds: float = Field(5.0, alias="DRAIN_COALESCE_SECONDS", ge=0, le=60)
    token_refresh_buffer_seconds: int = Field(120, alias="TOKEN_REFRESH_BUFFER_SECONDS", ge=0, le=3600)

    @field_validator("message_types", "queue_names_raw", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _csv(value)

    @field_validator("message_types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [t for t in value if t not in KNOWN_MESSAGE_TYPES]
        if unknown:
            raise ValueError(f"unknown message type(s) {', '.join(unknown)}")
        if len(set(value)) != len(value):
            raise ValueError("a message type is listed twice")
        return value

    @field_validator("queue_names_raw")
    @classmethod
    def _pairs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pair in value:
            mtype, sep, name = pair.partition("=")
            if not sep or mtype not in KNOWN_MESSAGE_TYPES or not re.fullmatch(r"[A-Za-z0-9\-]{1,256}", name):
                raise ValueError(f"malformed pair {pair!r}")
        return value

    @field_validator("mns_endpoint", "token_endpoint", "sms_endpoint", "sink_endpoint")
    @classmethod
    def _endpoint(cls, value: Optional[str], info) -> Optional[str]:
        return None if value is None else check_endpoint(value, info.field_name)

    @field_validator("sink")
    @classmethod
    def _sink(cls, value: str) -> str:
        if value not in SINKS:
            raise ValueError(f"unknown sink {value!r}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> "Settings":
        named = dict(p.split("=", 1) for p in self.queue_names_raw)
        missing = [t for t in self.message_types if t not in named]
        if missing and not self.uid:
            raise _missing("ALICOM_UID", f"no queue name for {', '.join(missing)}: set ALICOM_UID or ALICOM_QUEUE_NAMES")
        needs = {
            "file": ("SINK_PATH", self.sink_path),
            "sqlite": ("SINK_PATH", self.sink_path),
            "s3": ("SINK_BUCKET", self.sink_bucket),
            "oss": ("SINK_BUCKET", self.sink_bucket),
            "dynamodb": ("SINK_TABLE", self.sink_table),
            "tablestore": ("SINK_TABLE", self.sink_table),
        }
        variable, value = needs[self.sink]
        if not value:
            raise _missing(variable, f"SINK={self.sink} needs {variable}")
        if self.sink in ("oss", "tablestore") and not self.sink_endpoint:
            raise _missing("SINK_ENDPOINT", f"SINK={self.sink} needs SINK_ENDPOINT (e.g. https://oss-cn-hangzhou.aliyuncs.com)")
        if self.sink == "tablestore" and not self.tablestore_instance:
            raise _missing("TABLESTORE_INSTANCE", "SINK=tablestore needs TABLESTORE_INSTANCE")
        if bool(self.access_key_id) != bool(self.access_key_secret):
            raise _missing("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_ACCESS_KEY_ID and ..._SECRET go together")
        return self

    def queue_name(self, message_type: str) -> Optional[str]:
        """The MNS queue of a message type: named explicitly, or Alicom-Queue-<uid>-<type>."""
        named = dict(p.split("=", 1) for p in self.queue_names_raw)
        if message_type in named:
            return named[message_type]
        return f"Alicom-Queue-{self.uid}-{message_type}" if self.uid else None

    @property
    def queue_names(self) -> dict[str, str]:
        """Message type -> MNS queue name, for the configured types."""
        return {t: self.queue_name(t) for t in self.message_types}

    def safe_view(self) -> dict[str, Any]:
        """The settings without credentials, for logs."""
        return self.model_dump(exclude={"access_key_id", "access_key_secret", "security_token"})

    # Reconcile (QuerySendDetails). Declared after the drain's settings; same rules.
    reconcile_grace_seconds: int = Field(3600, alias="RECONCILE_GRACE_SECONDS", ge=0, le=7 * 86400)
    reconcile_qps: float = Field(50.0, alias="RECONCILE_QPS", gt=0, le=5000)
    reconcile_max_targets: int = Field(5000, alias="RECONCILE_MAX_TARGETS", ge=1, le=1_000_000)
    reconcile_lookback_days: int = Field(30, alias="RECONCILE_LOOKBACK_DAYS", ge=1, le=30)
    reconcile_concurrency: int = Field(4, alias="RECONCILE_CONCURRENCY", ge=1, le=32)
    reconcile_max_attempts: int = Field(5, alias="RECONCILE_MAX_ATTEMPTS", ge=1, le=20)
    reconcile_backoff_seconds: float = Field(0.2, alias="RECONCILE_BACKOFF_SECONDS", ge=0, le=30)
    reconcile_backoff_max_seconds: float = Field(5.0, alias="RECONCILE_BACKOFF_MAX_SECONDS", ge=0, le=120)
    reconcile_safety_margin_seconds: float = Field(2.0, alias="RECONCILE_SAFETY_MARGIN_SECONDS", ge=0, le=120)
    reconcile_timeout_seconds: float = Field(10.0, alias="RECONCILE_TIMEOUT_SECONDS", gt=0, le=120)


def _missing(variable: str, detail: str) -> ValueError:
    return ValueError(f"{variable}|{detail}")


def load_settings(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Validate the environment; raise SettingsError naming every bad variable."""
    env = dict(os.environ if environ is None else environ)
    # Empty strings mean "not set" (templates often pass "" for unused parameters).
    env = {k: v for k, v in env.items() if v != ""}
    # Undecodable bytes in os.environ arrive as lone surrogates; pydantic cannot even report
    # them (UnicodeEncodeError from inside validation), so name them here.
    garbled = sorted(k for k in _VARIABLES & env.keys() if isinstance(env[k], str) and not _is_utf8(env[k]))
    if garbled:
        raise SettingsError("invalid settings: " + "; ".join(
            f"{k}: is not valid UTF-8 text" + (f"; expected {ENV_FORMS[k]}" if k in ENV_FORMS else "") for k in garbled))
    try:
        return Settings.model_validate(env)
    except ValidationError as exc:
        raise SettingsError(_explain(exc, env)) from None


_VARIABLES = frozenset(f.alias for f in Settings.model_fields.values() if f.alias)


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _explain(exc: ValidationError, env: Mapping[str, str]) -> str:
    problems = []
    for err in exc.errors(include_url=False):
        loc = err.get("loc") or ()
        variable = str(loc[0]) if loc else ""
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        head, bar, rest = msg.partition("|")
        if bar and head in _VARIABLES:  # cross-field check: "VAR|detail" (a value may hold "|" too)
            variable, msg = head, rest
        if err.get("type") == "missing":
            msg = "is required"
        form = ENV_FORMS.get(variable)
        shown = env.get(variable)
        detail = f"{variable}: {msg}"
        if shown is not None and variable not in ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN", "ALIBABA_CLOUD_ACCESS_KEY_ID"):
            detail += f" (got {shown[:60]!r})"
        if form:
            detail += f"; expected {form}"
        problems.append(detail)
    return "invalid settings: " + "; ".join(problems)


ENV_FORMS.update({
    "RECONCILE_GRACE_SECONDS": "a whole number of seconds from 0 to 604800: how long a recorded send may wait for its receipt",
    "RECONCILE_QPS": "QuerySendDetails calls per second, a number above 0 and at most 5000 (the documented account limit)",
    "RECONCILE_MAX_TARGETS": "a whole number >= 1: phone-days one reconcile run queries at most",
    "RECONCILE_LOOKBACK_DAYS": "a whole number of days from 1 to 30 (QuerySendDetails answers for the last 30 days)",
    "RECONCILE_CONCURRENCY": "a whole number from 1 to 32",
    "RECONCILE_MAX_ATTEMPTS": "a whole number from 1 to 20: tries per QuerySendDetails call when throttled",
    "RECONCILE_BACKOFF_SECONDS": "seconds from 0 to 30: first backoff after a throttled call (doubles per try, with jitter)",
    "RECONCILE_BACKOFF_MAX_SECONDS": "seconds from 0 to 120: the longest single backoff",
    "RECONCILE_SAFETY_MARGIN_SECONDS": "seconds from 0 to 120 kept free before the function's deadline",
    "RECONCILE_TIMEOUT_SECONDS": "seconds above 0 and at most 120: socket timeout of one QuerySendDetails call",
})
