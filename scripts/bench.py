"""Throughput and cost benchmark: alicom-drain against the vendor's sample consumer.

    python -m scripts.bench                     # default sweep (latencies 5,20,50,150 ms; 20,000 messages)
    python -m scripts.bench --latencies 20 --concurrency 2,8 --messages 100000
    python -m scripts.bench --faults            # failure under load: stored exactly once, queue empty
    python -m scripts.bench --import-times      # cold-start import cost per sink
    python -m scripts.bench --all               # sweep + RSS-vs-M + faults + import times, one JSON

Placement: the loopback emulator runs in this process; every measured consumer (the
vendor-sample baseline, alicom-drain's real handler, the raw SDK clients that measure the
emulator's own ceiling) runs in a child process of its own, so consumer and emulator never
share a GIL and peak RSS (os.wait4's ru_maxrss) belongs to that one run. The sweep
starts by measuring the alternative (drain in this process, next to the emulator) and
reports both, so the choice is shown, not assumed.

For every configuration a fresh emulator is filled with the same M receipts (mixed types
from scripts/receipts.py), given a per-request latency, and drained by one consumer;
requests come from the emulator's counters, sink writes from the consumer's own report.
The ceiling is `consumers * 16 / rtt`, with rtt = injected latency + the per-request time
measured at zero latency. A configuration predicted to take longer than
--max-config-seconds is run for a fixed --window instead and labelled time-boxed; its
full duration is extrapolated from the rate over that window.

Throughput runs use DRAIN_WAIT_SECONDS=0 (--wait-seconds): the long poll only adds a
fixed tail (its wait) once the queue is empty, which is not throughput. Everything else is
alicom-drain's default unless the row says otherwise. Tests do not assert on timings; this
script is not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared.platform import RunFailed  # noqa: E402  (after the path is set)

AK, SECRET, UID = "LTAI5tBenchAccessKey", "bench-secret-not-real-0123456789", "1234567890123456"
BATCH = 16
BASELINE_THREADS = 2  # the vendor's sample: maxThread = 2
SINKS_ALL = ("file", "sqlite", "s3", "oss", "dynamodb", "tablestore")
SDK_GROUPS = {
    "mns": ("mns",),
    "aliyunsdkcore": ("aliyunsdkcore", "aliyunsdkdybaseapi", "aliyunsdkdysmsapi"),
    "boto3/botocore": ("boto3", "botocore", "s3transfer"),
    "oss2": ("oss2",),
    "tablestore": ("tablestore",),
    "aws_lambda_powertools": ("aws_lambda_powertools",),
    "pydantic": ("pydantic", "pydantic_core"),
}
OURS = ("shared", "functions")


def message_types() -> tuple[str, ...]:
    from scripts.receipts import BUILDERS

    return tuple(BUILDERS)


# --------------------------------------------------------------------------------------
# Child processes: the measured consumers
# --------------------------------------------------------------------------------------

def _timer_event() -> bytes:
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
    invocations = []
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
            result = handler(_timer_event(), context)
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
        queue = MnsQueue(endpoint, f"Alicom-Queue-{os.environ['ALICOM_UID']}-{mtype}", token)
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


def peak_rss_mb() -> float:
    from scripts.baseline_consumer import peak_rss_mb as peak

    return peak()


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


# --------------------------------------------------------------------------------------
# The parent: emulator, runs, tables
# --------------------------------------------------------------------------------------

class ChildFailed(RuntimeError):
    pass


def process_cpu() -> float:
    """CPU seconds of this process (the emulator's threads, and the bench's idle polling)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def python_speed_ms() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 3): to compare this machine with others."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i % 7
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


def git_commit() -> dict:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:  # an exported tree (git archive) has no .git: say which commit it came from
        return {"commit": os.environ.get("BENCH_COMMIT", "unknown"), "code_dirty": False, "dirty_files": [],
                "source": "exported tree"}
    dirty = git("status", "--porcelain", "--", "shared", "functions")
    return {"commit": commit, "code_dirty": bool(dirty), "dirty_files": dirty.splitlines()[:20]}


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="alicom-bench-"))
        self.types = message_types()
        self.bodies: dict[int, dict[str, list[str]]] = {}
        self.runs: list[dict] = []
        self.per_request_s: Optional[float] = None
        self.write_cost: dict[str, dict[str, float]] = {}
        self.seq = 0
        from shared.settings import Settings

        self.default_concurrency = int(Settings.default("concurrency"))

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    # -- messages and emulators ---------------------------------------------------------
    def messages(self, m: int) -> dict[str, list[str]]:
        """M receipt bodies, split evenly over the message types (the same bodies every run)."""
        if m not in self.bodies:
            from scripts.emulator.models import receipt_body
            from scripts.receipts import make_receipts

            per, extra = divmod(m, len(self.types))
            self.bodies[m] = {t: [receipt_body(p) for p in make_receipts(t, per + (1 if i < extra else 0), seed=2026)]
                              for i, t in enumerate(self.types)}
        return self.bodies[m]

    def emulator(self, m: int, latency_ms: float, visibility_timeout: float = 30.0):
        from scripts.emulator import Emulator

        emu = Emulator(customer_keys={AK: SECRET}, uid=UID, seed=1, visibility_timeout=visibility_timeout)
        emu.start()
        for t, bodies in self.messages(m).items():
            name = emu.create_queue(emu.queue_name(t))
            for b in bodies:
                emu.enqueue(name, b)
        emu.set_latency(latency_ms / 1000.0)
        emu.reset_stats()
        return emu

    def queue_totals(self, emu) -> dict[str, int]:
        out: Counter = Counter()
        for t in self.types:
            s = emu.queue_state(emu.queue_name(t))
            out.update({k: s[k] for k in ("visible", "in_flight", "deleted", "enqueued", "received")})
        return dict(out)

    def env(self, emu, sink: str, sink_path: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ALICOM_", "SINK", "DRAIN_", "ALIBABA_CLOUD_", "MNS_", "TOKEN_", "AWS_"))}
        env.update({
            "PYTHONPATH": str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
            "ALICOM_UID": UID,
            "ALICOM_MESSAGE_TYPES": ",".join(self.types),
            "ALICOM_MNS_ENDPOINT": emu.url,
            "ALICOM_TOKEN_ENDPOINT": emu.url,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": AK,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
            "SINK": sink,
            "SINK_PATH": sink_path,
            "DRAIN_WAIT_SECONDS": str(self.args.wait_seconds),
        })
        env.update(extra)
        return env

    def sink_path(self, sink: str) -> str:
        self.seq += 1
        return str(self.work / f"run{self.seq:03d}" / ("receipts" if sink == "file" else "receipts.db"))

    # -- one child process ----------------------------------------------------------------
    def run_child(self, argv: list[str], env: dict[str, str], hard_timeout: float) -> tuple[dict, float]:
        """Run a child to completion; return (its JSON result, its peak RSS in MB).

        The peak RSS is the child's own VmHWM, which it reports: os.wait4's ru_maxrss would do,
        except that Linux keeps the forked parent's high-water mark across exec (this process
        holds the emulator and M messages), which inflates it. ru_maxrss is kept in the result.
        """
        self.seq += 1
        out = self.work / f"child{self.seq:03d}.json"
        log = self.work / f"child{self.seq:03d}.log"
        with open(log, "wb") as handle:
            proc = subprocess.Popen([sys.executable, *argv, "--out", str(out)], cwd=ROOT, env=env,
                                    stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + hard_timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0 or not out.exists():
            tail = log.read_text(errors="replace")[-2000:]
            raise ChildFailed(f"{' '.join(argv[:4])} exited {proc.returncode}:\n{tail}")
        result = json.loads(out.read_text())
        result["ru_maxrss_mb"] = round(usage.ru_maxrss / 1024.0, 1)  # Linux: kilobytes
        return result, float(result.get("peak_rss_mb") or result["ru_maxrss_mb"])

    # -- calibration ------------------------------------------------------------------------
    def emulator_ceiling(self) -> dict:
        """Per-request time at zero latency (1 raw client) and the emulator's ceiling (many).

        Measured with the SDK's own client and with the drain's (shared.mns_queue, which reads
        receive answers with ElementTree); the rtt of the ceiling uses the drain's one-thread
        per-request time, the stricter choice (a faster client makes the ceiling higher).
        """
        a = self.args
        m = 800 if a.quick else min(a.messages, 8000)
        out = {"messages": m, "clients": []}
        for client in ("sdk", "drain"):
            for threads in ((1,) if a.quick else (1, 4, 16)):
                emu = self.emulator(m, 0)
                try:
                    env = self.env(emu, "file", self.sink_path("file"))
                    cpu0 = process_cpu()
                    res, rss = self.run_child(["-m", "scripts.bench", "--child", "raw", "--threads", str(threads),
                                               "--client", client, "--max-seconds", "120"], env, 180)
                    emu_cpu = process_cpu() - cpu0
                    stats = emu.stats()
                finally:
                    emu.stop()
                elapsed = res["elapsed_seconds"]
                mps = res["messages"] / elapsed
                row = {"client": client, "threads": threads, "messages": res["messages"], "elapsed_seconds": elapsed,
                       "msg_per_s": round(mps, 1), "requests": stats["mns_total"],
                       "requests_per_s": round(stats["mns_total"] / elapsed, 1),
                       "ms_per_request": round(1000 * elapsed * threads / max(1, res["requests"]), 3),
                       "client_cpu_ms_per_request": round(1000 * res["cpu_seconds"] / max(1, res["requests"]), 3),
                       "emulator_cpu_ms_per_request": round(1000 * emu_cpu / max(1, stats["mns_total"]), 3),
                       "emulator_cpu_util": round(emu_cpu / elapsed, 2),
                       "client_cpu_util": round(res["cpu_seconds"] / elapsed, 2),
                       "loadavg_1m": round(os.getloadavg()[0], 2)}
                out["clients"].append(row)
                self.log(f"  emulator, {client:>5} client, {threads:>2} thread(s): {mps:8.0f} msg/s, "
                         f"{row['requests_per_s']:7.0f} req/s, {row['ms_per_request']:.3f} ms/request per client, "
                         f"client CPU {row['client_cpu_ms_per_request']:.2f} ms/request, emulator CPU "
                         f"{row['emulator_cpu_ms_per_request']:.2f} ms/request ({100 * row['emulator_cpu_util']:.0f}% "
                         f"of a core), clients {100 * row['client_cpu_util']:.0f}%")
        one = next(c for c in out["clients"] if c["client"] == "drain" and c["threads"] == 1)
        self.per_request_s = one["ms_per_request"] / 1000.0
        out["per_request_ms_zero_latency"] = one["ms_per_request"]
        out["per_request_client"] = "drain"
        out["ceiling_msg_per_s"] = max(c["msg_per_s"] for c in out["clients"])
        out["ceiling_requests_per_s"] = max(c["requests_per_s"] for c in out["clients"])
        for client in ("sdk", "drain"):
            out[f"{client}_client_max_msg_per_s"] = max(c["msg_per_s"] for c in out["clients"] if c["client"] == client)
        # What the emulator could serve if it alone had a core: 1 / its CPU per request.
        out["emulator_cpu_bound_requests_per_s"] = round(
            1000 / statistics.median(c["emulator_cpu_ms_per_request"] for c in out["clients"]), 1)
        # Receive 16 + one batch delete: 8 messages per request.
        out["emulator_cpu_bound_msg_per_s"] = round(out["emulator_cpu_bound_requests_per_s"] * BATCH / 2, 1)
        return out

    def sink_write_cost(self) -> dict:
        """Seconds per single-record write and per 16-record write, per local sink (for predictions)."""
        from shared.decode import decode_message
        from shared.records import MnsMeta
        from shared.sinks.file import FileSink
        from shared.sinks.sqlite import SqliteSink

        bodies = self.messages(max(self.args.messages, 64))[self.types[0]][:64]
        recs = [decode_message(self.types[0], b, MnsMeta(message_id=f"m{i}", enqueue_time=1)) for i, b in enumerate(bodies)]
        out = {}
        for name in ("sqlite", "file"):
            path = self.sink_path(name)
            sink = SqliteSink(path) if name == "sqlite" else FileSink(path)
            t0 = time.perf_counter()
            for r in recs[:32]:
                sink.write([r], [])
            one = (time.perf_counter() - t0) / 32
            t0 = time.perf_counter()
            sink.write(recs[32:48], [])
            sink.write(recs[48:64], [])
            batch = (time.perf_counter() - t0) / 2
            sink.close()
            out[name] = {"per_message_write_s": one, "per_batch16_write_s": batch}
        self.write_cost = out
        return out

    def placement_check(self) -> dict:
        """Drain in this process beside the emulator vs in its own process: the GIL question."""
        a = self.args
        m = min(a.messages, 8000)
        rows = []
        for latency in (0, 5):
            inproc = self.drain_in_process(m, latency)
            child = self.measure("drain", "sqlite", latency, None, m=m, record=False)
            rows.append({"latency_ms": latency, "messages": m, "in_process_msg_per_s": inproc,
                         "child_process_msg_per_s": child["msg_per_s"],
                         "in_process_vs_child": round(inproc / child["msg_per_s"], 3)})
            self.log(f"  placement @ {latency} ms: drain beside the emulator {inproc:.0f} msg/s, "
                     f"in its own process {child['msg_per_s']:.0f} msg/s")
        return {"rows": rows, "chosen": "emulator in the bench process, each consumer in its own child process"}

    def drain_in_process(self, m: int, latency_ms: float) -> float:
        emu = self.emulator(m, latency_ms)
        saved = dict(os.environ)
        sys.stdout.flush()
        stdout_fd = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # the handler's log and metric lines: they go to the child's log file elsewhere
        try:
            os.environ.update(self.env(emu, "sqlite", self.sink_path("sqlite")))
            from functions.drain import handler
            from shared.runtime import reset_runtime

            reset_runtime()
            started = time.monotonic()
            stored = 0
            for i in range(10):
                ctx = SimpleNamespace(request_id=f"inproc-{i}", credentials=None,
                                      function=SimpleNamespace(name="alicom-drain", timeout=300))
                try:
                    result = handler(_timer_event(), ctx)
                except RunFailed as failed:
                    result = failed.summary
                stored += result["totals"]["stored"]
                if self.queue_totals(emu)["visible"] == 0:
                    break
            elapsed = time.monotonic() - started
            reset_runtime()
        finally:
            sys.stdout.flush()
            os.dup2(stdout_fd, 1)
            os.close(stdout_fd)
            os.close(devnull)
            os.environ.clear()
            os.environ.update(saved)
            emu.stop()
        return round(stored / elapsed, 1)

    # -- predictions and ceilings ------------------------------------------------------------
    def rtt(self, latency_ms: float) -> float:
        return latency_ms / 1000.0 + (self.per_request_s or 0.001)

    def consumers(self, kind: str, concurrency: int) -> int:
        return len(self.types) * concurrency

    def predict_seconds(self, kind: str, sink: str, latency_ms: float, concurrency: int, m: int) -> float:
        rtt = self.rtt(latency_ms)
        cost = self.write_cost.get(sink, {"per_message_write_s": 0.002, "per_batch16_write_s": 0.003})
        n = self.consumers(kind, concurrency)
        if kind == "baseline":
            # One receive + 16 deletes in series, 16 single-record writes, 50 ms sleep; SQLite serialises
            # writes (one connection, one lock), the file sink does not.
            round_s = (1 + BATCH) * rtt + 0.05 + BATCH * cost["per_message_write_s"]
            rate = n * BATCH / round_s
            if sink == "sqlite":
                rate = min(rate, 1.0 / max(cost["per_message_write_s"], 1e-6))
        else:
            # Receive, write, delete in series at worst (a pipelined drain does better).
            round_s = 2 * rtt + cost["per_batch16_write_s"]
            rate = min(n * BATCH / round_s, BATCH / max(cost["per_batch16_write_s"], 1e-6))
        return m / rate

    # -- one measured run -----------------------------------------------------------------------
    def measure(self, kind: str, sink: str, latency_ms: float, concurrency: Optional[int], m: Optional[int] = None,
                record: bool = True, label: str = "") -> dict:
        a = self.args
        m = m or a.messages
        # The vendor's sample runs 2 threads per queue whatever the drain's default is.
        conc = BASELINE_THREADS if kind == "baseline" else concurrency or self.default_concurrency
        predicted = self.predict_seconds(kind, sink, latency_ms, conc, m)
        window = None
        if predicted > a.max_config_seconds:
            window = a.window
        emu = self.emulator(m, latency_ms)
        path = self.sink_path(sink)
        try:
            extra = {} if concurrency is None else {"DRAIN_CONCURRENCY": str(concurrency)}
            env = self.env(emu, sink, path, **extra)
            limit = window or a.max_config_seconds
            if kind == "baseline":
                argv = ["-m", "scripts.baseline_consumer", "--threads", str(BASELINE_THREADS), "--max-seconds", str(limit)]
            else:
                argv = ["-m", "scripts.bench", "--child", "drain", "--max-seconds", str(limit),
                        "--timeout", str(min(600, limit))]
            before, emu_cpu0, load0 = emu.stats(), process_cpu(), os.getloadavg()[0]
            result, rss = self.run_child(argv, env, limit + 120)
            after, emu_cpu, load1 = emu.stats(), process_cpu() - emu_cpu0, os.getloadavg()[0]
            queues = self.queue_totals(emu)
        finally:
            emu.stop()
        stats = {k: after.get(k, 0) - before.get(k, 0) for k in after if isinstance(after.get(k), int)}
        drained = queues["deleted"]
        stored = result["totals"].get("stored", 0) + result["totals"].get("dead_lettered", 0)
        elapsed = result["elapsed_seconds"]
        rate = stored / elapsed if elapsed else 0.0
        n_consumers = self.consumers(kind, conc)
        ceiling = n_consumers * BATCH / self.rtt(latency_ms)
        complete = stored == m and drained == m and queues["visible"] + queues["in_flight"] == 0
        if complete and sink == "sqlite":
            from shared.sinks.sqlite import SqliteSink

            rows = SqliteSink(path)
            complete = rows.count("records") == m
            rows.close()
        time_boxed = bool(result.get("time_boxed"))
        note = label
        if time_boxed:
            why = (f"predicted {predicted:.0f} s > {a.max_config_seconds:.0f} s" if window
                   else f"hit the {a.max_config_seconds:.0f} s limit")
            note = (f"{note}; " if note else "") + (
                f"TIME-BOXED ({why}): {stored} of {m} messages in a {elapsed:.0f} s window; "
                f"full run extrapolated to {m / rate:.0f} s" if rate else f"TIME-BOXED ({why}): nothing stored")
        row = {
            "consumer": kind,
            "sink": sink,
            "latency_ms": latency_ms,
            "concurrency": conc,
            "concurrency_source": "threads/queue" if kind == "baseline" else "default" if concurrency is None else "DRAIN_CONCURRENCY",
            "consumers": n_consumers,
            "messages": m,
            "stored": stored,
            "drained": drained,
            "complete": complete,
            "time_boxed": time_boxed,
            "elapsed_seconds": elapsed,
            "predicted_seconds": round(predicted, 1),
            "extrapolated_seconds": round(m / rate, 1) if time_boxed and rate else None,
            "msg_per_s": round(rate, 1),
            "mns_requests": stats.get("mns_total", 0),
            "mns_requests_per_1k": round(1000 * stats.get("mns_total", 0) / stored, 1) if stored else None,
            "token_requests": stats.get("QueryTokenForMnsQueue", 0),
            "requests_by_action": {k: v for k, v in stats.items() if v and not k.endswith("total")},
            "sink_writes": result["totals"].get("sink_writes", 0),
            "sink_writes_per_1k": round(1000 * result["totals"].get("sink_writes", 0) / stored, 1) if stored else None,
            "peak_rss_mb": round(rss, 1),
            "consumer_cpu_ms_per_msg": round(1000 * result.get("cpu_seconds", 0) / stored, 3) if stored else None,
            "consumer_cpu_util": round(result.get("cpu_seconds", 0) / elapsed, 2) if elapsed else None,
            "emulator_cpu_ms_per_msg": round(1000 * emu_cpu / stored, 3) if stored else None,
            "emulator_cpu_util": round(emu_cpu / elapsed, 2) if elapsed else None,
            "loadavg_1m": [round(load0, 2), round(load1, 2)],
            "ceiling_msg_per_s": round(ceiling, 1),
            "share_of_ceiling": round(rate / ceiling, 3),
            "ratio_vs_baseline": None,
            "note": note,
            "consumer_report": {k: v for k, v in result.items() if k not in ("consumer",)},
        }
        if record:
            self.record(row)
        return row

    def record(self, row: dict) -> None:
        self.runs.append(row)
        base = self.baseline_for(row["latency_ms"], row["sink"])
        if row["consumer"] == "drain" and base and base["msg_per_s"]:
            row["ratio_vs_baseline"] = round(row["msg_per_s"] / base["msg_per_s"], 2)
        self.log("  " + format_row(row))

    @staticmethod
    def median_row(rows: list[dict]) -> dict:
        """The run with the median rate, carrying every run's rate (machine speed drifts between runs)."""
        ordered = sorted(rows, key=lambda r: r["msg_per_s"])
        row = dict(ordered[(len(ordered) - 1) // 2])
        if len(rows) > 1:
            rates = [r["msg_per_s"] for r in rows]
            row["repeats_msg_per_s"] = rates
            row["note"] = (f"{row['note']}; " if row["note"] else "") + (
                f"median of {len(rows)} (range {min(rates):.0f}-{max(rates):.0f})")
        return row

    def baseline_for(self, latency_ms: float, sink: str) -> Optional[dict]:
        return next((r for r in self.runs if r["consumer"] == "baseline" and r["latency_ms"] == latency_ms
                     and r["sink"] == sink and r["messages"] == self.args.messages), None)

    # -- sections ------------------------------------------------------------------------------
    def sweep(self) -> None:
        a = self.args
        for latency in a.latencies:
            sinks = [a.sink] + [s for s in ("file", "sqlite") if s != a.sink and latency in a.both_sinks_at]
            for sink in sinks:
                self.log(f"latency {latency:g} ms, sink {sink}" + (f", {a.repeat} runs each, interleaved"
                                                                   if a.repeat > 1 else ""))
                runs: dict[str, list[dict]] = {"baseline": [], "drain": []}
                for i in range(a.repeat):
                    if not a.no_baseline:
                        runs["baseline"].append(self.measure("baseline", sink, latency, None, record=False))
                    runs["drain"].append(self.measure("drain", sink, latency, None, record=False, label="defaults"))
                    if a.repeat > 1:
                        self.log(f"    run {i + 1}/{a.repeat}: " + ", ".join(
                            f"{k} {v[-1]['msg_per_s']:.0f} msg/s" for k, v in runs.items() if v))
                for kind in ("baseline", "drain"):
                    if runs[kind]:
                        self.record(self.median_row(runs[kind]))
                if sink != a.sink:
                    continue
                for c in a.concurrency:
                    if c == self.default_concurrency:
                        continue  # the defaults row is this sweep point
                    self.measure("drain", sink, latency, c)

    def rss_vs_m(self) -> list[dict]:
        a = self.args
        latency = a.latencies[0]
        rows = [r for r in self.runs if r["consumer"] == "drain" and r["latency_ms"] == latency
                and r["sink"] == a.sink and r["concurrency_source"] == "default"]
        self.log(f"peak RSS vs M: drain defaults at {latency:g} ms, M = {a.rss_messages}")
        rows.append(self.measure("drain", a.sink, latency, None, m=a.rss_messages, record=False,
                                 label=f"M={a.rss_messages}"))
        self.log("  " + format_row(rows[-1]))
        return [{k: r[k] for k in ("messages", "stored", "complete", "time_boxed", "elapsed_seconds", "msg_per_s",
                                   "peak_rss_mb")} for r in rows]


# --------------------------------------------------------------------------------------
# Failure under load
# --------------------------------------------------------------------------------------

def run_faults(bench: Bench) -> dict:
    """2% 5xx and 1% 429 on every API at 0 ms latency: every message stored exactly once, queue empty."""
    from shared.decode import decode_message
    from shared.sinks.sqlite import SqliteSink

    a = bench.args
    m = a.fault_messages or a.messages
    bodies = bench.messages(m)
    expected = {decode_message(t, b).key for t, lst in bodies.items() for b in lst}
    emu = bench.emulator(m, 0, visibility_timeout=a.fault_visibility_timeout)
    emu.set_faults(server_error=0.02, throttle=0.01)
    path = bench.sink_path("sqlite")
    bench.log(f"faults: {m} messages, 2% HTTP 500 + 1% HTTP 429 on every request, 0 ms latency, "
              f"visibility timeout {a.fault_visibility_timeout:g} s")
    try:
        env = bench.env(emu, "sqlite", path)
        result, rss = bench.run_child(["-m", "scripts.bench", "--child", "drain", "--max-seconds",
                                       str(a.fault_max_seconds), "--timeout", "300", "--max-invocations", "100"],
                                      env, a.fault_max_seconds + 120)
        stats = emu.stats()
        queues = bench.queue_totals(emu)
    finally:
        emu.stop()
    sink = SqliteSink(path)
    rows = sink.count("records")
    stored_keys = {r.key for r in sink.iter_records()}
    dead = sink.count("dead_letters")
    sink.close()
    missing = expected - stored_keys
    unexpected = stored_keys - expected
    checks = {
        "rows_equal_distinct_keys": rows == len(expected),
        "no_missing_key": not missing,
        "no_unexpected_key": not unexpected,
        "no_dead_letters": dead == 0,
        "queue_empty": queues["visible"] + queues["in_flight"] == 0,
    }
    out = {
        "messages": m,
        "distinct_keys_enqueued": len(expected),
        "rows": rows,
        "missing_keys": len(missing),
        "unexpected_keys": len(unexpected),
        "dead_letters": dead,
        "queue": queues,
        "injected": {"server_error": stats.get("fault_server_error", 0), "throttle": stats.get("fault_throttle", 0),
                     "requests": stats.get("total", 0)},
        "drain": {"invocations": result["invocations"], "elapsed_seconds": result["elapsed_seconds"],
                  "totals": result["totals"], "peak_rss_mb": round(rss, 1)},
        "checks": checks,
        "passed": all(checks.values()),
    }
    return out


# --------------------------------------------------------------------------------------
# Cold start: import times
# --------------------------------------------------------------------------------------

IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")
LAZY_IMPORTS = ("import shared.mns_queue, aliyunsdkcore.client, "
                "aliyunsdkdybaseapi.request.v20170525.QueryTokenForMnsQueueRequest")


def import_env(sink: str, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ALICOM_", "SINK", "DRAIN_", "ALIBABA_CLOUD_", "AWS_", "TABLESTORE_"))}
    env.update({"PYTHONPATH": str(ROOT), "ALICOM_UID": UID, "SINK": sink,
                "ALIBABA_CLOUD_ACCESS_KEY_ID": AK, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
                "AWS_ACCESS_KEY_ID": "AKIABENCHDUMMY", "AWS_SECRET_ACCESS_KEY": "dummy", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"})
    # Dummy values; endpoints on loopback so nothing could ever leave the machine.
    env.update({
        "file": {"SINK_PATH": str(work / "imp-receipts")},
        "sqlite": {"SINK_PATH": str(work / "imp-receipts.db")},
        "s3": {"SINK_BUCKET": "bench-bucket", "SINK_REGION": "us-east-1", "SINK_ENDPOINT": "http://127.0.0.1:9"},
        "oss": {"SINK_BUCKET": "bench-bucket", "SINK_ENDPOINT": "http://127.0.0.1:9"},
        "dynamodb": {"SINK_TABLE": "bench-table", "SINK_REGION": "us-east-1", "SINK_ENDPOINT": "http://127.0.0.1:9"},
        "tablestore": {"SINK_TABLE": "bench-table", "SINK_ENDPOINT": "http://127.0.0.1:9",
                       "TABLESTORE_INSTANCE": "benchinst"},
    }[sink])
    return env


def _group_of(module: str) -> Optional[str]:
    top = module.split(".", 1)[0]
    if top in OURS:
        return "ours"
    return next((name for name, tops in SDK_GROUPS.items() if top in tops), None)


def parse_importtime(stderr: str) -> dict[str, Any]:
    """Milliseconds per group from `-X importtime` output.

    total: every module's self time. ours: the self time of shared.* and functions.* (module
    bodies, pydantic model building included, nested imports excluded). Each SDK: its own
    modules plus what was first imported beneath them and belongs to no other group (numpy
    under tablestore, urllib3 under botocore...), i.e. what importing that SDK costs.
    other: the rest (stdlib and packages imported by our modules directly).
    """
    pending: list = []  # (level, module, self_us, children); importtime prints children first
    for line in stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if not match:
            continue
        level = len(match.group(3)) // 2
        children = []
        while pending and pending[-1][0] > level:
            children.append(pending.pop())
        node = (level, match.group(4), int(match.group(1)), children)
        pending.append(node)
    groups: Counter = Counter()  # strict: each module's self time to its own group
    incl: Counter = Counter()  # an SDK also gets what was first imported beneath it
    ours: Counter = Counter()
    other: Counter = Counter()

    def visit(node, inherited: Optional[str]) -> None:
        _, module, self_us, children = node
        own = _group_of(module)
        group = own or (inherited if inherited not in (None, "ours") else None)
        groups["total"] += self_us
        groups[own or "other"] += self_us
        incl[group or "other"] += self_us
        if own == "ours":
            ours[module] += self_us
        elif own is None:
            other[module.split(".", 1)[0]] += self_us
        for child in children:
            visit(child, group)

    for root in pending:  # what is left are the top-level imports
        visit(root, None)
    out: dict[str, Any] = {k: v / 1000.0 for k, v in groups.items()}
    out["sdks"] = sum(out.get(name, 0.0) for name in SDK_GROUPS)
    out["_incl"] = {name: incl.get(name, 0) / 1000.0 for name in SDK_GROUPS}
    out["_other_top"] = {k: round(v / 1000.0, 1) for k, v in other.most_common(8)}
    out["_ours_modules"] = {k: round(v / 1000.0, 2) for k, v in ours.most_common()}
    return out


def run_import_times(bench: Bench) -> dict:
    a = bench.args
    results = {}
    variants = [(s, False) for s in SINKS_ALL] + [("file", True)]
    for sink, lazy in variants:
        label = sink + (" + first-invocation imports" if lazy else "")
        if not (ROOT / "shared" / "sinks" / f"{sink}.py").exists():
            results[label] = {"present": False}
            bench.log(f"  {label:<40} not present")
            continue
        code = ("import functions.drain\nfrom shared.settings import load_settings\n"
                "from shared.sinks import make_sink\nmake_sink(load_settings())\n")
        if lazy:
            code += LAZY_IMPORTS + "\n"
        env = import_env(sink, bench.work)
        samples = []
        walls = []
        for i in range(a.import_runs + 1):  # the first run warms the page cache and writes .pyc files
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=120)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                results[label] = {"present": True, "error": proc.stderr[-1500:]}
                break
            if i:
                samples.append(parse_importtime(proc.stderr))
                walls.append(wall)
        else:
            def med(key: str) -> float:
                return round(statistics.median(s.get(key, 0.0) for s in samples), 1)

            row = {"present": True, "runs": len(samples), "total_ms": med("total"), "ours_ms": med("ours"),
                   "ours_min_ms": round(min(x.get("ours", 0.0) for x in samples), 1),
                   "total_min_ms": round(min(x.get("total", 0.0) for x in samples), 1),
                   "sdks_ms": med("sdks"), "other_ms": med("other"),
                   "by_sdk_ms": {name: med(name) for name in SDK_GROUPS},
                   "by_sdk_incl_deps_ms": {name: round(statistics.median(x["_incl"][name] for x in samples), 1)
                                           for name in SDK_GROUPS},
                   "process_wall_ms": round(1000 * statistics.median(walls), 1),
                   "ours_modules_ms": samples[len(samples) // 2]["_ours_modules"],
                   "other_top_packages_ms": samples[len(samples) // 2]["_other_top"]}
            row["ours_within_target"] = row["ours_ms"] <= a.ours_target_ms
            results[label] = row
        bench.log(f"  {label:<40} " + (f"total {results[label]['total_ms']:.0f} ms, ours {results[label]['ours_ms']:.1f} ms"
                                        if "total_ms" in results[label] else "error"))
    return {"target_ours_ms": a.ours_target_ms, "runs": a.import_runs, "python": sys.version.split()[0],
            "sinks": results}


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------

COLUMNS = [("consumer", 8), ("sink", 6), ("lat ms", 6), ("conc", 8), ("cons", 4), ("msgs", 7), ("time s", 7),
           ("msg/s", 8), ("MNS/1k", 7), ("writes/1k", 9), ("RSS MB", 6), ("ceiling", 8), ("%ceil", 6),
           ("x base", 6), ("cpu ms/msg", 10), ("cons%", 5), ("emu%", 5), ("note", 0)]


def format_row(r: dict) -> str:
    conc = f"{r['concurrency']}" + ("*" if r["concurrency_source"] == "default" and r["consumer"] == "drain" else "")
    if r["consumer"] == "baseline":
        conc = f"{r['concurrency']} thr"
    vals = [r["consumer"], r["sink"], f"{r['latency_ms']:g}", conc, str(r["consumers"]),
            f"{r['stored']}" + ("" if r["complete"] or r["time_boxed"] else "!"),
            f"{r['elapsed_seconds']:.1f}", f"{r['msg_per_s']:.0f}",
            "-" if r["mns_requests_per_1k"] is None else f"{r['mns_requests_per_1k']:.0f}",
            "-" if r["sink_writes_per_1k"] is None else f"{r['sink_writes_per_1k']:.0f}",
            f"{r['peak_rss_mb']:.0f}", f"{r['ceiling_msg_per_s']:.0f}", f"{100 * r['share_of_ceiling']:.0f}%",
            "-" if r["ratio_vs_baseline"] is None else f"{r['ratio_vs_baseline']:.1f}",
            "-" if r["consumer_cpu_ms_per_msg"] is None else f"{r['consumer_cpu_ms_per_msg']:.2f}",
            f"{100 * (r['consumer_cpu_util'] or 0):.0f}", f"{100 * (r['emulator_cpu_util'] or 0):.0f}", r["note"]]
    return " ".join(v.rjust(w) if i and w else v.ljust(w) for i, ((_, w), v) in enumerate(zip(COLUMNS, vals))).rstrip()


def print_report(report: dict) -> None:
    meta = report["meta"]
    print(f"\nalicom-drain benchmark — commit {meta['commit']}{' (+uncommitted shared/functions changes)' if meta['code_dirty'] else ''}, "
          f"{meta['date']}, Python {meta['python']}, {meta['cpus']} CPUs")
    print(f"placement: {meta['placement']}")
    print(f"machine: 1M-iteration Python loop {meta['python_loop_1m_ms']:.0f} ms; load average at start "
          f"{meta['loadavg_at_start'][0]:.1f}, at end {meta.get('loadavg_at_end', [0])[0]:.1f}")
    emu = report.get("emulator")
    if emu:
        print("\nEmulator at 0 ms injected latency (raw receive16 + batch delete, no decode, no sink; sdk = the MNS "
              "SDK's own client, drain = shared.mns_queue):")
        for c in emu["clients"]:
            print(f"  {c.get('client', 'sdk'):>5} client, {c['threads']:>2} threads: {c['msg_per_s']:8.0f} msg/s, "
                  f"{c['requests_per_s']:7.0f} req/s, {c['ms_per_request']:.3f} ms per request per client, client CPU "
                  f"{c.get('client_cpu_ms_per_request', 0):.2f} ms/request; emulator CPU "
                  f"{c['emulator_cpu_ms_per_request']:.2f} ms/request, {100 * c['emulator_cpu_util']:.0f}% of a core; "
                  f"clients {100 * c['client_cpu_util']:.0f}%")
        print(f"  per-request time at zero latency ({emu.get('per_request_client', 'sdk')} client, 1 thread): "
              f"{emu['per_request_ms_zero_latency']:.3f} ms; emulator ceiling >= {emu['ceiling_msg_per_s']:.0f} msg/s "
              f"measured (client-bound); by its own CPU per request one core of emulator serves "
              f"~{emu['emulator_cpu_bound_requests_per_s']:.0f} req/s = ~{emu['emulator_cpu_bound_msg_per_s']:.0f} msg/s")
    if report.get("placement"):
        print("\nPlacement check (drain defaults, sqlite):")
        for r in report["placement"]["rows"]:
            print(f"  {r['latency_ms']:>3} ms: beside the emulator {r['in_process_msg_per_s']:.0f} msg/s, own process "
                  f"{r['child_process_msg_per_s']:.0f} msg/s (ratio {r['in_process_vs_child']:.2f})")
    if report.get("runs"):
        print(f"\nThroughput, M = {meta['messages']} mixed receipts over {len(meta['message_types'])} queues, "
              f"DRAIN_WAIT_SECONDS={meta['wait_seconds']}:")
        print(" ".join(name.rjust(w) if i and w else name.ljust(w) for i, (name, w) in enumerate(COLUMNS)))
        for r in report["runs"]:
            print(format_row(r))
        print("  conc: drain DRAIN_CONCURRENCY per queue (* = default); baseline: threads per queue. cons = consumers "
              "in all. ceiling = cons*16/rtt, rtt = latency + per-request time at 0 ms. MNS/1k: MNS requests per 1,000 "
              "messages (token calls are separate: JSON token_requests). writes/1k: sink objects or batch calls per 1,000. "
              "cpu ms/msg: the consumer's CPU per message; cons%/emu%: consumer/emulator CPU as % of one core "
              "(each is one Python process: ~100% means GIL-bound). '!' after msgs: not every message stored.")
    if report.get("rss_vs_m"):
        print("\nPeak RSS vs M (drain defaults):")
        for r in report["rss_vs_m"]:
            print(f"  M={r['messages']:>7}: {r['peak_rss_mb']:.0f} MB peak RSS, {r['msg_per_s']:.0f} msg/s"
                  f"{' (time-boxed)' if r['time_boxed'] else ''}")
    f = report.get("faults")
    if f:
        print(f"\nFailure under load: {f['messages']} messages, injected {f['injected']['server_error']} x 500 and "
              f"{f['injected']['throttle']} x 429 of {f['injected']['requests']} requests; "
              f"{len(f['drain']['invocations'])} invocation(s), {f['drain']['elapsed_seconds']:.1f} s")
        print(f"  rows {f['rows']} / distinct keys enqueued {f['distinct_keys_enqueued']}, missing {f['missing_keys']}, "
              f"unexpected {f['unexpected_keys']}, dead letters {f['dead_letters']}, left in queue "
              f"{f['queue']['visible'] + f['queue']['in_flight']}")
        print(f"  {'PASS' if f['passed'] else 'FAIL'}: " + ", ".join(f"{k}={v}" for k, v in f["checks"].items()))
    imp = report.get("import_times")
    if imp:
        print(f"\nCold start: python -X importtime -c 'import functions.drain; make_sink(load_settings())', "
              f"median of {imp['runs']} runs, ms; target ours <= {imp['target_ours_ms']:g} ms. ours = self time of "
              f"shared.*/functions.*; an SDK column = self time of its own modules (the second table adds what it "
              f"pulls in first); wall = the whole interpreter run:")
        names = list(SDK_GROUPS)
        print(f"  {'sink':<34}{'total':>7}{'ours':>7}{'SDKs':>7} " + " ".join(f"{n[:10]:>10}" for n in names)
              + f"{'other':>7}{'wall':>7}")
        for label, r in imp["sinks"].items():
            if not r.get("present"):
                print(f"  {label:<34}not present")
            elif "error" in r:
                print(f"  {label:<34}error: {r['error'].splitlines()[-1] if r['error'] else ''}")
            else:
                print(f"  {label:<34}{r['total_ms']:7.0f}{r['ours_ms']:7.1f}{r['sdks_ms']:7.0f} "
                      + " ".join(f"{r['by_sdk_ms'][n]:10.1f}" for n in names)
                      + f"{r['other_ms']:7.0f}{r['process_wall_ms']:7.0f}" + ("" if r["ours_within_target"] else "  OVER")
                      + "  other: " + ", ".join(f"{k} {v:.0f}" for k, v in list(r["other_top_packages_ms"].items())[:3]))
        print("  the SDKs again, each with the packages first imported beneath it (ms):")
        for label, r in imp["sinks"].items():
            if r.get("by_sdk_incl_deps_ms"):
                print(f"  {label:<34}{'':21} " + " ".join(f"{r['by_sdk_incl_deps_ms'][n]:10.1f}" for n in names))


def parse_list(text: str, kind=float) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--messages", type=int, default=20000, help="M receipts per configuration (default 20000)")
    p.add_argument("--latencies", type=lambda s: parse_list(s, float), default=[5, 20, 50, 150],
                   help="injected per-request latency sweep, ms (default 5,20,50,150)")
    p.add_argument("--concurrency", type=lambda s: parse_list(s, int), default=[1, 2, 4, 8, 16],
                   help="DRAIN_CONCURRENCY sweep (default 1,2,4,8,16)")
    p.add_argument("--sink", choices=["sqlite", "file"], default="sqlite", help="the sink of the sweep")
    p.add_argument("--both-sinks-at", type=lambda s: parse_list(s, float), default=[20],
                   help="latencies (ms) at which baseline and drain defaults also run on the other local sink")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--repeat", type=int, default=None,
                   help="runs of the baseline and of the drain defaults per latency and sink, interleaved; "
                        "rows report the median (default 3, 1 with --quick; the machine's speed drifts)")
    p.add_argument("--wait-seconds", type=int, default=0, help="DRAIN_WAIT_SECONDS for throughput runs")
    p.add_argument("--max-config-seconds", type=float, default=120,
                   help="a configuration predicted to run longer is time-boxed (also its hard limit); "
                        "default 120 keeps the default sweep near 15 minutes on 2 cores")
    p.add_argument("--window", type=float, default=30, help="seconds of a time-boxed run")
    p.add_argument("--rss-messages", type=int, default=None,
                   help="also run drain defaults with this M to compare peak RSS (default 100000 with --all, "
                        "else skipped)")
    p.add_argument("--quick", action="store_true", help="small calibration, no placement or RSS-vs-M runs")
    p.add_argument("--faults", action="store_true", help="failure-under-load check (exit 1 if it fails)")
    p.add_argument("--fault-messages", type=int, default=0, help="M for --faults (default: --messages)")
    p.add_argument("--fault-visibility-timeout", type=float, default=3.0)
    p.add_argument("--fault-max-seconds", type=float, default=240)
    p.add_argument("--import-times", action="store_true", help="cold-start import times per sink")
    p.add_argument("--import-runs", type=int, default=5, help="measured runs per sink (median), after one warm-up")
    p.add_argument("--ours-target-ms", type=float, default=50)
    p.add_argument("--sweep", action="store_true", help="run the throughput sweep too (it is the default "
                                                         "when neither --faults nor --import-times is given)")
    p.add_argument("--all", action="store_true", help="sweep, RSS vs M, faults and import times")
    p.add_argument("--json", type=Path, default=None,
                   help="write the report here (default scripts/results/bench-<date>.json)")
    args = p.parse_args(argv)
    if args.all:
        args.sweep = args.faults = args.import_times = True
    elif not (args.faults or args.import_times):
        args.sweep = True
    if args.rss_messages is None:
        args.rss_messages = 100000 if args.all else 0
    if args.quick:
        args.rss_messages = 0
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    return args


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        return child_main(argv)
    args = parse_args(argv)
    bench = Bench(args)
    started = time.monotonic()
    report: dict[str, Any] = {"meta": {
        **git_commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": sys.version.split()[0], "cpus": os.cpu_count(),
        "python_loop_1m_ms": python_speed_ms(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "messages": args.messages, "message_types": list(bench.types), "latencies_ms": args.latencies,
        "concurrency_sweep": args.concurrency, "default_concurrency": bench.default_concurrency,
        "wait_seconds": args.wait_seconds, "max_config_seconds": args.max_config_seconds, "window_seconds": args.window,
        "placement": "emulator in the bench process; each measured consumer in its own child process "
                     "(peak RSS per run: the child's VmHWM)",
    }}
    exit_code = 0
    try:
        if args.sweep:
            bench.log("calibration: emulator ceiling and per-request time at 0 ms")
            report["emulator"] = bench.emulator_ceiling()
            report["sink_write_cost"] = bench.sink_write_cost()
            if not args.quick:
                report["placement"] = bench.placement_check()
            bench.sweep()
            report["runs"] = bench.runs
            if args.rss_messages:
                report["rss_vs_m"] = bench.rss_vs_m()
        if args.faults:
            report["faults"] = run_faults(bench)
            if not report["faults"]["passed"]:
                exit_code = 1
        if args.import_times:
            bench.log("cold start: import times")
            report["import_times"] = run_import_times(bench)
        if args.sweep and any(not r["complete"] and not r["time_boxed"] for r in bench.runs):
            exit_code = exit_code or 2
    finally:
        bench.close()
    report["meta"]["bench_seconds"] = round(time.monotonic() - started, 1)
    report["meta"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print_report(report)
    path = args.json or ROOT / "scripts" / "results" / f"bench-{datetime.now().strftime('%Y-%m-%d')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nJSON: {path}  ({report['meta']['bench_seconds']:.0f} s)")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
