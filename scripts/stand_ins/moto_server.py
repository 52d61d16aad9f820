"""moto in server mode on loopback (S3, DynamoDB, Secrets Manager, SSM over real sockets), plus a fault proxy.

`MotoServer` wraps `ThreadedMotoServer(ip_address="127.0.0.1", port=0)`; `reset()` is
`POST /moto-api/reset`, so one server serves a whole test session.

`FaultProxy` sits between a client and moto and forwards every request unchanged, unless
a rule says otherwise. Rules reproduce what moto never does on its own: a throttled
`BatchWriteItem` that leaves part of the batch in `UnprocessedItems` (only the processed
part reaches moto), a canned error response (e.g. 503 SlowDown) for the next N matching
requests, a `ValidationException` for DynamoDB requests that carry a given item, or a
request that is accepted and never answered (`proxy.hang`). Each response is sent in one
write.

DynamoDB limits moto misses: real DynamoDB validates a whole `BatchWriteItem` before
writing anything (a partition key over 2,048 bytes or an item over 400 KB refuses the
request, nothing is stored) and refuses more than 25 items or 16 MB in one request. moto
checks the key and item size item by item, storing the items before the bad one, and has
no 25-item limit; the proxy checks those limits first and answers like the service.

Used by the tests (fixtures in tests/fakes/moto_server.py) and by the chaos harness
(scripts/chaos/), which puts real drain processes in front of it.
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import sys
import threading
import urllib.request
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from moto.server import ThreadedMotoServer

from scripts.stand_ins.hang import Hang

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# DynamoDB's documented limits: partition key, item, BatchWriteItem.
DDB_HASH_KEY_BYTES = 2048
DDB_ITEM_BYTES = 400 * 1024
DDB_BATCH_ITEMS = 25
DDB_REQUEST_BYTES = 16 * 1024 * 1024


class MotoServer:
    def __init__(self):
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""
        self._clients: dict = {}

    def start(self) -> "MotoServer":
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def reset(self) -> None:
        request = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def stop(self) -> None:
        self._server.stop()

    def client(self, service: str, endpoint: Optional[str] = None):
        """A plain boto3 client for test setup and checks (not the sink's); cached, models load slowly."""
        import boto3

        key = (service, endpoint or self.endpoint)
        if key not in self._clients:
            self._clients[key] = boto3.session.Session().client(service, endpoint_url=key[1], region_name=REGION,
                                                                 **CREDENTIALS)
        return self._clients[key]


@dataclass
class Rule:
    match: Callable[[str, str, dict, bytes], bool]  # (method, path, headers, body) -> applies?
    times: int
    status: int = 0
    body: bytes = b""
    headers: Optional[dict] = None
    unprocess: int = 0  # BatchWriteItem: leave this many items of the batch unprocessed
    cut: bool = False  # forward, then send only half of the answer's body and close the connection


class _ProxyServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that hung up (a killed process, or one that gave up on a held request) is no
        error of the proxy's; anything else is printed as usual."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FaultProxy:
    """A loopback proxy to moto that can throttle or fail requests on demand."""

    def __init__(self, upstream: str, hash_key: str = "key"):
        self.upstream = upstream.split("://", 1)[1]
        self.hash_key = hash_key  # the partition key attribute of the DynamoDB tables behind it
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str, dict]] = []
        self.lock = threading.Lock()
        self.hang = Hang()  # proxy.hang.on(): accept requests, never answer
        self._httpd: Optional[ThreadingHTTPServer] = None

    def fail(self, match, times: int, status: int, body: bytes = b"", headers: Optional[dict] = None) -> None:
        """Answer the next `times` requests `match(method, path, headers)` picks with this response."""
        with self.lock:
            self.rules.append(Rule(lambda m, p, h, b: match(m, p, h), times, status, body, headers))

    def refuse_while(self, match: Callable[[str, str, dict, bytes], bool], status: int, body: bytes = b"",
                     headers: Optional[dict] = None) -> None:
        """Answer every request `match(method, path, headers, body)` picks with this response, for
        as long as the proxy runs (`match` decides when it applies)."""
        with self.lock:
            self.rules.append(Rule(match, 1 << 30, status, body, headers))

    def s3_error(self, method: str, times: int, code: str = "SlowDown", status: int = 503) -> None:
        body = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                "<Message>Please reduce your request rate.</Message></Error>")
        self.fail(lambda m, p, h: m == method, times, status, body.encode(), {"Content-Type": "application/xml"})

    def refuse_items(self, marker: str, code: str = "ValidationException",
                     message: str = "One or more parameter values were invalid: refused by the test") -> None:
        """DynamoDB refuses every write request holding an item whose key contains `marker`, as it
        refuses a request with one invalid item: HTTP 400, nothing of the request stored."""
        body = json.dumps({"__type": f"com.amazon.coral.validate#{code}", "message": message}).encode()
        with self.lock:
            self.rules.append(Rule(lambda m, p, h, b: any(marker in k for k in self.written_keys(h, b)), 1 << 30, 400,
                                   body, {"Content-Type": "application/x-amz-json-1.0"}))

    def written_keys(self, headers: dict, body: bytes) -> list[str]:
        """The partition keys of the items a BatchWriteItem or PutItem request writes."""
        target = headers.get("x-amz-target", "")
        if target.endswith(".BatchWriteItem"):
            items = [w["PutRequest"]["Item"] for ws in json.loads(body).get("RequestItems", {}).values() for w in ws
                     if "PutRequest" in w]
        elif target.endswith(".PutItem"):
            items = [json.loads(body)["Item"]]
        else:
            return []
        return [str(next(iter(item.get(self.hash_key, {"S": ""}).values()))) for item in items]

    def cut_short(self, method: str, times: int, path_contains: str = "") -> None:
        """The next `times` `method` requests (to paths holding `path_contains`) get their answer's
        headers and half its body, then the connection closes (a body cut short in transit)."""
        with self.lock:
            self.rules.append(Rule(lambda m, p, h, b: m == method and path_contains in p, times, cut=True))

    def unprocessed(self, times: int, items: int) -> None:
        """The next `times` BatchWriteItem calls store all but `items` items and return those unprocessed."""
        with self.lock:
            self.rules.append(Rule(lambda m, p, h, b: h.get("x-amz-target", "").endswith(".BatchWriteItem"), times,
                                   unprocess=items))

    def _rule(self, method: str, path: str, headers: dict, body: bytes) -> Optional[Rule]:
        with self.lock:
            for rule in self.rules:
                if rule.times > 0 and rule.match(method, path, headers, body):
                    rule.times -= 1
                    return rule
        return None

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                proxy.requests.append((self.command, self.path, headers))
                if proxy.hang.hold(self, self.command, self.path, headers):
                    return
                refusal = proxy.dynamodb_limits(headers, body)
                if refusal:
                    return self._reply(400, {"Content-Type": "application/x-amz-json-1.0"}, refusal)
                rule = proxy._rule(self.command, self.path, headers, body)
                if rule and rule.status:
                    return self._reply(rule.status, rule.headers or {}, rule.body)
                held = []
                if rule and rule.unprocess:
                    body, held = _hold_back(body, rule.unprocess)
                status, out_headers, out_body = proxy._forward(self.command, self.path, headers, body)
                if held and status == 200:
                    out_body = _report_unprocessed(out_body, held)
                    out_headers = {k: v for k, v in out_headers.items() if k.lower() != "x-amz-crc32"}
                    out_headers["x-amz-crc32"] = str(zlib.crc32(out_body))  # botocore checks it
                if rule and rule.cut:
                    self.close_connection = True
                    return self._reply(status, out_headers, out_body, cut=True)
                self._reply(status, out_headers, out_body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

            def _reply(self, status, headers, body, cut=False):
                lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('Error',))[0]}"]
                lowered = {k.lower(): v for k, v in headers.items()}
                length = lowered.get("content-length") if self.command == "HEAD" else None
                headers = {k: v for k, v in headers.items()
                           if k.lower() not in ("content-length", "transfer-encoding", "connection")}
                # A HEAD answer carries the object's length but no body.
                lines += [f"{k}: {v}" for k, v in headers.items()] + [f"Content-Length: {length or len(body)}"]
                payload = b"" if self.command == "HEAD" else body[: len(body) // 2] if cut else body
                self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)

        self._httpd = _ProxyServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def dynamodb_limits(self, headers: dict, body: bytes) -> Optional[bytes]:
        """The error body DynamoDB answers a write over its limits with, or None."""
        target = headers.get("x-amz-target", "")
        if target.endswith(".BatchWriteItem"):
            request = json.loads(body)
            items = [w["PutRequest"]["Item"] for ws in request.get("RequestItems", {}).values() for w in ws
                     if "PutRequest" in w]
            count = sum(len(ws) for ws in request.get("RequestItems", {}).values())
            if count > DDB_BATCH_ITEMS:
                return _ddb_error("ValidationException", "Too many items requested for the BatchWriteItem call")
            if len(body) > DDB_REQUEST_BYTES:  # the message text is ours; the code is the service's
                return _ddb_error("ValidationException", "The request size exceeds the 16 MB limit of BatchWriteItem")
        elif target.endswith(".PutItem"):
            items = [json.loads(body)["Item"]]
        else:
            return None
        for item in items:
            key = item.get(self.hash_key, {})
            if _attr_bytes(key) > DDB_HASH_KEY_BYTES:
                return _ddb_error("ValidationException",
                                  "One or more parameter values were invalid: Size of hashkey "
                                  f"has exceeded the maximum size limit of{DDB_HASH_KEY_BYTES} bytes")
            if sum(len(name.encode()) + _attr_bytes(value) for name, value in item.items()) > DDB_ITEM_BYTES:
                return _ddb_error("ValidationException", "Item size has exceeded the maximum allowed size")
        return None

    def _forward(self, method: str, path: str, headers: dict, body: bytes):
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            headers = {k: v for k, v in headers.items() if k not in ("content-length", "connection", "expect")}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            out = {k: v for k, v in response.getheaders() if k.lower() != "content-length" or method == "HEAD"}
            return response.status, out, data
        finally:
            conn.close()

    def stop(self) -> None:
        self.hang.off()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()


def _ddb_error(code: str, message: str) -> bytes:
    return json.dumps({"__type": f"com.amazon.coral.validate#{code}", "message": message}).encode()


def _attr_bytes(value: dict) -> int:
    """An attribute value's size as DynamoDB counts it (strings and binaries by their bytes)."""
    if not value:
        return 0
    (kind, data), = value.items()
    if kind == "S":
        return len(data.encode("utf-8"))
    if kind == "B":
        return len(base64.b64decode(data))
    if kind == "N":
        return len(data.lstrip("-").replace(".", "")) // 2 + 1
    if kind in ("M", "L"):
        inner = data.items() if kind == "M" else enumerate(data)
        return 3 + sum((len(str(k).encode()) if kind == "M" else 0) + _attr_bytes(v) + 1 for k, v in inner)
    return 1  # BOOL, NULL


def _hold_back(body: bytes, count: int) -> tuple[bytes, list]:
    """Drop the last `count` put requests of a BatchWriteItem body; return the new body and them."""
    request = json.loads(body)
    held = []
    for table, writes in request["RequestItems"].items():
        take = min(count - len(held), len(writes) - 1)  # moto rejects an empty batch
        if take > 0:
            held += [(table, w) for w in writes[-take:]]
            request["RequestItems"][table] = writes[:-take]
    return json.dumps(request).encode(), held


def _report_unprocessed(body: bytes, held: list) -> bytes:
    response = json.loads(body or b"{}")
    unprocessed: dict = {}
    for table, write in held:
        unprocessed.setdefault(table, []).append(write)
    response["UnprocessedItems"] = unprocessed
    return json.dumps(response).encode()


def closed_port_endpoint() -> str:
    """An http URL on loopback where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"

