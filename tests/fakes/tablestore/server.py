"""HTTP on loopback: `TablestoreServer` (the fake a test starts) checks each request as the
service does (x-ots-date skew, content MD5, instance, STS token, the request signature),
records it in `server.requests`, and hands it to the APIs; `_Handler` speaks HTTP/1.1
keep-alive and sends each signed response in one socket write (headers and body apart would
meet the client's delayed ACK). `server.hang.on()` accepts requests and never answers them."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

import tablestore.protobuf.table_store_pb2 as pb2

from scripts.stand_ins.hang import Hang

from .apis import APIS
from .errors import OTSFault
from .faults import Faults
from .model import MAX_RANGE_ROWS, TablestoreModel
from .signing import request_signature, response_signature

API_VERSION = "2015-12-31"
MAX_SKEW_SECONDS = 15 * 60


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's urllib3 pool expects
    server: "_HTTPServer"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args) -> None:  # quiet: tests read server.requests instead
        pass

    def do_POST(self) -> None:
        fake: TablestoreServer = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        uri = self.path.split("?", 1)[0]
        api = uri.lstrip("/")
        fake.requests.append((api, headers))
        if fake.hang.hold(self, api, headers):
            return
        secret: Optional[str] = None
        try:
            secret = fake.check_request(uri, headers, body)
            handler = APIS.get(api)
            if handler is None:
                raise OTSFault("OTSUnsupportOperation", f"Unsupported operation: '{api}'.", 400)
            fake.faults.request_fault(api)
            payload, status = handler(fake.model, body, fake.faults), 200
        except OTSFault as fault:
            err = pb2.Error()
            err.code, err.message = fault.code, fault.message
            payload, status = err.SerializeToString(), fault.status
            if fault.code == "OTSAuthFailed":
                secret = None  # the client skips the check on auth failures; we cannot sign for it
        self._send(status, payload, uri, headers.get("x-ots-accesskeyid", ""), secret)

    def _send(self, status: int, payload: bytes, uri: str, access_key_id: str, secret: Optional[str]) -> None:
        out = {
            "x-ots-contentmd5": base64.b64encode(hashlib.md5(payload).digest()).decode("ascii"),
            "x-ots-requestid": str(uuid.uuid4()),
            "x-ots-date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "x-ots-contenttype": "protocol buffer",
        }
        if secret is not None:
            out["authorization"] = f"OTS {access_key_id}:{response_signature(secret, uri, out)}"
        reason = self.responses.get(status, ("Error",))[0]
        head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/x-protobuf",
                f"Content-Length: {len(payload)}"]
        head += [f"{k}: {v}" for k, v in out.items()]
        # One write for status, headers and body (a split write meets the client's delayed ACK).
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: "TablestoreServer"


class TablestoreServer:
    """The fake on 127.0.0.1: `with TablestoreServer(...) as ots: OTSClient(ots.endpoint, ...)`."""

    def __init__(self, instance: str = "test-instance", access_key_id: str = "test-ak",
                 access_key_secret: str = "test-secret", sts_token: Optional[str] = None,
                 max_range_rows: int = MAX_RANGE_ROWS):
        self.instance = instance
        self.credentials = {access_key_id: (access_key_secret, sts_token)}
        self.model = TablestoreModel(max_range_rows=max_range_rows)
        self.faults = Faults()
        self.hang = Hang()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # requests
    def check_request(self, uri: str, headers: dict[str, str], body: bytes) -> str:
        """Authenticate a request as the service does; return the secret to sign the answer with."""
        for name in ("x-ots-date", "x-ots-apiversion", "x-ots-accesskeyid", "x-ots-instancename",
                     "x-ots-contentmd5", "x-ots-signature"):
            if name not in headers:
                raise OTSFault("OTSAuthFailed", f"Missing header: '{name}'.", 403)
        if headers["x-ots-apiversion"] != API_VERSION:
            raise OTSFault("OTSParameterInvalid", "Unsupported API version.", 400)
        sent = dt.datetime.strptime(headers["x-ots-date"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
        if abs((dt.datetime.now(dt.timezone.utc) - sent).total_seconds()) > MAX_SKEW_SECONDS:
            raise OTSFault("OTSAuthFailed", "Mismatch between system time and x-ots-date.", 403)
        if headers["x-ots-contentmd5"] != base64.b64encode(hashlib.md5(body).digest()).decode("ascii"):
            raise OTSFault("OTSAuthFailed",
                           "Mismatch between MD5 value of request body and x-ots-contentmd5 in header.", 403)
        known = self.credentials.get(headers["x-ots-accesskeyid"])
        if known is None:
            raise OTSFault("OTSAuthFailed", "The AccessKeyID is disabled or does not exist.", 403)
        secret, token = known
        if token is not None and headers.get("x-ots-ststoken") != token:
            raise OTSFault("OTSAuthFailed", "The security token is invalid or expired.", 403)
        if not hmac.compare_digest(headers["x-ots-signature"], request_signature(secret, uri, headers)):
            raise OTSFault("OTSAuthFailed", "Signature mismatch.", 403)
        if headers["x-ots-instancename"] != self.instance:
            raise OTSFault("OTSAuthFailed", "The instance is not found.", 403)
        return secret

    def api_calls(self, api: Optional[str] = None) -> int:
        return sum(1 for name, _ in self.requests if api is None or name == api)

    # lifecycle
    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "start() first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "TablestoreServer":
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="tablestore-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.hang.off()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def reset(self) -> None:
        """Forget tables, faults and recorded requests (between tests)."""
        with self.model.lock:
            self.model.tables.clear()
            self.model.missing_row_condition = "evaluate"
        self.faults.clear()
        self.hang.off()
        self.requests.clear()

    def __enter__(self) -> "TablestoreServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
