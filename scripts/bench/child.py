"""The measured consumers, each run as a child process (`python -m scripts.bench --child ...`)."""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from scripts.bench.common import BATCH, peak_rss_mb
from shared.platform import RunFailed


def timer_event() -> bytes:
    return json.dumps({"triggerTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "triggerName": "drain-every-minute", "payload": ""}).encode()


def _admin_queues(endpoint: str) -> dict[str, dict]:
    """Queue states over the emulator's admin API (never counted, delayed or faulted)."""
    with urllib.request.urlopen(endpoint.rstrip("/") + "/_admin/queues", timeout=10) as resp:
        return json.loads(resp.read())["queues"]


def child_drain(args: argparse.Namespace) -> dict:
    """Invoke the real handler, FC-shaped, until the queues are empty (or the window ends)."""
    t0 = time.monotonic()
    from functions.drain import handler

    import_seconds = time.monotonic() - t0
    endpoint = os.environ["ALICOM_MNS_ENDPOINT"]
    started = time.monotonic()
    cpu0 = time.process_time()
    totals: Counter = Counter()
    calls: Counter = Counter()
    errors: Counter = Counter()
    invocations: list[dict[str, Any]] = []
    time_boxed = False
    while len(invocations) < args.max_invocations:
        left = args.max_seconds - (time.monotonic() - started)
        if left < 3:
            time_boxed = True
            break
        context = SimpleNamespace(request_id=f"bench-{len(invocations) + 1}", credentials=None,
                                  function=SimpleNamespace(name="alicom-drain", handler="functions.drain.handler",
                                                           memory=512, timeout=min(args.timeout, left)))
        try:
            result = handler(timer_event(), context)
        except RunFailed as failed:
            result = failed.summary
        except Exception as exc:  # keep going: the check at the end says what is missing
            result = {"ok": False, "stop_reason": "exception", "error": f"{type(exc).__name__}: {exc}",
                      "elapsed_seconds": 0, "totals": {}, "types": {}}
        t = result.get("totals", {})
        for k in ("received", "stored", "dead_lettered", "deleted", "delete_failures", "sink_writes"):
            totals[k] += t.get(k, 0)
        calls.update(t.get("api_calls", {}))
        for ts in result.get("types", {}).values():
            errors.update(ts.get("errors", {}))
        invocations.append({"ok": result.get("ok"), "stop_reason": result.get("stop_reason"),
                            "error": result.get("error"), "elapsed_seconds": result.get("elapsed_seconds"),
                            "stored": t.get("stored", 0)})
        if result.get("stop_reason") == "deadline" and args.max_seconds - (time.monotonic() - started) < 3:
            time_boxed = True
            break
        # Done only when every queue is empty; messages in flight (a failed delete) come back.
        while True:
            states = _admin_queues(endpoint)
            visible = sum(s["visible"] for s in states.values())
            in_flight = sum(s["in_flight"] for s in states.values())
            if visible or not in_flight or time.monotonic() - started > args.max_seconds - 3:
                break
            time.sleep(0.2)
        if not visible and not in_flight:
            break
    elapsed = time.monotonic() - started
    return {"consumer": "drain", "import_seconds": round(import_seconds, 3), "elapsed_seconds": round(elapsed, 3),
            "cpu_seconds": round(time.process_time() - cpu0, 3), "peak_rss_mb": round(peak_rss_mb(), 1),
            "time_boxed": time_boxed, "invocations": invocations,
            "totals": {**dict(totals), "api_calls": dict(calls), "errors": dict(errors)}}


def child_raw(args: argparse.Namespace) -> dict:
    """Raw clients, no decode, no sink: receive 16 + batch delete, until the queues are empty.

    --client sdk: the MNS SDK's own Account/Queue (its minidom decoder);
    --client drain: shared.mns_queue.MnsQueue, the client the drain's consumers use.
    """
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkdybaseapi.request.v20170525.QueryTokenForMnsQueueRequest import QueryTokenForMnsQueueRequest
    from mns.account import Account
    from mns.mns_exception import MNSServerException

    from shared.mns_queue import MnsQueue
    from shared.tokens import MnsToken, parse_expire_time

    endpoint = os.environ["ALICOM_MNS_ENDPOINT"]
    types = os.environ["ALICOM_MESSAGE_TYPES"].split(",")
    client = AcsClient(os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"], os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"],
                       "cn-hangzhou")
    tokens = {}
    for t in types:
        request = QueryTokenForMnsQueueRequest()
        request.set_MessageType(t)
        request.set_accept_format("json")
        request.set_endpoint(endpoint.split("://", 1)[1].rstrip("/"))
        request.set_protocol_type("http")
        tokens[t] = json.loads(client.do_action_with_exception(request))["MessageTokenDTO"]
    counts: Counter = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + args.max_seconds

    def sdk_calls(mtype: str):
        tok = tokens[mtype]
        account = Account(endpoint, tok["AccessKeyId"], tok["AccessKeySecret"], tok["SecurityToken"])
        queue = account.get_queue(f"Alicom-Queue-{os.environ['ALICOM_UID']}-{mtype}")
        queue.set_encoding(False)

        def receive():
            try:
                return queue.batch_receive_message(BATCH, 0)
            except MNSServerException as exc:
                if exc.type == "MessageNotExist":
                    return []
                raise
        return receive, lambda msgs: queue.batch_delete_message([m.receipt_handle for m in msgs])

    def drain_calls(mtype: str):
        tok = tokens[mtype]
        token = MnsToken(tok["AccessKeyId"], tok["AccessKeySecret"], tok["SecurityToken"],
                         expire_at=parse_expire_time(tok["ExpireTime"]))
        queue = MnsQueue(endpoint, f"Alicom-Queue-{os.environ['ALICOM_UID']}-{mtype}", token, timeout=10.0)
        return lambda: queue.receive(BATCH, 0), lambda msgs: queue.delete([m.receipt_handle for m in msgs])

    def work(mtype: str) -> None:
        receive, delete = (drain_calls if args.client == "drain" else sdk_calls)(mtype)
        n = requests = 0
        while time.monotonic() < stop_at:
            requests += 1
            try:
                messages = receive()
            except Exception:  # noqa: BLE001 - a calibration client only counts; the emulator has no faults here
                continue
            if not messages:
                break
            requests += 1
            delete(messages)
            n += len(messages)
        with lock:
            counts["messages"] += n
            counts["requests"] += requests

    threads = [threading.Thread(target=work, args=(types[i % len(types)],)) for i in range(args.threads)]
    started = time.monotonic()
    cpu0 = time.process_time()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - started
    return {"consumer": "raw", "client": args.client, "threads": args.threads, "elapsed_seconds": round(elapsed, 4),
            "cpu_seconds": round(time.process_time() - cpu0, 3), **dict(counts)}



def child_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scripts.bench --child")
    p.add_argument("--child", choices=["drain", "raw"], required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-seconds", type=float, default=600)
    p.add_argument("--timeout", type=float, default=600, help="FC function timeout per invocation")
    p.add_argument("--max-invocations", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--client", choices=["sdk", "drain"], default="sdk", help="raw: whose MNS client")
    args = p.parse_args(argv)
    result = child_drain(args) if args.child == "drain" else child_raw(args)
    Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0
