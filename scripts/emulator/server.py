"""The loopback HTTP server: keep-alive, TCP_NODELAY, one socket write per answer,
faults and latency applied around the service handlers."""
from __future__ import annotations

import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import responses as r
from .exceptions import EmulatorError
from .request import Request
from .urls import Route, resolve

MAX_BODY = 16 * 1024 * 1024

_INTERNAL = {
    "mns": "InternalError", "rpc": "InternalError", "fc": "InternalServerError", "lambda": "ServiceException",
}
HANG_POLL_SECONDS = 0.05


def internal_error(service: str) -> EmulatorError:
    return EmulatorError(_INTERNAL[service], "The request processing has failed due to some unknown error.", 500)


class Dispatcher:
    """Routes one parsed request to a service and applies faults and latency."""

    def __init__(self, backend, mns, rpc, functions, admin):
        self.backend = backend
        self.services = {"mns": mns, "rpc": rpc, "fc": functions, "lambda": functions}
        self.admin = admin

    def handle(self, handler: "Handler", req: Request) -> None:
        route = resolve(req)
        if route.service == "admin":
            handler.send(self.admin.dispatch(req))
            return
        if route.service == "none":
            handler.send(r.json_response(404, {"Code": "NotFound", "Message": f"No API at {req.method} {req.path}."}))
            return
        self.backend.stats.count(route.action, route.service)
        message_type = route.message_type(req)
        decision = self.backend.faults.decide(route.action, route.service, message_type)
        if decision.delay:
            time.sleep(decision.delay)
        fault = decision.fault
        if fault:
            self.backend.stats.count_fault(fault)
        if fault == "hang":
            handler.hang(lambda: self.backend.faults.still_hangs(route.action, route.service, message_type))
            return
        if fault == "drop":
            handler.drop()
            return
        if fault == "slow":
            time.sleep(decision.config.slow_seconds)
            fault = "server_error"
        if fault in ("server_error", "throttle"):
            err = (decision.config.throttle_error(route.service) if fault == "throttle"
                   else internal_error(route.service))
            resp = r.render_error(route.service, err, r.new_request_id(), req.host_id)
        else:
            resp = self.call(route, req)
        if fault == "drop_after_commit":
            handler.drop()
            return
        handler.send(resp)

    def call(self, route: Route, req: Request) -> r.Response:
        service = self.services[route.service]
        if route.service == "rpc":
            return service.dispatch(route.action, req)
        return service.dispatch(route.action, req, *route.args)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True      # TCP_NODELAY on every accepted socket
    server_version = "alicom-emulator"

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass  # log nothing: requests carry signatures and tokens

    def handle_one_request(self):
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
                return
            if not self.parse_request():
                return
            body = self._read_body()
            if body is None:
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            host_id = "http://" + headers.get("host", "%s:%d" % self.server.server_address[:2])
            req = Request.from_target(self.command, self.path, headers, body, host_id)
            try:
                self.server.dispatcher.handle(self, req)
            except (TimeoutError, ConnectionError):
                raise
            except Exception as exc:  # an emulator bug: answer 500 rather than print a traceback
                self.close_connection = True
                self.send(r.json_response(500, {"Code": "EmulatorBug", "Message": f"{type(exc).__name__}: {exc}"}))
        except (TimeoutError, ConnectionError, OSError):
            self.close_connection = True

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self.send(r.json_response(413, {"Code": "EntityTooLarge", "Message": "Request body too large."}))
            return None
        return self.rfile.read(length) if length else b""

    def send(self, resp: r.Response) -> None:
        # Status line, headers and body in ONE write: split writes meet the client's
        # delayed ACK and cost ~40 ms per request.
        self.wfile.write(r.to_bytes(resp, keep_alive=not self.close_connection))

    def drop(self) -> None:
        """Close without answering (the request was read completely, so this is a FIN)."""
        self.close_connection = True

    def hang(self, still_hangs) -> None:
        """Answer nothing while `still_hangs()`; return (and close) once the client hangs up,
        or the fault is lifted, or the emulator stops (its sockets are shut down)."""
        sock = self.connection
        with self.server.dispatcher.backend.faults.hanging():
            while still_hangs():
                readable, _, _ = select.select([sock], [], [], HANG_POLL_SECONDS)
                if not readable:
                    continue
                try:
                    if not sock.recv(1, socket.MSG_PEEK):
                        break               # the client closed its end
                except OSError:
                    break
                time.sleep(HANG_POLL_SECONDS)   # it sent more: keep ignoring it
        self.drop()


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, port: int, dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self._conns: set = set()
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), Handler)

    def get_request(self):
        sock, addr = super().get_request()
        with self._conns_lock:
            self._conns.add(sock)
        return sock, addr

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut idle keep-alive connections so their threads end with the server."""
        with self._conns_lock:
            conns = list(self._conns)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
