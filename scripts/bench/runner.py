"""The parent: emulators, child runs, calibration, the sweep and its rows."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from scripts.bench.child import timer_event
from scripts.bench.common import (
    AK,
    BASELINE_THREADS,
    BATCH,
    ROOT,
    SECRET,
    UID,
    ChildFailed,
    drain_env,
    message_types,
    process_cpu,
)
from scripts.bench.output import format_row
from shared.platform import RunFailed


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
        return drain_env(emu, self.types, sink, sink_path, DRAIN_WAIT_SECONDS=str(self.args.wait_seconds), **extra)

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
        out: dict[str, Any] = {"messages": m, "clients": []}
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
        from shared.records import MnsMeta, Record
        from shared.sinks.file import FileSink
        from shared.sinks.sqlite import SqliteSink

        bodies = self.messages(max(self.args.messages, 64))[self.types[0]][:64]
        decoded = [decode_message(self.types[0], b, MnsMeta(message_id=f"m{i}", enqueue_time=1))
                   for i, b in enumerate(bodies)]
        recs = [r for r in decoded if isinstance(r, Record)]  # the corpus decodes whole
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
                    result = handler(timer_event(), ctx)
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
                argv = ["-m", "scripts.baseline_consumer", "--threads", str(BASELINE_THREADS),
                        "--max-seconds", str(limit)]
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
            "concurrency_source": ("threads/queue" if kind == "baseline"
                                   else "default" if concurrency is None else "DRAIN_CONCURRENCY"),
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
