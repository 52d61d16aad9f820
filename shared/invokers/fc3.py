"""Asynchronous self-invocation on Function Compute 3.0: `InvokeFunction` with
`x-fc-invocation-type: Async` (HTTP 202), through alibabacloud-fc20230330.

Signed with the function role's STS credentials (the same `Credentials` as the token call);
the function's RAM role may invoke only this function (scripts/deploy/policies.py). The SDK is
large (it brings aiohttp and cryptography, about a second to import): FC packages carry it only
when built for fan-out (`scripts/package.py --workers N`, N > 1), and it is imported here, when a
run decides to start workers.
"""
from __future__ import annotations

import io
from typing import TYPE_CHECKING, Optional
from urllib.parse import urlparse

from alibabacloud_fc20230330 import models
from alibabacloud_fc20230330.client import Client
from alibabacloud_tea_openapi.utils_models import Config
from darabonba.runtime import RuntimeOptions

from shared.fan_out import InvokeError

if TYPE_CHECKING:
    from shared.tokens import Credentials


class Fc3Invoker:
    def __init__(self, function: str, region: Optional[str], endpoint: Optional[str], credentials: "Credentials",
                 timeout: float):
        if not function:
            raise InvokeError("NoFunction", "the FC context names no function to invoke")
        config = Config(access_key_id=credentials.access_key_id, access_key_secret=credentials.access_key_secret,
                        security_token=credentials.security_token, region_id=region,
                        connect_timeout=int(min(2.0, timeout) * 1000), read_timeout=int(timeout * 1000))
        if endpoint:
            parsed = urlparse(endpoint)
            config.endpoint, config.protocol = parsed.netloc, parsed.scheme
        self.client = Client(config)
        self.function = function

    def invoke_async(self, payload: bytes, timeout: float) -> None:
        request = models.InvokeFunctionRequest(body=io.BytesIO(payload))
        headers = models.InvokeFunctionHeaders(x_fc_invocation_type="Async")
        # One attempt: the fan-out counts a failure rather than let retries eat the run's time.
        runtime = RuntimeOptions(autoretry=False, max_attempts=1, connect_timeout=int(min(2.0, timeout) * 1000),
                                 read_timeout=int(timeout * 1000))
        try:
            response = self.client.invoke_function_with_options(self.function, request, headers, runtime)
        except Exception as exc:  # the SDK's exceptions carry the service's answer; others are transport errors
            raise InvokeError(error_code(exc), str(getattr(exc, "message", "") or "")[:200]) from None
        if response.status_code != 202:
            raise InvokeError("NotAccepted", f"HTTP {response.status_code}")


def error_code(exc: Exception) -> str:
    """The code of FC's answer. FC writes its errors as {"ErrorCode", "ErrorMessage"}; the SDK's
    generic client reads only "Code" and so says "None" (a throttled invoke, HTTP 429
    ResourceThrottled, would be counted as "None"): the body it keeps as `data` is read first."""
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        for field in ("ErrorCode", "errorCode", "Code", "code"):
            if data.get(field):
                return str(data[field])
    code = getattr(exc, "code", None)
    if code and str(code) != "None":
        return str(code)
    status = getattr(exc, "status_code", None) or getattr(exc, "statusCode", None)
    return f"HTTP {status}" if status else type(exc).__name__
