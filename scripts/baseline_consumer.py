"""The vendor's sample receipt consumer, reproduced in Python as the benchmark's baseline.

Alicom's published sample (.NET; /work/shared/reference, "编写样例程序") does, per queue:
2 threads; each keeps its own token (Dybaseapi `QueryTokenForMnsQueue`, refreshed when
less than 2 minutes are left) and its own queue client; a round is one
`BatchReceiveMessage(16)` without long poll, then for each message: base64-decode,
consume, `DeleteMessage` of that one message; then `Thread.Sleep(50)`.

Here "consume" is a write of that one message to the same sink alicom-drain uses
(`shared.decode.decode_message` + `SqliteSink`/`FileSink`), so the decode and sink code
are the same and only the consumer's pattern differs. Deviations from the sample, all
for benchmarking: it stops when a receive finds the queue empty (the sample polls
forever); it runs every configured message type (2 threads per queue, as if the sample
were started once per queue); `--max-seconds` ends it after a fixed window; and the
token's ExpireTime is read as Asia/Shanghai time (the sample uses the local clock).

    python -m scripts.baseline_consumer --out result.json [--threads 2] [--max-seconds 60]

Settings come from the same environment variables as the drain: ALICOM_UID,
ALICOM_MESSAGE_TYPES, ALICOM_MNS_ENDPOINT, ALICOM_TOKEN_ENDPOINT, ALICOM_REGION,
ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET, SINK (file|sqlite), SINK_PATH.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Optional
from urllib.parse import urlparse

from shared.decode import SHANGHAI, TIME_FORMAT, decode_message
from shared.records import MnsMeta, Record
from shared.sinks.base import Sink

BATCH = 16
SLEEP_SECONDS = 0.05  # Thread.Sleep(sleepTime) with sleepTime = 50
REFRESH_BUFFER = 120  # bufferTime = 60 * 2
MAX_ERRORS_IN_ROW = 20  # the sample retries forever; a benchmark must end


class Tally:
    """Counts shared by all threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter = Counter()

    def add(self, **kv: int) -> None:
        with self.lock:
            self.counts.update(kv)


def acs_client(ak: str, secret: str, region: str):
    """The sample's `InitAcsClient`: one client for all threads."""
    from aliyunsdkcore.client import AcsClient

    return AcsClient(ak, secret, region)


def query_token(client, client_lock: threading.Lock, message_type: str, endpoint: str) -> dict:
    """The sample's `GetTokenByMessageType`: QueryTokenForMnsQueue through the Dybaseapi SDK."""
    from aliyunsdkdybaseapi.request.v20170525.QueryTokenForMnsQueueRequest import QueryTokenForMnsQueueRequest

    request = QueryTokenForMnsQueueRequest()
    request.set_MessageType(message_type)
    request.set_accept_format("json")
    parsed = urlparse(endpoint)
    request.set_endpoint(parsed.netloc)
    request.set_protocol_type("http" if parsed.scheme == "http" else "https")
    with client_lock:
        body = json.loads(client.do_action_with_exception(request))
    if body.get("Code") != "OK":
        raise RuntimeError(f"QueryTokenForMnsQueue: {body.get('Code')}")
    return body["MessageTokenDTO"]


def seconds_left(token: dict) -> float:
    expire = datetime.strptime(token["ExpireTime"], TIME_FORMAT).replace(tzinfo=SHANGHAI)
    return (expire - datetime.now(SHANGHAI)).total_seconds()


class PullTask:
    """One thread of the sample (`TestTask.Handle`) for one queue."""

    def __init__(self, name: str, message_type: str, queue_name: str, cfg: dict, client, client_lock,
                 sink: Sink, tally: Tally, stop_at: Optional[float]):
        self.name, self.message_type, self.queue_name = name, message_type, queue_name
        self.cfg, self.client, self.client_lock = cfg, client, client_lock
        self.sink, self.tally, self.stop_at = sink, tally, stop_at
        self.token: Optional[dict] = None  # tokenMap / queueMap of the sample: per task
        self.queue = None
        self.stop_reason = ""

    def _ensure_queue(self) -> None:
        if self.token is None or self.queue is None or seconds_left(self.token) < REFRESH_BUFFER:
            from mns.account import Account

            self.tally.add(token_calls=1)
            self.token = query_token(self.client, self.client_lock, self.message_type, self.cfg["token_endpoint"])
            account = Account(self.cfg["mns_endpoint"].rstrip("/"), self.token["AccessKeyId"],
                              self.token["AccessKeySecret"], self.token["SecurityToken"])
            self.queue = account.get_queue(self.queue_name)
            self.queue.set_encoding(False)  # decode base64 ourselves, per message

    def handle(self) -> None:
        from mns.mns_exception import MNSServerException

        errors_in_row = 0
        while True:
            if self.stop_at is not None and time.monotonic() >= self.stop_at:
                self.stop_reason = "time_box"
                return
            try:
                self._ensure_queue()
                self.tally.add(receive_calls=1)
                try:
                    messages = self.queue.batch_receive_message(BATCH)
                except MNSServerException as exc:
                    if exc.type == "MessageNotExist":
                        self.stop_reason = "empty"  # the sample would sleep and poll again, forever
                        return
                    raise
                errors_in_row = 0
                self.tally.add(received=len(messages))
                for m in messages:
                    try:
                        self._consume(m)
                        self.tally.add(delete_calls=1)
                        self.queue.delete_message(m.receipt_handle)
                        self.tally.add(deleted=1)
                    except Exception as exc:  # the sample prints and goes on with the next message
                        self.tally.add(message_errors=1, **{f"error:{type(exc).__name__}": 1})
            except Exception as exc:
                errors_in_row += 1
                self.tally.add(round_errors=1, **{f"error:{type(exc).__name__}": 1})
                if errors_in_row >= MAX_ERRORS_IN_ROW:
                    self.stop_reason = "errors"
                    return
            time.sleep(SLEEP_SECONDS)

    def _consume(self, m) -> None:
        meta = MnsMeta(message_id=m.message_id, enqueue_time=int(m.enqueue_time),
                       dequeue_count=int(m.dequeue_count), first_dequeue_time=int(m.first_dequeue_time))
        decoded = decode_message(self.message_type, m.message_body, meta)  # base64 -> UTF-8 JSON -> record
        if isinstance(decoded, Record):
            report = self.sink.write([decoded], [])
        else:
            report = self.sink.write([], [decoded])
        self.tally.add(stored=report.records, dead_lettered=report.dead_letters, sink_writes=report.write_calls)


def peak_rss_mb() -> float:
    """This process's peak resident set since its exec (VmHWM), in MB.

    Not the parent's `ru_maxrss` of a child: Linux carries the high-water mark of the forked
    image (the parent's size) across exec into it.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KB; close enough elsewhere


def make_local_sink(kind: str, path: str) -> Sink:
    if kind == "sqlite":
        from shared.sinks.sqlite import SqliteSink

        return SqliteSink(path)
    if kind == "file":
        from shared.sinks.file import FileSink

        return FileSink(path)
    raise SystemExit(f"SINK must be file or sqlite for the baseline, got {kind!r}")


def config_from_env(env=os.environ) -> dict:
    types = [t.strip() for t in env.get("ALICOM_MESSAGE_TYPES", "SmsReport").split(",") if t.strip()]
    uid = env["ALICOM_UID"]
    return {
        "types": types,
        "queues": {t: f"Alicom-Queue-{uid}-{t}" for t in types},
        "mns_endpoint": env["ALICOM_MNS_ENDPOINT"],
        "token_endpoint": env["ALICOM_TOKEN_ENDPOINT"],
        "region": env.get("ALICOM_REGION", "cn-hangzhou"),
        "ak": env["ALIBABA_CLOUD_ACCESS_KEY_ID"],
        "secret": env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"],
        "sink": env.get("SINK", "sqlite"),
        "sink_path": env["SINK_PATH"],
    }


def run(cfg: dict, threads: int = 2, max_seconds: Optional[float] = None) -> dict:
    """Run the sample's threads on every configured queue until each finds its queue empty."""
    sink = make_local_sink(cfg["sink"], cfg["sink_path"])
    client = acs_client(cfg["ak"], cfg["secret"], cfg["region"])
    client_lock = threading.Lock()
    tally = Tally()
    started = time.monotonic()
    cpu0 = time.process_time()
    stop_at = None if max_seconds is None else started + max_seconds
    tasks = [PullTask(f"PullMessageTask-{t}-thread-{i}", t, cfg["queues"][t], cfg, client, client_lock,
                      sink, tally, stop_at)
             for t in cfg["types"] for i in range(threads)]
    workers = [threading.Thread(target=task.handle, name=task.name) for task in tasks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu0
    sink.close()
    counts = dict(tally.counts)
    reasons = Counter(task.stop_reason for task in tasks)
    return {
        "consumer": "baseline",
        "threads_per_queue": threads,
        "consumers": len(tasks),
        "elapsed_seconds": round(elapsed, 3),
        "cpu_seconds": round(cpu, 3),
        "stop_reasons": dict(reasons),
        "time_boxed": reasons.get("time_box", 0) > 0,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "totals": {
            "received": counts.get("received", 0),
            "stored": counts.get("stored", 0),
            "dead_lettered": counts.get("dead_lettered", 0),
            "deleted": counts.get("deleted", 0),
            "sink_writes": counts.get("sink_writes", 0),
            "api_calls": {"BatchReceiveMessage": counts.get("receive_calls", 0),
                          "DeleteMessage": counts.get("delete_calls", 0),
                          "QueryTokenForMnsQueue": counts.get("token_calls", 0)},
            "errors": {k: v for k, v in counts.items() if k.startswith("error:") or k.endswith("_errors")},
        },
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads per queue (the sample: maxThread = 2)")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop starting rounds after this window")
    parser.add_argument("--out", help="write the result JSON here (default: stdout)")
    args = parser.parse_args(argv)
    result = run(config_from_env(), args.threads, args.max_seconds)
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
