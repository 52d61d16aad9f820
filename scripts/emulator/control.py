"""`Emulator`: the Python control surface — start/stop the server and drive its state."""
from __future__ import annotations

import threading

from .admin_api import AdminResponses
from .faults import FaultInjector
from .functions_api import FunctionResponses
from .mns_api import MnsResponses
from .models import MNS_ACTIONS, EmulatorBackend, RpcRefusal, SendDetailsRefusal, TokenRefusal, receipt_body
from .rpc_api import RpcResponses
from .server import Dispatcher, EmulatorHTTPServer

DEFAULT_AK = "LTAIexampleAK"
DEFAULT_SECRET = "exampleSecret"


class Trickle:
    """Enqueues bodies (str) or receipts (dict) one at a time, `interval` seconds apart,
    on its own thread, until done, stopped, or the emulator stops."""

    def __init__(self, emulator: "Emulator", name: str, items, interval: float):
        if interval < 0:
            raise ValueError("interval must be >= 0")
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(emulator, name, list(items), float(interval)),
                                        name=f"trickle-{name}", daemon=True)
        self._thread.start()

    def _run(self, emulator: "Emulator", name: str, items: list, interval: float) -> None:
        for i, item in enumerate(items):
            if i and self._stop.wait(interval):
                return
            if not emulator.running:
                return
            enqueue = emulator.enqueue_receipt if isinstance(item, dict) else emulator.enqueue
            self.ids.append(enqueue(name, item))

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once every item was enqueued or the trickle was stopped."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


class Emulator:
    """Loopback stand-in for Dybaseapi, MNS, Dysmsapi, Function Compute and Lambda.

    >>> with Emulator(customer_keys={"LTAIexampleAK": "exampleSecret"}) as emu:
    ...     emu.create_queue(emu.queue_name("SmsReport"))

    Failure controls, each also on the admin HTTP API (`admin_api`):
      set_faults(...)            per-request faults: server_error, throttle (throttle_code),
                                 drop, drop_after_commit, slow, hang; scoped by apis and
                                 message_types
      refuse_tokens(type, code)  refuse one message type's tokens
      expire_tokens_on(action)   tokens expire when the next such MNS request arrives
      malform_receives(queue, field, mode, count)   broken 200 answers, queue untouched
      fail_deletes(queue, handles, times)           deletes that fail some handles
      set_visibility_timeout(queue, s), issue_role_credentials(), set_clock_skew(s), ...
    Observation: stats(), queue_state(), redeliveries(), token_requests(), hung_requests().
    """

    def __init__(self, customer_keys: dict[str, str] | None = None, token_lifetime: float = 3600.0,
                 visibility_timeout: float = 30.0, latency: float = 0.0, seed: int | None = 0,
                 uid: str = "1234567890", port: int = 0, jitter: float = 0.0):
        keys = {DEFAULT_AK: DEFAULT_SECRET} if customer_keys is None else customer_keys
        self.backend = EmulatorBackend(keys, token_lifetime, visibility_timeout, seed, uid)
        self.backend.faults = FaultInjector(seed, latency, jitter)
        self._requested_port = port
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> "Emulator":
        with self._lock:
            if self._server is not None:
                return self
            dispatcher = Dispatcher(self.backend, MnsResponses(self.backend), RpcResponses(self.backend),
                                    FunctionResponses(self.backend), AdminResponses(self))
            self._server = EmulatorHTTPServer(self._requested_port, dispatcher)
            self.backend.queues.open()
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"alicom-emulator-{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            if server is None:
                return
            server.shutdown()
            self.backend.functions.kill_all()
            self.backend.queues.close()
            server.close_connections()       # also lets hung requests go at once
            server.server_close()
            self._thread.join(timeout=5)

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return self._server.server_address[1]

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def uid(self) -> str:
        return self.backend.uid

    # -- queues --------------------------------------------------------------------

    def queue_name(self, message_type: str) -> str:
        return self.backend.queue_name(message_type)

    def create_queue(self, name: str, visibility_timeout: float | None = None) -> str:
        self.backend.queues.create_queue(name, visibility_timeout)
        return name

    def delete_queue(self, name: str) -> None:
        self.backend.queues.delete_queue(name)

    def enqueue(self, name: str, body: str) -> str:
        return self.backend.queues.enqueue(name, body)

    def enqueue_receipt(self, name: str, payload: dict) -> str:
        return self.enqueue(name, receipt_body(payload))

    def trickle(self, name: str, items, interval: float) -> Trickle:
        """Enqueue `items` (str bodies or receipt dicts) one every `interval` seconds in the
        background, the first at once; `.ids` grows as they go in, `.wait()` / `.stop()`."""
        return Trickle(self, name, items, interval)

    def queue_state(self, name: str) -> dict:
        return self.backend.queues.state(name)

    def receives(self, name: str) -> list[tuple[int, float, int]]:
        """(numOfMessages, waitseconds, messages returned) of each receive on queue `name` so far."""
        return [(count, wait, got) for queue, count, wait, got in self.backend.queues.receive_log if queue == name]

    def undeleted(self, name: str) -> int:
        """How many messages are still in the queue, visible or in flight (cheap to poll)."""
        return self.backend.queues.undeleted(name)

    def message_ids(self, name: str) -> list[str]:
        """Ids of the messages still in the queue, visible or in flight (not yet deleted)."""
        return self.backend.queues.message_ids(name)

    def set_visibility_timeout(self, name: str, seconds: float) -> None:
        """The queue's VisibilityTimeout (0..43200 s) from its next receive on."""
        self.backend.queues.set_visibility_timeout(name, seconds)

    def visibility_timeout(self, name: str) -> float:
        return self.backend.queues.visibility_timeout(name)

    def redeliveries(self, name: str) -> dict[str, int]:
        """Message id -> times received, for each message received more than once (deleted or not)."""
        return self.backend.queues.redeliveries(name)

    # -- queue faults ------------------------------------------------------------------

    def malform_receives(self, name: str, field: str = "MessageId", mode: str = "empty", count: int = 1) -> None:
        """The next `count` receives on the queue that find a visible message answer 200 with ONE
        message whose `field` (MessageId, ReceiptHandle, EnqueueTime, ...) is empty or missing.
        Nothing changes in the queue: the message stays visible; the answer's handle deletes nothing."""
        self.backend.queues.malform_receives(name, field, mode, count)

    def fail_deletes(self, name: str, handles: int = 1, times: int = 1) -> None:
        """Each of the next `times` deletes on the queue fails its first `handles` receipt handles
        with ReceiptHandleError (BatchDeleteMessage: the per-handle <Errors> body) and deletes the
        rest. A failed handle stops working; its message comes back after the visibility timeout."""
        self.backend.queues.fail_deletes(name, handles, times)

    def clear_queue_faults(self, name: str) -> None:
        """Drop pending malformed receives and failing deletes of the queue."""
        self.backend.queues.clear_faults(name)

    # -- stats, latency, faults ----------------------------------------------------------

    def stats(self) -> dict:
        return self.backend.stats.snapshot()

    def reset_stats(self) -> None:
        self.backend.stats.reset()

    def set_latency(self, seconds: float, jitter: float = 0.0) -> None:
        self.backend.faults.set_latency(seconds, jitter)

    def set_faults(self, server_error: float = 0.0, throttle: float = 0.0, drop: float = 0.0,
                   drop_after_commit: float = 0.0, slow: float = 0.0, slow_seconds: float = 0.0,
                   apis=None, throttle_status: int | None = None, hang: float = 0.0,
                   throttle_code=None, message_types=None) -> None:
        """Fault probabilities per request; all zero (the default) turns faults off.

        Kinds and scopes: see `faults`. `throttle_code` picks the throttling answer
        (e.g. "Throttling.User" -> HTTP 400, "ServiceUnavailable" -> 503, or a mapping
        service -> code); `hang` holds requests unanswered until the client gives up,
        the next set_faults stops covering them, or the emulator stops. `message_types`
        (e.g. "SmsUp") limits the faults to that type's queue and token calls."""
        self.backend.faults.set_faults(server_error=server_error, throttle=throttle, drop=drop,
                                       drop_after_commit=drop_after_commit, slow=slow,
                                       slow_seconds=slow_seconds, apis=apis,
                                       throttle_status=throttle_status, hang=hang,
                                       throttle_code=throttle_code, message_types=message_types)

    def hung_requests(self) -> int:
        """Requests held unanswered by a `hang` fault right now."""
        return self.backend.faults.hung_requests()

    # -- credentials -------------------------------------------------------------------

    def issued_tokens(self) -> list[tuple[str, str, str]]:
        """(AccessKeyId, AccessKeySecret, SecurityToken) of every token issued so far."""
        return [(g.access_key_id, g.access_key_secret, g.security_token) for g in self.backend.tokens.grants()]

    def expire_tokens(self) -> None:
        self.backend.tokens.expire_all()

    def expire_tokens_on(self, action: str, times: int = 1) -> None:
        """The next `times` requests of MNS `action` (e.g. "BatchDeleteMessage") find every token
        issued so far expired: a token that dies between a receive and its delete, on demand."""
        if action not in MNS_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(MNS_ACTIONS)}, not {action!r}")
        self.backend.tokens.expire_on(action, times)

    def refuse_tokens(self, message_type: str, code: str | None, message: str | None = None,
                      status: int = 403) -> None:
        """Refuse QueryTokenForMnsQueue for `message_type` with `code` (HTTP `status`; 200 makes it
        a 200 with a non-OK Code) while other types get tokens; code None lifts the refusal."""
        if code is None:
            self.backend.tokens.refuse(message_type, None)
            return
        if status != 200 and not 400 <= status <= 599:
            raise ValueError("status is 200 (a non-OK Code in the body) or an HTTP error status 400-599")
        self.backend.tokens.refuse(message_type, TokenRefusal(
            code, f"Refused by the emulator: {code}" if message is None else message, int(status)))

    def token_requests(self) -> list[dict]:
        """Every authenticated QueryTokenForMnsQueue call in order: message_type, queue_name,
        owner_id (None if not sent), answer ("OK" or the refusal code), time, region_id
        (RegionId, None if not sent). No secrets."""
        return self.backend.tokens.requests()

    def set_token_lifetime(self, seconds: float) -> None:
        self.backend.tokens.lifetime = float(seconds)

    def set_clock_skew(self, seconds: float) -> None:
        """Run the server's clock `seconds` ahead of this host's (negative: behind), as a client
        whose clock is off sees it: requests more than 15 minutes off are refused."""
        self.backend.clock_skew = float(seconds)

    def issue_role_credentials(self, lifetime: float = 3600.0) -> dict:
        """STS credentials of the customer's function role, as FC hands them to a function
        (access_key_id, access_key_secret, security_token). POP calls signed with them must
        carry that SecurityToken and be made before they expire."""
        c = self.backend.issue_role_credentials(lifetime)
        return {"access_key_id": c.access_key_id, "access_key_secret": c.access_key_secret,
                "security_token": c.security_token}

    def expire_role_credentials(self) -> None:
        self.backend.expire_role_credentials()

    def add_customer_key(self, ak: str, secret: str) -> None:
        self.backend.add_customer_keys({ak: secret})

    def add_customer_keys(self, keys: dict[str, str]) -> None:
        self.backend.add_customer_keys(keys)

    def set_rpc_refusal(self, code: str | None, message: str | None = None, actions=None) -> None:
        """Answer RPC calls with HTTP 200 and a non-OK `Code` (None turns it off)."""
        if code is None:
            self.backend.rpc_refusal = None
            return
        acts = None if actions is None else frozenset([actions] if isinstance(actions, str) else actions)
        self.backend.rpc_refusal = RpcRefusal(code, message or f"Refused by the emulator: {code}", acts)

    # -- send records (Dysmsapi QuerySendDetails) ------------------------------------------

    def add_send_record(self, phone: str, send_date: str, biz_id: str, status: int,
                        err_code: str = "DELIVERED", template_code: str = "SMS_1",
                        content: str = "test message", send_time: str | None = None,
                        receive_time: str | None = None, out_id: str = "") -> None:
        """One row for QuerySendDetails. send_date is 'YYYYMMDD'; times 'yyyy-MM-dd HH:mm:ss'
        (default: noon of send_date; receive_time defaults to send_time unless status is 1)."""
        self.backend.send_records.add(phone, send_date, biz_id, status, err_code, template_code,
                                      content, send_time, receive_time, out_id)

    def set_send_details_error(self, code: str | None, phones=None, message: str | None = None) -> None:
        """Refuse QuerySendDetails (HTTP 200, this Code) for `phones` (None: all); None turns it off."""
        if code is None:
            self.backend.send_records.refusal = None
            return
        ph = None if phones is None else frozenset([phones] if isinstance(phones, str) else phones)
        self.backend.send_records.refusal = SendDetailsRefusal(
            code, message or f"Refused by the emulator: {code}", ph)

    # -- functions (FC 2.0, FC 3.0 and Lambda invoke) ----------------------------------------

    def register_function(self, name: str, fn) -> None:
        """`fn(payload: bytes) -> bytes` (may raise). FC looks up "<service>/<name>" first, then name."""
        self.backend.functions.register(name, fn)

    def register_process_function(self, name: str, command: list[str], env: dict | None = None,
                                  cwd: str | None = None, log_dir: str | None = None) -> None:
        """A function that runs `command + [payload]` as a process of its own per invocation (async:
        started and left running; sync: its last line of stdout is the result)."""
        self.backend.functions.register_process(name, command, env, cwd, log_dir)

    def exit_codes(self, name: str) -> list:
        """Exit codes of the processes a process function started, in order (None: still running)."""
        return self.backend.functions.exit_codes(name)

    def invocations(self, name: str) -> list[bytes]:
        """Payloads the function received, in arrival order (async ones included at arrival)."""
        return self.backend.functions.invocations(name)

    def wait_async(self, timeout: float = 10.0) -> bool:
        """Wait until async invocations finished running; True if they all did."""
        return self.backend.functions.wait_async(timeout)
