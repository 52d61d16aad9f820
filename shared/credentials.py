"""The customer's Alibaba Cloud credentials for the token and send-record APIs.

Order: the ALIBABA_CLOUD_* variables (on Function Compute, the function role's STS
credentials are there), else an AWS Secrets Manager secret (ALICOM_CREDENTIALS_SECRET), else an SSM
SecureString (ALICOM_CREDENTIALS_PARAMETER). The AWS reads go through Powertools Parameters,
which caches them for the warm container; the SDK is imported only on that path. Those reads
are bounded (short timeouts, few attempts), so a store that never answers fails the start-up
in seconds, naming the variable, instead of holding the function for botocore's minutes.
The same credentials sign the token call and the OSS and Tablestore sinks.
"""
from __future__ import annotations

import json
import threading
from typing import Any

from shared.logs import register_secret
from shared.settings import Settings, SettingsError
from shared.tokens import Credentials

CACHE_SECONDS = 300
# Worst case per read: 2 attempts x (1 s connect + 1 s send + 3 s read), about 10 s.
STORE_CLIENT = {"connect_timeout": 1.0, "read_timeout": 3.0, "retries": {"mode": "standard", "total_max_attempts": 2}}

_providers: dict[str, Any] = {}
_providers_lock = threading.Lock()


def load_credentials(settings: Settings) -> Credentials:
    if settings.access_key_id and settings.access_key_secret:
        creds = Credentials(settings.access_key_id, settings.access_key_secret, settings.security_token)
    elif settings.credentials_secret:
        raw = _read("secrets", settings.credentials_secret, "ALICOM_CREDENTIALS_SECRET")
        creds = _from_json(raw, "ALICOM_CREDENTIALS_SECRET")
    elif settings.credentials_parameter:
        raw = _read("ssm", settings.credentials_parameter, "ALICOM_CREDENTIALS_PARAMETER", decrypt=True)
        creds = _from_json(raw, "ALICOM_CREDENTIALS_PARAMETER")
    else:
        raise SettingsError(
            "invalid settings: ALIBABA_CLOUD_ACCESS_KEY_ID: no Alibaba Cloud credentials; set "
            "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (FC sets them from the function's role), "
            "or ALICOM_CREDENTIALS_SECRET / ALICOM_CREDENTIALS_PARAMETER on AWS"
        )
    register_secret(*creds.secrets())
    return creds


def _provider(kind: str) -> Any:
    """The Powertools provider for Secrets Manager ("secrets") or SSM ("ssm"), built once, bounded."""
    with _providers_lock:
        if kind not in _providers:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider, SSMProvider
            from botocore.config import Config

            provider = SecretsProvider if kind == "secrets" else SSMProvider
            _providers[kind] = provider(boto_config=Config(**STORE_CLIENT))
        return _providers[kind]


def _read(kind: str, name: str, variable: str, **options: Any) -> Any:
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

    try:
        return _provider(kind).get(name, max_age=CACHE_SECONDS, **options)
    except GetParameterError as exc:
        raise SettingsError(f"invalid settings: {variable}: could not read {name!r} ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    """The store's error code, or the transport error's class: never its message, which can
    repeat the request."""
    cause = exc.__cause__ or exc.__context__ or exc
    response = getattr(cause, "response", None)
    if isinstance(response, dict) and (response.get("Error") or {}).get("Code"):
        return response["Error"]["Code"]
    return type(cause).__name__


def forget_cached() -> None:
    """Drop the store clients and what they read (tests; a rotated secret is read again after
    CACHE_SECONDS anyway)."""
    with _providers_lock:
        _providers.clear()


def _from_json(raw: Any, variable: str) -> Credentials:
    try:
        data = json.loads(raw) if isinstance(raw, (str, bytes)) else dict(raw)
        return Credentials(str(data["access_key_id"]), str(data["access_key_secret"]), data.get("security_token"))
    except (ValueError, TypeError, KeyError):
        raise SettingsError(
            f"invalid settings: {variable}: the stored value must be JSON "
            '{"access_key_id": "...", "access_key_secret": "..."}'
        ) from None
