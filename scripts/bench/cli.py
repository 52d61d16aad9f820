"""Arguments and the run: `python -m scripts.bench` (the package docstring is its help)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import scripts.bench
from scripts.bench.child import child_main
from scripts.bench.common import ROOT, git_commit, python_speed_ms
from scripts.bench.faults import run_faults
from scripts.bench.imports import run_import_times
from scripts.bench.output import print_report
from scripts.bench.runner import Bench

HELP = scripts.bench.__doc__ or ""


def parse_list(text: str, kind=float) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench", description=HELP.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=HELP.split("\n", 2)[2])
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
