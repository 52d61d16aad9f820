"""The customer's Alibaba Cloud credentials for the token and send-record APIs.

Order: the ALIBABA_CLOUD_* variables (on Function Compute, the function role's STS
credentials are there), else an AWS Secrets Manager secret (ALICOM_CREDENTIALS_SECRET), else an SSM
SecureString (ALICOM_CREDENTIALS_PARAMETER). The AWS reads go through Powertools Parameters,
which caches them for the warm container; the SDK is imported only on that path.
"""
from __future__ import annotations

import json
from typing import Any

from shared.logs import register_secret
from shared.settings import Settings, SettingsError
from shared.tokens import Credentials

CACHE_SECONDS = 300


def load_credentials(settings: Settings) -> Credentials:
    if settings.access_key_id and settings.access_key_secret:
        creds = Credentials(settings.access_key_id, settings.access_key_secret, settings.security_token)
    elif settings.credentials_secret:
        from aws_lambda_powertools.utilities import parameters

        raw = parameters.get_secret(settings.credentials_secret, max_age=CACHE_SECONDS)
        creds = _from_json(raw, "ALICOM_CREDENTIALS_SECRET")
    elif settings.credentials_parameter:
        from aws_lambda_powertools.utilities import parameters

        raw = parameters.get_parameter(settings.credentials_parameter, decrypt=True, max_age=CACHE_SECONDS)
        creds = _from_json(raw, "ALICOM_CREDENTIALS_PARAMETER")
    else:
        raise SettingsError(
            "invalid settings: ALIBABA_CLOUD_ACCESS_KEY_ID: no Alibaba Cloud credentials; set "
            "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (FC sets them from the function's role), "
            "or ALICOM_CREDENTIALS_SECRET / ALICOM_CREDENTIALS_PARAMETER on AWS"
        )
    register_secret(*creds.secrets())
    return creds


def _from_json(raw: Any, variable: str) -> Credentials:
    try:
        data = json.loads(raw) if isinstance(raw, (str, bytes)) else dict(raw)
        return Credentials(str(data["access_key_id"]), str(data["access_key_secret"]), data.get("security_token"))
    except (ValueError, TypeError, KeyError):
        raise SettingsError(
            f"invalid settings: {variable}: the stored value must be JSON "
            '{"access_key_id": "...", "access_key_secret": "..."}'
        ) from None
