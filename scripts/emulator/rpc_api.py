"""POP RPC endpoint (signature 1.0): Dybaseapi QueryTokenForMnsQueue and
Dysmsapi QuerySendDetails, routed on the `Action` parameter.

QueryTokenForMnsQueue takes MessageType (required), QueueName and OwnerId
(optional; a number, else HTTP 400 `InvalidParameter`, the emulator's choice);
every authenticated call is logged (`Emulator.token_requests`); a refusal set
for its message type (`Emulator.refuse_tokens`) answers instead of a token.

QuerySendDetails answers:
  - a required parameter missing (PhoneNumber, SendDate, PageSize, CurrentPage):
    HTTP 400 `Missing<Name>`, as the POP gateway does;
  - a parameter present but invalid (phone not digits, SendDate not a yyyyMMdd
    date, PageSize outside 1..50, CurrentPage < 1): HTTP 200, Code
    `isv.INVALID_PARAMETERS`;
  - SendDate more than 30 days before today (Asia/Shanghai): HTTP 200, Code
    `isv.QUERY_DATE_OUT_OF_RANGE` (the emulator's choice: the vendor does not
    publish the code);
  - a configured refusal (`set_send_details_error`): HTTP 200 with that Code.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from . import responses as r
from .auth import verify_rpc
from .exceptions import RpcError
from .models import EmulatorBackend, TokenRefusal
from .request import Request

SHANGHAI = ZoneInfo("Asia/Shanghai")
API_VERSION = "2017-05-25"
INVALID_PARAMETERS = "isv.INVALID_PARAMETERS"
SEND_DATE_TOO_OLD = "isv.QUERY_DATE_OUT_OF_RANGE"
QUERY_WINDOW_DAYS = 30
_PHONE = re.compile(r"^\+?\d{5,20}$")


def shanghai_time(epoch: float) -> str:
    """`yyyy-MM-dd HH:mm:ss` in Asia/Shanghai, the zone Alicom's APIs speak."""
    return datetime.fromtimestamp(int(epoch), SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


class RpcResponses:
    ACTIONS = ("QueryTokenForMnsQueue", "QuerySendDetails")

    def __init__(self, backend: EmulatorBackend):
        self.backend = backend

    def dispatch(self, action: str, req: Request) -> r.Response:
        response = self._dispatch(action, req)
        # POP answers XML unless asked for JSON (Format is case-insensitive; XML is the default).
        params = req.form_params()
        if str(params.get("Format") or "").upper() != "JSON":
            return r.rpc_as_xml(response, f"{action}Response" if response.status == 200 else "Error")
        return response

    def _dispatch(self, action: str, req: Request) -> r.Response:
        rid = r.new_request_id()
        try:
            params = req.form_params()
            if action not in self.ACTIONS:
                raise RpcError("InvalidAction.NotFound",
                               f"Specified api '{action}' is not found, please check your url and method.", 404)
            ak = verify_rpc(req.method, params, self.backend.customer_keys(), self.backend.clock())
            self.backend.check_security_token(ak, params.get("SecurityToken"))
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
        tokens = self.backend.tokens
        owner_id = params.get("OwnerId")
        refusal = tokens.refusal_for(message_type)
        if owner_id and not owner_id.isdigit():
            # OwnerId is a Long (an account uid); the emulator's choice of code.
            refusal = TokenRefusal("InvalidParameter", "Specified parameter OwnerId is not valid.", 400)
        tokens.record(message_type, params.get("QueueName"), owner_id, refusal.code if refusal else "OK",
                      params.get("RegionId"))
        if refusal is not None:
            if refusal.status == 200:
                return r.rpc_ok({"Code": refusal.code, "Message": refusal.message}, rid)
            raise RpcError(refusal.code, refusal.message, refusal.status)
        grant = tokens.issue(ak, message_type)
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
        for name in ("PhoneNumber", "SendDate", "PageSize", "CurrentPage"):
            if not params.get(name):
                raise RpcError(f"Missing{name}", f"{name} is mandatory for this action.", 400)
        phone, send_date = params["PhoneNumber"], params["SendDate"]
        refusal = self.backend.send_records.refusal
        if refusal is not None and (refusal.phones is None or phone in refusal.phones):
            return r.rpc_ok({"Code": refusal.code, "Message": refusal.message}, rid)
        try:
            day = datetime.strptime(send_date, "%Y%m%d").date() if re.fullmatch(r"\d{8}", send_date) else None
            page_size, page = int(params["PageSize"]), int(params["CurrentPage"])
        except ValueError:
            day = page_size = page = None
        if day is None or page is None or not _PHONE.match(phone) or not 1 <= page_size <= 50 or page < 1:
            return r.rpc_ok({"Code": INVALID_PARAMETERS, "Message": "Specified parameter is not valid."}, rid)
        today = datetime.fromtimestamp(self.backend.clock(), SHANGHAI).date()
        if day < today - timedelta(days=QUERY_WINDOW_DAYS):
            return r.rpc_ok({"Code": SEND_DATE_TOO_OLD,
                             "Message": f"SendDate must be within the last {QUERY_WINDOW_DAYS} days."}, rid)
        total, rows = self.backend.send_records.query(phone, send_date, params.get("BizId"), page_size, page)
        return r.rpc_ok({
            "Code": "OK",
            "Message": "OK",
            "TotalCount": total,
            # Rows carry no BizId: only a BizId-filtered query ties them to one send.
            "SmsSendDetailDTOs": {"SmsSendDetailDTO": [{
                "PhoneNum": row.phone,
                "SendStatus": row.status,
                "ErrCode": row.err_code,
                "TemplateCode": row.template_code,
                "Content": row.content,
                "SendDate": row.send_time,
                "ReceiveDate": row.receive_time,
                "OutId": row.out_id,
            } for row in rows]},
        }, rid)
