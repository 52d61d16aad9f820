"""Scale-out benchmark: a backlog drained by 1, 2, 4, 8 runs at once (a benchmark, not a test).

    python -m scripts.bench.scale                               # 200,000 receipts, 150 and 20 ms, K = 1,2,4,8
    python -m scripts.bench.scale --messages 40000 --latencies 150 --workers 1,4

For each round-trip latency and each K, a fresh loopback emulator holds the same backlog (mixed
receipts of four types, scripts/receipts.py). A schedule ticks every --period seconds: each tick
starts the real drain as a process of its own (`python -m scripts.invoke_local drain --platform fc
--timer`, timeout --timeout) with DRAIN_MAX_WORKERS=K. A run that finds its queues behind starts
K-1 workers through FC 3.0's InvokeFunction (the real SDK, over a socket to the emulator), and the
emulator runs each of them as a process of its own, as the platform runs each invocation in an
instance. DRAIN_BACKLOG_SECONDS=0: the backlog is fresh here, and detection is not what is
measured. Ticks go on until the queues are empty.

Reported per K: the time until the queues were empty, the rate (receipts / that time), the
scaling efficiency (rate at K / (K x rate at 1)), MNS requests and objects per 1,000 receipts,
and the CPU the drain processes used. Results go to scripts/results/scale-<name>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from scripts.bench.common import AK, ROOT, SECRET, UID, drain_env
from scripts.emulator import Emulator
from scripts.receipts import b64json, make_receipts

RESULTS = ROOT / "scripts" / "results"
TYPES = ("SmsReport", "SmsUp", "VoiceReport", "VoiceCallReport")


def corpus(messages: int) -> dict[str, list[str]]:
    """The same backlog for every run: base64 bodies per type."""
    per_type = messages // len(TYPES)
    return {t: [b64json(body) for body in make_receipts(t, per_type, seed=11)] for t in TYPES}


def scale_env(emu: Emulator, sink: Path, workers: int, concurrency: Optional[int] = None) -> dict[str, str]:
    extra = {"DRAIN_CONCURRENCY": str(concurrency)} if concurrency else {}
    return drain_env(emu, TYPES, "file", str(sink), DRAIN_MAX_WORKERS=str(workers), DRAIN_BACKLOG_SECONDS="0",
                     DRAIN_INVOKE_ENDPOINT=emu.url, DRAIN_WAIT_SECONDS="1", POWERTOOLS_LOG_LEVEL="WARNING",
                     POWERTOOLS_METRICS_DISABLED="true", **extra)


def drain_command(timeout: float) -> list[str]:
    return [sys.executable, "-m", "scripts.invoke_local", "drain", "--platform", "fc", "--timeout", str(timeout)]


def left(emu: Emulator) -> int:
    # Not queue_state: it walks every message under the emulator's lock, and polled through a
    # 200,000-message backlog it cost the emulator more CPU than the drains themselves.
    return sum(emu.undeleted(emu.queue_name(t)) for t in TYPES)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    """This process's CPU: almost all of it the emulator's threads answering the drains."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat (Linux): whoever used them."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def run_one(bodies: dict[str, list[str]], latency: float, workers: int, period: float, timeout: float,
            work: Path, limit: float, concurrency: Optional[int] = None) -> dict[str, Any]:
    total = sum(len(v) for v in bodies.values())
    sink = work / f"sink-{latency * 1000:.0f}ms-k{workers}"
    shutil.rmtree(sink, ignore_errors=True)
    emu = Emulator(customer_keys={AK: SECRET}, uid=UID, seed=3, latency=latency, visibility_timeout=60)
    emu.start()
    try:
        for mtype, items in bodies.items():
            name = emu.queue_name(mtype)
            emu.create_queue(name)
            for body in items:
                emu.enqueue(name, body)
        env = scale_env(emu, sink, workers, concurrency)
        emu.register_process_function("alicom-drain", drain_command(timeout) + ["--event"], env=env, cwd=str(ROOT),
                                      log_dir=str(work / "logs"))
        emu.reset_stats()
        cpu_before, emulator_before, machine_before = children_cpu(), own_cpu(), machine_cpu()
        ticks: list[subprocess.Popen] = []
        started = time.monotonic()
        next_tick = started
        emptied: Optional[float] = None
        while emptied is None and time.monotonic() - started < limit:
            now = time.monotonic()
            if now >= next_tick:
                ticks.append(subprocess.Popen(drain_command(timeout) + ["--timer"], env=env, cwd=str(ROOT),
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                next_tick += period
            if left(emu) == 0:
                emptied = time.monotonic() - started
                break
            time.sleep(0.2)
        for tick in ticks:
            tick.wait(timeout + 10)
        emu.wait_async(timeout + 10)
        cpu, emulator_cpu = children_cpu() - cpu_before, own_cpu() - emulator_before
        busy, total_jiffies = (after - before for after, before in zip(machine_cpu(), machine_before, strict=True))
        stats = emu.stats()
    finally:
        emu.stop()
    objects = sum(1 for _ in sink.rglob("*.jsonl")) if sink.exists() else 0
    lines = sum(p.read_bytes().count(b"\n") for p in sink.rglob("*.jsonl")) if sink.exists() else 0
    requests = stats.get("BatchReceiveMessage", 0) + stats.get("BatchDeleteMessage", 0)
    seconds = emptied if emptied is not None else float("nan")
    return {
        "latency_ms": round(latency * 1000), "workers": workers, "messages": total, "ticks": len(ticks),
        "worker_invocations": stats.get("Fc3InvokeFunction", 0), "seconds_to_empty": round(seconds, 2),
        "rate_per_second": round(total / seconds, 1) if emptied else None, "emptied": emptied is not None,
        "stored_lines": lines, "mns_requests_per_1000": round(requests * 1000 / total, 1),
        "objects_per_1000": round(objects * 1000 / total, 2), "drain_cpu_seconds": round(cpu, 1),
        "emulator_cpu_seconds": round(emulator_cpu, 1),
        # The whole machine, this bench and anything else running: 1.0 = every core busy.
        "machine_cpu_busy": round(busy / total_jiffies, 2) if total_jiffies else None,
        "load_average_1m": round(os.getloadavg()[0], 2), "drain_concurrency": concurrency,
        "token_calls": stats.get("QueryTokenForMnsQueue", 0),
    }


def efficiency(rows: list[dict[str, Any]]) -> None:
    base = {r["latency_ms"]: r["rate_per_second"] for r in rows if r["workers"] == 1 and r["rate_per_second"]}
    for r in rows:
        one = base.get(r["latency_ms"])
        rate = r["rate_per_second"]
        r["scaling_efficiency"] = round(rate / (r["workers"] * one), 2) if one and rate else None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--latencies", default="150,20", help="round-trip latencies in ms (default %(default)s)")
    parser.add_argument("--workers", default="1,2,4,8", help="K values (default %(default)s)")
    parser.add_argument("--period", type=float, default=60.0, help="schedule period, seconds (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=55.0, help="function timeout, seconds (default %(default)s)")
    parser.add_argument("--limit", type=float, default=900.0, help="give up on one run after this many seconds")
    parser.add_argument("--concurrency", type=int, help="DRAIN_CONCURRENCY, consumers per queue and run "
                        "(default: the drain's own); fewer make each run lighter on this machine's CPU")
    parser.add_argument("--name", default="200k")
    args = parser.parse_args(argv)
    latencies = [float(x) / 1000 for x in args.latencies.split(",")]
    ks = [int(x) for x in args.workers.split(",")]
    bodies = corpus(args.messages)
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        for latency in latencies:
            for k in ks:
                row = run_one(bodies, latency, k, args.period, args.timeout, Path(tmp), args.limit, args.concurrency)
                rows.append(row)
                print(json.dumps(row), flush=True)
    efficiency(rows)
    report = {"command": "python -m scripts.bench.scale " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpus": os.cpu_count(), "rows": rows,
              "median_python_loop_ms": statistics.median(_loop_ms() for _ in range(3))}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"scale-{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'rtt':>5} {'K':>2} {'to empty':>9} {'rate/s':>8} {'eff':>5} {'MNS/1k':>7} {'obj/1k':>7} {'cpu s':>6} "
          f"{'emu s':>6} {'busy':>5}")
    for r in rows:
        print(f"{r['latency_ms']:>4}ms {r['workers']:>2} {r['seconds_to_empty']:>8}s {r['rate_per_second'] or 0:>8} "
              f"{r['scaling_efficiency'] or 0:>5} {r['mns_requests_per_1000']:>7} {r['objects_per_1000']:>7} "
              f"{r['drain_cpu_seconds']:>6} {r['emulator_cpu_seconds']:>6} {r['machine_cpu_busy'] or 0:>5}")
    return 0


def _loop_ms() -> float:
    """This machine's speed right now: a fixed pure-Python loop (shared machines drift)."""
    t0 = time.perf_counter()
    total = 0
    for i in range(1_000_000):
        total += i
    return (time.perf_counter() - t0) * 1000


if __name__ == "__main__":
    sys.exit(main())
