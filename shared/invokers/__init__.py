"""Invoking this same function again, asynchronously, through the platform's own API.

The fan-out (shared/fan_out.py) asks for an `Invoker` only when a run decides to start workers,
so the SDK is imported then, and never on a run that does not fan out:

- Lambda: `Invoke` with `InvocationType=Event` through boto3 (shared/invokers/aws_lambda.py);
- Function Compute 3.0: `InvokeFunction` with `x-fc-invocation-type: Async` through
  alibabacloud-fc20230330 (shared/invokers/fc3.py). The functions s.yaml deploys are FC 3.0
  functions, which have no service for the FC 2.0 API's path: the 2.0 API is not used.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from shared.fan_out import InvokeError, Invoker

if TYPE_CHECKING:
    from shared.platform import Invocation
    from shared.settings import Settings
    from shared.tokens import Credentials


def make_invoker(invocation: "Invocation", settings: "Settings", credentials: "Credentials",
                 timeout: float) -> Invoker:
    """An invoker of the function this invocation runs in, on its platform."""
    if invocation.platform == "lambda":
        from shared.invokers.aws_lambda import LambdaInvoker

        return LambdaInvoker(invocation.function_arn or invocation.function_name, settings.invoke_endpoint, timeout)
    if invocation.platform == "fc":
        from shared.invokers.fc3 import Fc3Invoker

        region: Optional[str] = settings.fc_region or settings.sink_region or settings.region
        return Fc3Invoker(invocation.function_name, region, settings.invoke_endpoint, credentials, timeout)
    raise InvokeError("NoPlatform", f"a {invocation.platform} run has no invoke API to start workers through")


__all__ = ["InvokeError", "Invoker", "make_invoker"]
