"""POP RPC endpoint (signature 1.0): Dybaseapi QueryTokenForMnsQueue and
Dysmsapi QuerySendDetails, routed on the `Action` parameter."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from . import responses as r
from .auth import verify_rpc
from .exceptions import RpcError
from .models import EmulatorBackend
from .request import Request

SHANGHAI = ZoneInfo("Asia/Shanghai")
API_VERSION = "2017-05-25"


def shanghai_time(epoch: float) -> str:
    """`yyyy-MM-dd HH:mm:ss` in Asia/Shanghai, the zone Alicom's APIs speak."""
    return datetime.fromtimestamp(int(epoch), SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


class RpcResponses:
    ACTIONS = ("QueryTokenForMnsQueue", "QuerySendDetails")

    def __init__(self, backend: EmulatorBackend):
        self.backend = backend

    def dispatch(self, action: str, req: Request) -> r.Response:
        rid = r.new_request_id()
        try:
            params = req.form_params()
            if action not in self.ACTIONS:
                raise RpcError("InvalidAction.NotFound",
                               f"Specified api '{action}' is not found, please check your url and method.", 404)
            ak = verify_rpc(req.method, params, self.backend.customer_keys(), self.backend.clock())
            if params.get("Version") != API_VERSION:
                raise RpcError("InvalidVersion", "Specified parameter Version is not valid.", 400)
            if not self.backend.use_nonce(params["SignatureNonce"]):
                raise RpcError("SignatureNonceUsed", "Specified signature nonce was used already.", 400)
            refusal = self.backend.rpc_refusal
            if refusal is not None and (refusal.actions is None or action in refusal.actions):
                return r.rpc_ok({"Code": refusal.code, "Message": refusal.message}, rid)
            return getattr(self, action)(params, ak, rid)
        except RpcError as e:
            return r.rpc_error(e, rid, req.host_id)

    def QueryTokenForMnsQueue(self, params: dict, ak: str, rid: str) -> r.Response:
        message_type = params.get("MessageType")
        if not message_type:
            raise RpcError("MissingMessageType", "MessageType is mandatory for this action.", 400)
        grant = self.backend.tokens.issue(ak, message_type)
        return r.rpc_ok({
            "Code": "OK",
            "Message": "OK",
            "MessageTokenDTO": {
                "AccessKeyId": grant.access_key_id,
                "AccessKeySecret": grant.access_key_secret,
                "SecurityToken": grant.security_token,
                "CreateTime": shanghai_time(grant.created),
                "ExpireTime": shanghai_time(grant.expires),
            },
        }, rid)

    def QuerySendDetails(self, params: dict, ak: str, rid: str) -> r.Response:
        raise RpcError("InvalidAction.NotFound", "QuerySendDetails is not available yet.", 404)
