"""One Alicom MNS queue, read with aliyun-mns-sdk (module `mns`).

The adapter behind the `Queue` protocol of shared/queues.py. The SDK's client is not
thread-safe: each consumer thread owns one `MnsQueue`. Bodies are left undecoded
(`base64decode=False`): with SDK decoding on, a single body with bad base64 fails the whole
batch, so one poison message would block every message received with it. We decode each
body ourselves (shared/decode.py).

Every request is built, signed, sent and error-checked by the SDK. Two steps are ours.
Reading a successful BatchReceiveMessage answer: the SDK builds a `xml.dom.minidom` tree of
it, and that was about a third of the drain's CPU per message, the drain's limit on one vCPU
(docs/ARCHITECTURE.md, "Performance"). `ReceiptClient` reads the same XML with ElementTree into
the SDK's own response entries, with the SDK's rules. And writing the BatchDeleteMessage
body, byte for byte what the SDK's minidom encoder writes. tests/test_mns_queue.py holds
both to the SDK's results on the same bytes.
"""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from typing import Any, Optional, Sequence

from mns.mns_client import MNSClient, RequestInternal
from mns.mns_exception import MNSClientException, MNSClientNetworkException, MNSServerException
from mns.mns_request import (
    BatchDeleteMessageRequest,
    BatchDeleteMessageResponse,
    BatchReceiveMessageRequest,
    BatchReceiveMessageResponse,
    ReceiveMessageResponseEntry,
)
from mns.mns_tool import BatchDeleteMessageValidator, BatchReceiveMessageValidator
from mns.mns_xml_handler import BatchDeleteMessageDecoder
from mns.pkg_info import version as SDK_VERSION

from shared.queues import MAX_BATCH, DeleteOutcome, QueueError, ReceivedMessage
from shared.records import MnsMeta
from shared.settings import check_endpoint
from shared.tokens import MnsToken

__all__ = ["MnsQueue", "ReceiptClient", "read_received_messages", "receipt_handles_xml",
           "MAX_BATCH", "DeleteOutcome", "QueueError", "ReceivedMessage"]

# `ReceiptClient` calls the client's own steps (build_header, http.send_request, check_status) and
# reads receive answers itself: run it only on SDK versions tests/test_mns_queue.py held it to.
TESTED_SDK_VERSIONS = ("1.3.",)
if not SDK_VERSION.startswith(TESTED_SDK_VERSIONS):
    tested = ', '.join(v + 'x' for v in TESTED_SDK_VERSIONS)
    raise ImportError(f"shared/mns_queue.py was tested with aliyun-mns-sdk {tested}, "
                      f"not {SDK_VERSION}: run tests/test_mns_queue.py against it, then add it to TESTED_SDK_VERSIONS")

# Codes after which the token must be replaced (no dedicated "token expired" code exists).
AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "SecurityTokenExpired",
              "InvalidSecurityToken", "SecurityTokenMalformed", "Unauthorized"}
# Codes that say the request itself can never succeed as configured.
FATAL_CODES = {"QueueNotExist", "InvalidArgument", "MessageNotExist", "TimeExpired"}
# Codes that ask us to slow down (MNS's QPS limit, and the generic forms).
THROTTLING_CODES = {"QpsLimitExceeded", "TooManyRequests", "Throttling", "ServiceUnavailable"}
# What to tell the operator when retrying cannot help until something outside is fixed.
HINTS = {
    "TimeExpired": "the request's Date is more than 15 minutes off MNS's clock: this host's clock is off "
                   "(check its time synchronisation)",
}


MNS_XMLNS_URI = "http://mns.aliyuncs.com/doc/v1/"


def read_received_messages(xml_text: str, request_id: str = "") -> list[ReceiveMessageResponseEntry]:
    """A BatchReceiveMessage answer as the SDK's entries, the SDK's way, with ElementTree.

    Same rules as `mns.mns_xml_handler.BatchRecvMessageDecoder` with base64 decoding off:
    an answer that is not XML, has no <Messages>, or holds a message with a field missing,
    empty or (for the counts and times) not an integer raises
    MNSClientNetworkException("RespDataDamaged"); the drain counts it and receives again.
    One difference, kept on purpose: an empty <MessageBody/> is read as "" (the SDK fails
    the whole batch on it, so one such message would block the queue; ours dead-letters it).
    """
    if not xml_text:
        raise MNSClientNetworkException("RespDataDamaged", "Xml data is \"\"!", request_id)
    try:
        root = ElementTree.fromstring(xml_text)
    except ElementTree.ParseError:
        raise MNSClientNetworkException("RespDataDamaged", "answer is not XML", request_id) from None
    if root.tag.rpartition("}")[2] != "Messages":  # the SDK looks for <Messages> anywhere in the answer
        found = next((e for e in root.iter() if e.tag.rpartition("}")[2] == "Messages"), None)
        if found is None:
            raise MNSClientNetworkException("RespDataDamaged", "No element with tag name 'Messages'.", request_id)
        root = found
    ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    message_tag = ns + "Message"
    entries = []
    for node in root:
        if node.tag != message_tag:
            continue
        fields: dict[str, Any] = {child.tag[len(ns):]: child.text for child in node}
        try:
            entry = ReceiveMessageResponseEntry()
            entry.message_body = fields["MessageBody"] or ""
            entry.dequeue_count = int(fields["DequeueCount"])
            entry.enqueue_time = int(fields["EnqueueTime"])
            entry.first_dequeue_time = int(fields["FirstDequeueTime"])
            entry.priority = int(fields["Priority"])
            entry.next_visible_time = int(fields["NextVisibleTime"])
            entry.message_id = fields["MessageId"]
            entry.message_body_md5 = fields["MessageBodyMD5"]
            entry.receipt_handle = fields["ReceiptHandle"]
            entry.message_group_id = fields.get("MessageGroupId") or ""
        except (KeyError, TypeError, ValueError):
            raise MNSClientNetworkException("RespDataDamaged", "a message lacks a required field", request_id) from None
        if not (entry.message_id and entry.receipt_handle and entry.message_body_md5):
            raise MNSClientNetworkException("RespDataDamaged", "a message lacks a required field", request_id)
        entries.append(entry)
    return entries


def _escape(text: str) -> str:
    """XML text escaping as minidom writes it (it escapes '"' in text too)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")



def receipt_handles_xml(handles: Sequence[str]) -> bytes:
    """A BatchDeleteMessage body, byte for byte what the SDK's minidom encoder writes."""
    items = "".join(f"<ReceiptHandle>{_escape(h)}</ReceiptHandle>" for h in handles) if handles else ""
    return (f'<?xml version="1.0" encoding="utf-8"?><ReceiptHandles xmlns="{MNS_XMLNS_URI}">{items}'
            f"</ReceiptHandles>").encode("utf-8")


class ReceiptClient(MNSClient):
    """The SDK's MNS client; only a successful batch receive is read by `read_received_messages`."""

    def batch_receive_message(self, req, resp):
        # The SDK's own steps (mns_client.MNSClient.batch_receive_message), decoder aside, and
        # resp.status left unset here and below: nothing reads it (check_status reads resp_inter).
        BatchReceiveMessageValidator.validate(req)
        url = f"/queues/{req.queue_name}/messages?numOfMessages={req.batch_size}"
        if req.wait_seconds != -1:
            url += f"&waitseconds={req.wait_seconds}"
        req_inter = RequestInternal(req.method, url)
        self.build_header(req, req_inter)
        resp_inter = self.http.send_request(req_inter)
        resp.header = resp_inter.header
        self.check_status(req_inter, resp_inter, resp)
        if resp.error_data == "":
            resp.message_list = read_received_messages(resp_inter.data, req_inter.get_req_id())

    def batch_delete_message(self, req, resp):
        # The SDK's own steps (mns_client.MNSClient.batch_delete_message), encoder aside.
        BatchDeleteMessageValidator.validate(req)
        req_inter = RequestInternal(req.method, f"/queues/{req.queue_name}/messages")
        req_inter.data = receipt_handles_xml(req.receipt_handle_list)
        self.build_header(req, req_inter)
        resp_inter = self.http.send_request(req_inter)
        resp.header = resp_inter.header
        self.check_status(req_inter, resp_inter, resp, BatchDeleteMessageDecoder)


def _error(operation: str, exc: Exception) -> QueueError:
    if isinstance(exc, MNSServerException):
        code = str(exc.type or "Unknown")
        return QueueError(operation, code, auth=code in AUTH_CODES, fatal=code in FATAL_CODES,
                          throttled=code in THROTTLING_CODES, hint=HINTS.get(code))
    if isinstance(exc, MNSClientException):
        return QueueError(operation, str(getattr(exc, "type", "") or "NetworkError"))
    return QueueError(operation, type(exc).__name__)


class MnsQueue:
    """Receive and delete in batches of up to 16 on one queue with one token."""

    def __init__(self, endpoint: str, queue_name: str, token: MnsToken, timeout: float):
        check_endpoint(endpoint)  # https except loopback
        self.token = token
        self.queue_name = queue_name
        self.client = ReceiptClient(endpoint.rstrip("/"), token.access_key_id, token.access_key_secret,
                                    security_token=token.security_token)
        self.timeout: Optional[float] = None
        self.set_timeout(timeout)

    # The SDK's Queue object does no more than these two methods (request, response, client
    # call), but importing mns.queue loads `deprecated` -> wrapt -> asyncio, about 65 ms of every
    # cold start; the requests, the client and its signing are the SDK's all the same.
    def _batch_receive(self, batch_size: int, wait_seconds: int) -> list:
        # base64decode=False: bodies are decoded one by one (shared/decode.py), see the docstring.
        request = BatchReceiveMessageRequest(self.queue_name, batch_size, False, wait_seconds)
        response = BatchReceiveMessageResponse()
        self.client.batch_receive_message(request, response)
        return response.message_list

    def _batch_delete(self, handles: list[str]) -> None:
        self.client.batch_delete_message(BatchDeleteMessageRequest(self.queue_name, handles),
                                         BatchDeleteMessageResponse())

    def set_timeout(self, seconds: float) -> None:
        """Socket timeout for the next calls (the SDK reconnects, so change it rarely)."""
        seconds = max(0.1, float(seconds))  # a last delete may have only a fraction of a second left
        if self.timeout is None or abs(seconds - self.timeout) > 0.25:
            self.client.set_connection_timeout(seconds)
            self.timeout = seconds

    def receive(self, max_messages: int, wait_seconds: int) -> list[ReceivedMessage]:
        """Up to `max_messages` (<= 16); [] when the queue has none (after the long poll)."""
        try:
            messages = self._batch_receive(max(1, min(MAX_BATCH, max_messages)), int(wait_seconds))
        except MNSServerException as exc:
            if exc.type == "MessageNotExist":
                return []
            raise _error("BatchReceiveMessage", exc) from None
        except Exception as exc:  # network errors, malformed answers
            raise _error("BatchReceiveMessage", exc) from None
        out = []
        for m in messages:
            out.append(ReceivedMessage(
                receipt_handle=m.receipt_handle,
                body=m.message_body,  # str: read_received_messages reads the XML text, never bytes
                meta=MnsMeta(message_id=m.message_id, enqueue_time=int(m.enqueue_time),
                             dequeue_count=int(m.dequeue_count), first_dequeue_time=int(m.first_dequeue_time),
                             next_visible_time=int(m.next_visible_time)),
            ))
        return out

    def delete(self, handles: Sequence[str]) -> DeleteOutcome:
        """Batch-delete; per-handle failures are reported, not raised (they come back and are deduplicated)."""
        outcome = DeleteOutcome()
        for start in range(0, len(handles), MAX_BATCH):
            chunk = list(handles[start:start + MAX_BATCH])
            outcome.calls += 1
            try:
                self._batch_delete(chunk)
                outcome.deleted += len(chunk)
            except MNSServerException as exc:
                if exc.sub_errors:
                    # The SDK's decoder passes on no sub-error without exactly ErrorCode, ErrorMessage
                    # and ReceiptHandle (it raises RespDataDamaged instead).
                    failed = {e["ReceiptHandle"]: e["ErrorCode"] for e in exc.sub_errors}
                    outcome.failed.update(failed)
                    outcome.deleted += len([h for h in chunk if h not in failed])
                else:
                    raise _error("BatchDeleteMessage", exc) from None
            except Exception as exc:
                raise _error("BatchDeleteMessage", exc) from None
        return outcome
