"""Function invoke APIs, so a backfill tool and a fanning-out drain can be tested over the wire:

- Function Compute 2.0 (`aliyun-fc2`): POST /2016-08-15/services/<svc>/functions/<fn>/invocations,
  signed `Authorization: FC ak:sig`; `x-fc-invocation-type: Async` -> 202.
- Function Compute 3.0 (`alibabacloud-fc20230330`): POST /2023-03-30/functions/<fn>/invocations,
  signed `Authorization: ACS3-HMAC-SHA256 ...` (with `x-acs-security-token` for STS keys);
  `x-fc-invocation-type: Async` -> 202. Errors: `{"Code","Message","RequestId"}`.
- AWS Lambda (`boto3`): POST /2015-03-31/functions/<fn>/invocations, SigV4;
  `X-Amz-Invocation-Type: Event` -> 202, `DryRun` -> 204.

A function that raises answers 200 with an error JSON and `X-Fc-Error-Type:
UnhandledInvocationError` (FC) or `X-Amz-Function-Error: Unhandled` (Lambda),
as the platforms do.
"""
from __future__ import annotations

from . import responses as r
from .auth import verify_acs3, verify_fc, verify_sigv4
from .exceptions import FcError, LambdaError, RpcError
from .models import EmulatorBackend
from .request import Request


class FunctionResponses:
    def __init__(self, backend: EmulatorBackend):
        self.backend = backend

    def dispatch(self, action: str, req: Request, *args) -> r.Response:
        return getattr(self, action)(req, *args)

    def FcInvokeFunction(self, req: Request, service: str, function: str) -> r.Response:
        rid = r.new_request_id()
        try:
            verify_fc(req.method, req.headers, req.path, req.query, self.backend.customer_keys(),
                      self.backend.clock())
            base_service = service.split(".", 1)[0]   # "svc.qualifier"
            name = self.backend.functions.resolve(f"{base_service}/{function}", function)
            if name is None:
                raise FcError("FunctionNotFound", f"function '{function}' does not exist in service "
                                                  f"'{base_service}'", 404)
        except FcError as e:
            return r.fc_error(e, rid)
        return self._fc_invoke(name, req, rid)

    def Fc3InvokeFunction(self, req: Request, function: str) -> r.Response:
        rid = r.new_request_id()
        try:
            ak = verify_acs3(req.method, req.path, req.query, req.headers, req.body, self.backend.customer_keys(),
                             self.backend.clock())
            try:
                self.backend.check_security_token(ak, req.headers.get("x-acs-security-token"))
            except RpcError as e:
                raise FcError(e.code, e.message, 403) from None
            name = self.backend.functions.resolve(function)
            if name is None:
                raise FcError("FunctionNotFound", f"function '{function}' does not exist", 404)
        except FcError as e:
            return r.json_response(e.status, {"Code": e.code, "Message": e.message, "RequestId": rid},
                                   [("X-Fc-Request-Id", rid)])
        return self._fc_invoke(name, req, rid)

    def _fc_invoke(self, name: str, req: Request, rid: str) -> r.Response:
        """FC 2.0 and 3.0 answer an invocation alike: 202 for Async, else the result or the error type."""
        headers = [("X-Fc-Request-Id", rid)]
        if req.headers.get("x-fc-invocation-type", "").lower() == "async":
            self.backend.functions.invoke_async(name, req.body)
            return r.Response(202, b"", headers)
        try:
            out = self.backend.functions.invoke(name, req.body)
        except Exception as exc:
            return r.Response(200, r.function_error_body(exc), headers + [
                ("X-Fc-Error-Type", "UnhandledInvocationError"), ("Content-Type", "application/json")])
        return r.Response(200, out, headers + [("Content-Type", "application/octet-stream")])

    def LambdaInvoke(self, req: Request, function: str) -> r.Response:
        rid = r.new_request_id()
        try:
            verify_sigv4(req.method, req.target, req.headers, req.body, self.backend.customer_keys(),
                         self.backend.clock())
            # FunctionName may be a name, a partial ARN or a full ARN, with a ":qualifier".
            short = function.split("function:", 1)[-1].split(":", 1)[0]
            name = self.backend.functions.resolve(short)
            if name is None:
                raise LambdaError("ResourceNotFoundException",
                                  f"Function not found: arn:aws:lambda:us-east-1:000000000000:function:{short}", 404)
        except LambdaError as e:
            return r.lambda_error(e, rid)
        headers = [("x-amzn-RequestId", rid)]
        kind = req.headers.get("x-amz-invocation-type", "RequestResponse")
        if kind == "Event":
            self.backend.functions.invoke_async(name, req.body)
            return r.Response(202, b"", headers)
        if kind == "DryRun":
            return r.Response(204, b"", headers)
        headers += [("X-Amz-Executed-Version", "$LATEST"), ("Content-Type", "application/json")]
        try:
            out = self.backend.functions.invoke(name, req.body)
        except Exception as exc:
            return r.Response(200, r.function_error_body(exc), headers + [("X-Amz-Function-Error", "Unhandled")])
        return r.Response(200, out, headers)
