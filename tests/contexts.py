"""Invocation contexts shaped like the platforms' (FC: request_id + function.timeout; Lambda: remaining time)."""
from __future__ import annotations

import time
import uuid
from types import SimpleNamespace


def fc_context(timeout: float = 60.0):
    return SimpleNamespace(request_id=f"fc-{uuid.uuid4()}", credentials=None,
                           function=SimpleNamespace(name="alicom-drain", handler="functions.drain.handler",
                                                    memory=512, timeout=timeout))


class LambdaContext:
    def __init__(self, timeout: float = 60.0):
        self.aws_request_id = f"aws-{uuid.uuid4()}"
        self.function_name = "DrainFunction"
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:DrainFunction"
        self._end = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return int((self._end - time.monotonic()) * 1000)
