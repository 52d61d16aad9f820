"""Wire rendering: MNS XML, POP RPC JSON, FC/Lambda JSON, error bodies, and the
HTTP response bytes (status line + headers + body built for ONE socket write)."""
from __future__ import annotations

import email.utils
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from .exceptions import BatchDeleteFailed, EmulatorError, FcError, LambdaError, MnsError, RpcError
from .models import ReceivedMessage

MNS_XMLNS = "http://mns.aliyuncs.com/doc/v1/"
XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
REASONS = {200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error",
           503: "Service Unavailable"}


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: list = field(default_factory=list)   # [(name, value)], names as sent

    def header(self, name: str, value: str) -> "Response":
        self.headers.append((name, value))
        return self


_req_prefix = os.urandom(4).hex().upper()
_req_counter = itertools.count(1)


def new_request_id() -> str:
    return "%s%016X" % (_req_prefix, next(_req_counter))


_date_cache = [0, ""]


def http_date() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, email.utils.formatdate(now, usegmt=True)]
    return _date_cache[1]


def to_bytes(resp: Response, keep_alive: bool) -> bytes:
    lines = ["HTTP/1.1 %d %s" % (resp.status, REASONS.get(resp.status, "Unknown")),
             "Server: alicom-emulator", "Date: " + http_date()]
    lines.extend("%s: %s" % hv for hv in resp.headers)
    if resp.status not in (204, 304):
        lines.append("Content-Length: %d" % len(resp.body))
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + resp.body


def json_response(status: int, obj, extra_headers=()) -> Response:
    body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    return Response(status, body, [("Content-Type", "application/json;charset=utf-8"), *extra_headers])


# --- MNS -----------------------------------------------------------------------------

def _mns(status: int, body: str, request_id: str) -> Response:
    headers = [("x-mns-request-id", request_id), ("x-mns-version", "2015-06-06")]
    if body:
        headers.append(("Content-Type", "text/xml;charset=utf-8"))
    return Response(status, body.encode("utf-8"), headers)


def _message_fields(m: ReceivedMessage) -> str:
    text = ("<MessageId>%s</MessageId><ReceiptHandle>%s</ReceiptHandle>"
            "<MessageBodyMD5>%s</MessageBodyMD5><MessageBody>%s</MessageBody>"
            "<EnqueueTime>%d</EnqueueTime><NextVisibleTime>%d</NextVisibleTime>"
            "<FirstDequeueTime>%d</FirstDequeueTime><DequeueCount>%d</DequeueCount>"
            "<Priority>%d</Priority>") % (
        m.message_id, escape(m.receipt_handle), m.body_md5, escape(m.body), m.enqueue_time,
        m.next_visible_time, m.first_dequeue_time, m.dequeue_count, m.priority)
    if m.broken is not None:
        name, mode = m.broken
        text = _break_field(text, name, mode)
    return text


def _break_field(text: str, name: str, mode: str) -> str:
    """Empty (`<X></X>`) or drop the element `name` of one rendered message."""
    start = text.index("<%s>" % name)
    end = text.index("</%s>" % name, start) + len(name) + 3
    return text[:start] + ("<%s></%s>" % (name, name) if mode == "empty" else "") + text[end:]


def mns_messages(messages: list[ReceivedMessage], request_id: str) -> Response:
    inner = "".join("<Message>%s</Message>" % _message_fields(m) for m in messages)
    return _mns(200, '%s<Messages xmlns="%s">%s</Messages>' % (XML_DECL, MNS_XMLNS, inner), request_id)


def mns_message(m: ReceivedMessage, request_id: str) -> Response:
    return _mns(200, '%s<Message xmlns="%s">%s</Message>' % (XML_DECL, MNS_XMLNS, _message_fields(m)),
                request_id)


def mns_peeked(messages, batch: bool, request_id: str) -> Response:
    def one(m):
        return ("<MessageId>%s</MessageId><MessageBodyMD5>%s</MessageBodyMD5><MessageBody>%s</MessageBody>"
                "<EnqueueTime>%d</EnqueueTime><FirstDequeueTime>%d</FirstDequeueTime>"
                "<DequeueCount>%d</DequeueCount><Priority>%d</Priority>") % (
            m.message_id, m.body_md5, escape(m.body), int(m.enqueue_time * 1000),
            int(m.first_dequeue_time * 1000), m.dequeue_count, m.priority)
    if batch:
        inner = "".join("<Message>%s</Message>" % one(m) for m in messages)
        return _mns(200, '%s<Messages xmlns="%s">%s</Messages>' % (XML_DECL, MNS_XMLNS, inner), request_id)
    return _mns(200, '%s<Message xmlns="%s">%s</Message>' % (XML_DECL, MNS_XMLNS, one(messages[0])), request_id)


def mns_change_visibility(handle: str, next_visible_ms: int, request_id: str) -> Response:
    return _mns(200, '%s<ChangeVisibility xmlns="%s"><ReceiptHandle>%s</ReceiptHandle>'
                     '<NextVisibleTime>%d</NextVisibleTime></ChangeVisibility>'
                % (XML_DECL, MNS_XMLNS, escape(handle), next_visible_ms), request_id)


def mns_no_content(request_id: str) -> Response:
    return _mns(204, "", request_id)


def mns_error(err: MnsError, request_id: str, host_id: str) -> Response:
    if isinstance(err, BatchDeleteFailed):
        # The SDK drops empty elements and then calls the answer damaged, so every
        # ErrorMessage must be non-empty.
        inner = "".join(
            "<Error><ErrorCode>%s</ErrorCode><ErrorMessage>%s</ErrorMessage>"
            "<ReceiptHandle>%s</ReceiptHandle></Error>" % (code, escape(msg or code), escape(h))
            for h, code, msg in err.failures)
        return _mns(err.status, '%s<Errors xmlns="%s">%s</Errors>' % (XML_DECL, MNS_XMLNS, inner), request_id)
    body = ('%s<Error xmlns="%s"><Code>%s</Code><Message>%s</Message><RequestId>%s</RequestId>'
            '<HostId>%s</HostId></Error>') % (XML_DECL, MNS_XMLNS, escape(err.code),
                                               escape(err.message or err.code), request_id, escape(host_id))
    return _mns(err.status, body, request_id)


# --- POP RPC -----------------------------------------------------------------------------

def rpc_ok(obj: dict, request_id: str) -> Response:
    return json_response(200, {"RequestId": request_id, **obj})


def rpc_error(err: RpcError, request_id: str, host_id: str) -> Response:
    return json_response(err.status, {"RequestId": request_id, "HostId": host_id,
                                      "Code": err.code, "Message": err.message})


def _xml_elements(obj) -> str:
    if isinstance(obj, dict):
        return "".join(f"<{k}>{_xml_elements(v)}</{k}>" for k, v in obj.items())
    if isinstance(obj, list):
        return "".join(_xml_elements(v) for v in obj)
    return escape("" if obj is None else str(obj))


def rpc_as_xml(response: Response, root: str) -> Response:
    """A POP answer as XML, the format an RPC API answers in unless the request says Format=JSON."""
    obj = json.loads(response.body)
    body = f'<?xml version="1.0" encoding="UTF-8"?><{root}>{_xml_elements(obj)}</{root}>'.encode("utf-8")
    return Response(response.status, body, [("Content-Type", "text/xml;charset=utf-8")])


# --- Function Compute / Lambda --------------------------------------------------------------

def fc_error(err: FcError, request_id: str) -> Response:
    return json_response(err.status, {"ErrorCode": err.code, "ErrorMessage": err.message},
                         [("X-Fc-Request-Id", request_id)])


def lambda_error(err: LambdaError, request_id: str) -> Response:
    return json_response(err.status, {"Type": err.error_type, "message": err.message},
                         [("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", err.code)])


def function_error_body(exc: BaseException) -> bytes:
    """What a Python runtime reports for an unhandled exception."""
    return json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__,
                       "stackTrace": []}).encode("utf-8")


def render_error(service: str, err: EmulatorError, request_id: str, host_id: str) -> Response:
    if service == "mns":
        return mns_error(err if isinstance(err, MnsError) else MnsError(err.code, err.message, err.status),
                         request_id, host_id)
    if service == "rpc":
        return rpc_error(err if isinstance(err, RpcError) else RpcError(err.code, err.message, err.status),
                         request_id, host_id)
    if service == "fc":
        return fc_error(err if isinstance(err, FcError) else FcError(err.code, err.message, err.status),
                        request_id)
    if service == "lambda":
        le = err if isinstance(err, LambdaError) else LambdaError(err.code, err.message, err.status)
        return lambda_error(le, request_id)
    return json_response(err.status, {"Code": err.code, "Message": err.message})
