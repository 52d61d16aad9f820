"""MNS queue API: authorize the request, parse its parameters, call the queue model
and render the answer."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from . import responses as r
from .auth import check_http_date, parse_mns_authorization, verify_mns_signature
from .exceptions import MnsError, QueueNotExist, mns_invalid_argument
from .models import EmulatorBackend
from .request import Request

ACCESS_DENIED_OTHER_ACCOUNT = ("The OwnerId that your Access Key Id associated to is forbidden "
                               "for this operation: Alicom receipt queues need a token from "
                               "QueryTokenForMnsQueue.")


def _int_param(req: Request, name: str, default: int | None) -> int | None:
    raw = req.param_ci(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise mns_invalid_argument(f"The value of {name} is not a valid integer: {raw!r}.") from None


class MnsResponses:
    def __init__(self, backend: EmulatorBackend):
        self.backend = backend

    def dispatch(self, action: str, req: Request, queue: str) -> r.Response:
        rid = r.new_request_id()
        try:
            if self.backend.tokens.take_expiry(action):
                self.backend.tokens.expire_all()
            self._authorize(req, queue)
            return getattr(self, action)(req, queue, rid)
        except MnsError as e:
            return r.mns_error(e, rid, req.host_id)

    # -- checks ------------------------------------------------------------------

    def _authorize(self, req: Request, queue: str) -> None:
        h = req.headers
        ak, signature = parse_mns_authorization(h)
        if not h.get("x-mns-version"):
            raise mns_invalid_argument("The x-mns-version header is required.")
        check_http_date(h, self.backend.clock(), MnsError)
        token = h.get("security-token")
        if token:
            grant = self.backend.tokens.lookup(token)
            if grant is None:
                raise MnsError("AccessDenied", "The security token you provided is invalid.", 403)
            if grant.access_key_id != ak:
                raise MnsError("InvalidAccessKeyId", "The AccessKey Id you provided is not exist.", 403)
            verify_mns_signature(req.method, h, req.target, signature, grant.access_key_secret)
            if self.backend.clock() >= grant.expires:
                raise MnsError("AccessDenied", "The security token you provided has expired.", 403)
            if not grant.allows_queue(queue):
                raise MnsError("AccessDenied",
                               f"The token for message type {grant.message_type} is not authorized "
                               f"to access queue {queue}.", 403)
        else:
            secret = self.backend.customer_keys().get(ak)
            if secret is None:
                raise MnsError("InvalidAccessKeyId", "The AccessKey Id you provided is not exist.", 403)
            verify_mns_signature(req.method, h, req.target, signature, secret)
            # The queues live in Alicom's account: the customer's own key has no access.
            raise MnsError("AccessDenied", ACCESS_DENIED_OTHER_ACCOUNT, 403)
        if not self.backend.queues.has_queue(queue):
            raise QueueNotExist(queue)

    # -- operations ----------------------------------------------------------------

    def _wait(self, req: Request) -> int:
        return _int_param(req, "waitseconds", 0)

    def BatchReceiveMessage(self, req: Request, queue: str, rid: str) -> r.Response:
        n = _int_param(req, "numOfMessages", 16)
        return r.mns_messages(self.backend.queues.receive(queue, n, self._wait(req)), rid)

    def ReceiveMessage(self, req: Request, queue: str, rid: str) -> r.Response:
        return r.mns_message(self.backend.queues.receive(queue, 1, self._wait(req))[0], rid)

    def PeekMessage(self, req: Request, queue: str, rid: str) -> r.Response:
        return r.mns_peeked(self.backend.queues.peek(queue, 1), False, rid)

    def BatchPeekMessage(self, req: Request, queue: str, rid: str) -> r.Response:
        n = _int_param(req, "numOfMessages", 16)
        if not 1 <= n <= 16:
            raise mns_invalid_argument("The value of numOfMessages should between 1 and 16.")
        return r.mns_peeked(self.backend.queues.peek(queue, n), True, rid)

    def DeleteMessage(self, req: Request, queue: str, rid: str) -> r.Response:
        handle = req.param_ci("ReceiptHandle")
        if not handle:
            raise MnsError("MissingReceiptHandle", "ReceiptHandle is required.", 400)
        self.backend.queues.delete(queue, handle)
        return r.mns_no_content(rid)

    def BatchDeleteMessage(self, req: Request, queue: str, rid: str) -> r.Response:
        try:
            root = ET.fromstring(req.body)
        except ET.ParseError:
            raise MnsError("MalformedXML", "The XML you provided was not well-formed.", 400) from None
        handles = [(el.text or "").strip() for el in root.iter() if el.tag.endswith("ReceiptHandle")]
        self.backend.queues.batch_delete(queue, handles)
        return r.mns_no_content(rid)

    def ChangeMessageVisibility(self, req: Request, queue: str, rid: str) -> r.Response:
        handle = req.param_ci("ReceiptHandle")
        if not handle:
            raise MnsError("MissingReceiptHandle", "ReceiptHandle is required.", 400)
        timeout = _int_param(req, "VisibilityTimeout", None)
        if timeout is None:
            raise MnsError("MissingVisibilityTimeout", "VisibilityTimeout is required.", 400)
        new_handle, next_visible = self.backend.queues.change_visibility(queue, handle, timeout)
        return r.mns_change_visibility(new_handle, next_visible, rid)

    def Unsupported(self, req: Request, queue: str, rid: str) -> r.Response:
        raise MnsError("AccessDenied",
                       f"{req.method} {req.path} is not allowed with an Alicom queue token.", 403)
