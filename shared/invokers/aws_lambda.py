"""Asynchronous self-invocation on AWS Lambda: `Invoke(InvocationType="Event")` through boto3.

The function's role may invoke only this function (template.yml). Credentials and region come
from boto3's chain (the Lambda environment); `DRAIN_INVOKE_ENDPOINT` (or boto3's own
AWS_ENDPOINT_URL_LAMBDA) points it elsewhere, e.g. at the loopback emulator.
"""
from __future__ import annotations

from typing import Optional

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.fan_out import InvokeError


class LambdaInvoker:
    def __init__(self, function: str, endpoint: Optional[str], timeout: float):
        if not function:
            raise InvokeError("NoFunction", "the Lambda context names no function to invoke")
        # The region is in the ARN the context gives (arn:aws:lambda:<region>:<account>:function:<name>).
        parts = function.split(":")
        region = parts[3] if function.startswith("arn:") and len(parts) > 3 else None
        # One attempt: the fan-out counts a failure rather than let retries eat the run's time.
        config = Config(retries={"mode": "standard", "total_max_attempts": 1},
                        connect_timeout=min(2.0, timeout), read_timeout=timeout)
        # A session of its own: boto3's default session keeps the first credentials it resolved.
        self.client = boto3.session.Session().client("lambda", region_name=region, endpoint_url=endpoint,
                                                     config=config)
        self.function = function

    def invoke_async(self, payload: bytes, timeout: float) -> None:
        try:
            response = self.client.invoke(FunctionName=self.function, InvocationType="Event", Payload=payload)
        except ClientError as exc:
            error = exc.response.get("Error") or {}
            raise InvokeError(error.get("Code") or "Unknown", str(error.get("Message") or "")[:200]) from None
        except BotoCoreError as exc:
            raise InvokeError(type(exc).__name__) from None
        if response.get("StatusCode") != 202:
            raise InvokeError("NotAccepted", f"HTTP {response.get('StatusCode')}")
