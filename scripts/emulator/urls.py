"""Routing: which service and action a request is, from path, method and params."""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from .request import Request

_MNS_MESSAGES = re.compile(r"^/queues/([^/]+)/messages/?$")
_MNS_OTHER = re.compile(r"^/(?:queues|topics)(?:/([^/]+))?")
_FC_INVOKE = re.compile(r"^/2016-08-15/services/([^/]+)/functions/([^/]+)/invocations/?$")
_LAMBDA_INVOKE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations/?$")
_FC3_INVOKE = re.compile(r"^/2023-03-30/functions/([^/]+)/invocations/?$")


@dataclass(frozen=True)
class Route:
    service: str          # "admin" | "mns" | "rpc" | "fc" | "lambda" | "none"
    action: str
    args: tuple = ()

    def message_type(self, req: Request) -> str | None:
        """The Alicom message type a request is about (its queue's, or the token's), if any."""
        if self.service == "mns":
            queue = self.args[0] if self.args else ""
            return queue.rsplit("-", 1)[1] if queue.startswith("Alicom-Queue-") and "-" in queue else None
        if self.action == "QueryTokenForMnsQueue":
            return req.form_params().get("MessageType") or None
        return None


def resolve(req: Request) -> Route:
    path = req.path
    if path == "/_admin" or path.startswith("/_admin/"):
        return Route("admin", "Admin")
    m = _MNS_MESSAGES.match(path)
    if m:
        return Route("mns", _mns_message_action(req), (unquote(m.group(1)),))
    m = _MNS_OTHER.match(path)
    if m or "x-mns-version" in req.headers:
        return Route("mns", "Unsupported", (unquote(m.group(1) or "") if m else "",))
    m = _FC_INVOKE.match(path)
    if m and req.method == "POST":
        return Route("fc", "FcInvokeFunction", (unquote(m.group(1)), unquote(m.group(2))))
    m = _LAMBDA_INVOKE.match(path)
    if m and req.method == "POST":
        return Route("lambda", "LambdaInvoke", (unquote(m.group(1)),))
    m = _FC3_INVOKE.match(path)
    if m and req.method == "POST":
        return Route("fc", "Fc3InvokeFunction", (unquote(m.group(1)),))
    if path == "/" and req.method in ("GET", "POST"):
        action = req.form_params().get("Action")
        if action:
            return Route("rpc", action)
    return Route("none", "NotFound")


def _mns_message_action(req: Request) -> str:
    method = req.method
    if method == "GET":
        if (req.param_ci("peekonly") or "").lower() == "true":
            return "BatchPeekMessage" if req.param_ci("numOfMessages") else "PeekMessage"
        return "BatchReceiveMessage" if req.param_ci("numOfMessages") else "ReceiveMessage"
    if method == "DELETE":
        return "DeleteMessage" if req.param_ci("ReceiptHandle") is not None else "BatchDeleteMessage"
    if method == "PUT":
        return "ChangeMessageVisibility"
    return "Unsupported"
