"""What a function size buys: cold start, throughput and cost per million receipts at a few
CPU shares, on each platform's CPU-per-memory model (a benchmark, not a test).

    python -m scripts.package --target aws --out build/aws          # the build to cold-start
    sudo python -m scripts.sizing --build build/aws --python python3.12 [--messages 5000] [--json out.json]

Platforms give a function CPU with its memory: Lambda in proportion (1,769 MB = one vCPU),
Function Compute 3.0 as chosen (0.05 vCPU steps, memory 1 to 4 GB per vCPU). Each share is
reproduced here with a cgroup CPU quota (scripts/cpu_cap.py), so the kernel lets the
process run that fraction of one core, as the platform's would. For each share:

- cold start: the drain handler and the file sink imported from the build, in fresh capped
  interpreters (median of --cold-runs; scripts/coldstart.py's probe);
- throughput: the real handler, in a capped child process (scripts/bench/child.py),
  drains --messages receipts from the emulator at --latency ms per request (the emulator
  runs uncapped in this process: it stands for Alicom), file sink, default settings but
  DRAIN_WAIT_SECONDS=0; messages per second over the run;
- cost per million receipts drained from a backlog, and the monthly floor of an idle
  schedule (one run a minute that finds the queues empty after the default 3 s long poll,
  measured the same way), with the prices below. Prices change: the constants say where
  they come from.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Optional, Sequence

from scripts.coldstart import measure
from scripts.cpu_cap import CpuCap

# Lambda (x86_64, us-east-1 list prices): USD per GB-second and per request; 1,769 MB = 1 vCPU.
LAMBDA_GB_SECOND_USD = 0.0000166667
LAMBDA_REQUEST_USD = 0.20 / 1_000_000
LAMBDA_MB_PER_VCPU = 1769
# Function Compute 3.0 bills CU (2024-08-27 on): 1 CU per active vCPU-second, 0.15 CU per
# GB-second, 75 CU per 10,000 invocations; tier-1 list price 0.00011 CNY per CU.
FC_CU_PER_VCPU_SECOND = 1.0
FC_CU_PER_GB_SECOND = 0.15
FC_CU_PER_INVOCATION = 75 / 10_000
FC_CNY_PER_CU = 0.00011

LAMBDA_SIZES_MB = (128, 256, 512, 1024, 1769)
FC_SIZES = ((0.35, 512), (0.5, 1024), (1.0, 2048))  # (vCPU, MB): 512 MB / 0.35 vCPU is the fc3 default
TICKS_PER_MONTH = 30 * 24 * 60
TIMEOUT = 55.0


def throughput(cpus: float, messages: int, latency_ms: float, wait_seconds: int = 0) -> dict:
    """Drain `messages` receipts with the real handler in a child capped at `cpus` of a core
    (messages=0 with the default 3 s long poll: what an idle tick costs)."""
    from scripts.bench.runner import Bench

    bench = Bench(Namespace(wait_seconds=wait_seconds, quick=False, messages=messages))
    emu = bench.emulator(messages, latency_ms)
    out = bench.work / f"sizing-{cpus}.json"
    try:
        env = bench.env(emu, "file", bench.sink_path("file"))
        with CpuCap(cpus) as cap:
            started = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "scripts.bench", "--child", "drain", "--out", str(out),
                                   "--max-seconds", "600", "--timeout", str(TIMEOUT)],
                                  env=env, cwd=Path(__file__).resolve().parents[1], preexec_fn=cap.enter,
                                  capture_output=True, text=True, timeout=900)
            wall = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"sizing: the drain child failed at {cpus} vCPU:\n"
                             f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        result = json.loads(out.read_text())
    finally:
        emu.stop()
        bench.close()
    stored = result["totals"].get("stored", 0)
    return {"messages": messages, "stored": stored, "seconds": result["elapsed_seconds"],
            "messages_per_second": round(stored / result["elapsed_seconds"], 1) if messages else 0.0,
            "cpu_seconds": result["cpu_seconds"], "import_seconds": result["import_seconds"], "wall": round(wall, 1)}


def lambda_cost(mb: int, rate: float, idle_seconds: float) -> dict:
    gb = mb / 1024
    seconds = 1_000_000 / rate
    invocations = math.ceil(seconds / TIMEOUT)
    per_million = seconds * gb * LAMBDA_GB_SECOND_USD + invocations * LAMBDA_REQUEST_USD
    idle = TICKS_PER_MONTH * (idle_seconds * gb * LAMBDA_GB_SECOND_USD + LAMBDA_REQUEST_USD)
    return {"usd_per_million": round(per_million, 4), "usd_idle_month": round(idle, 2)}


def fc_cost(vcpu: float, mb: int, rate: float, idle_seconds: float) -> dict:
    gb = mb / 1024
    seconds = 1_000_000 / rate
    invocations = math.ceil(seconds / TIMEOUT)
    cu = seconds * (vcpu * FC_CU_PER_VCPU_SECOND + gb * FC_CU_PER_GB_SECOND) + invocations * FC_CU_PER_INVOCATION
    idle_cu = TICKS_PER_MONTH * (idle_seconds * (vcpu * FC_CU_PER_VCPU_SECOND + gb * FC_CU_PER_GB_SECOND)
                                 + FC_CU_PER_INVOCATION)
    return {"cny_per_million": round(cu * FC_CNY_PER_CU, 3), "cny_idle_month": round(idle_cu * FC_CNY_PER_CU, 2)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.sizing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, required=True, help="a build of scripts/package.py, for the cold start")
    parser.add_argument("--python", default=sys.executable, help="the build's CPython (cold start)")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=20.0, help="ms per emulator request")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    shares = sorted({round(mb / LAMBDA_MB_PER_VCPU, 3) for mb in LAMBDA_SIZES_MB} | {v for v, _ in FC_SIZES})
    measured = {}
    for cpus in shares:
        with CpuCap(cpus) as cap:
            cold = measure(args.python, args.build.resolve(), ["functions.drain", "shared.sinks.file"],
                           args.cold_runs, cap)
        run = throughput(cpus, args.messages, args.latency)
        idle = throughput(cpus, 0, args.latency, wait_seconds=3)  # the default long poll, empty queues
        measured[cpus] = {"cold_start_ms": cold["median_ms"], **run, "idle_run_seconds": idle["seconds"]}
        print(f"{cpus:>6.3f} vCPU: cold start {cold['median_ms']:>7.1f} ms, {run['messages_per_second']:>7.1f} msg/s "
              f"({run['stored']}/{run['messages']} in {run['seconds']} s, {run['cpu_seconds']} CPU-s), "
              f"idle run {idle['seconds']} s", flush=True)
    rows = []
    for mb in LAMBDA_SIZES_MB:
        m = measured[round(mb / LAMBDA_MB_PER_VCPU, 3)]
        rows.append({"platform": "lambda", "memory_mb": mb, "vcpu": round(mb / LAMBDA_MB_PER_VCPU, 3), **m,
                     **lambda_cost(mb, m["messages_per_second"], m["idle_run_seconds"])})
    for vcpu, mb in FC_SIZES:
        m = measured[vcpu]
        rows.append({"platform": "fc", "memory_mb": mb, "vcpu": vcpu, **m,
                     **fc_cost(vcpu, mb, m["messages_per_second"], m["idle_run_seconds"])})
    print(f"\n{'platform':<8}{'memory':>8}{'vCPU':>7}{'cold ms':>9}{'msg/s':>8}  cost per million receipts; idle month")
    for r in rows:
        cost = (f"USD {r['usd_per_million']:.4f}; USD {r['usd_idle_month']:.2f}" if r["platform"] == "lambda"
                else f"CNY {r['cny_per_million']:.3f}; CNY {r['cny_idle_month']:.2f}")
        print(f"{r['platform']:<8}{r['memory_mb']:>6} MB{r['vcpu']:>7.3f}{r['cold_start_ms']:>9.1f}"
              f"{r['messages_per_second']:>8.0f}  {cost}")
    if args.json:
        report = {"latency_ms": args.latency, "messages": args.messages, "rows": rows}
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
