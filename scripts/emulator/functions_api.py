"""Function invoke APIs (Function Compute 2.0 and AWS Lambda) — phase 2."""
from __future__ import annotations

from . import responses as r
from .exceptions import FcError, LambdaError
from .request import Request


class FunctionResponses:
    def __init__(self, backend):
        self.backend = backend

    def dispatch(self, action: str, req: Request, *args) -> r.Response:
        rid = r.new_request_id()
        if action == "FcInvokeFunction":
            return r.fc_error(FcError("FunctionNotFound", "function invoke is not available yet", 404), rid)
        return r.lambda_error(LambdaError("ResourceNotFoundException", "function invoke is not available yet", 404), rid)
