"""`python -m scripts.chaos`: the command line."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import scripts.chaos as package
from scripts.chaos.config import PRESETS, RESULTS, SINKS, Config
from scripts.chaos.results import run_config


def parse(argv: Optional[list[str]] = None) -> tuple[Config, Path]:
    doc = package.__doc__ or ""
    p = argparse.ArgumentParser(prog="python -m scripts.chaos", description=doc.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named configuration (options below override it)")
    p.add_argument("--name", help="names the results file scripts/results/chaos-<name>.json")
    p.add_argument("--runs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--messages", type=int, help="valid receipts per run")
    p.add_argument("--chaos-seconds", type=float)
    p.add_argument("--timeout", help="drain --timeout range MIN:MAX seconds")
    p.add_argument("--mns-timeout", help="MNS_TIMEOUT_SECONDS of the drains: one value, or choices a,b,c (one per run)")
    p.add_argument("--sink-lock-max", type=float, help="longest sqlite write-lock hold, seconds")
    p.add_argument("--sinks", help=f"comma-separated, one per run in turn: {','.join(SINKS)} (the default)")
    p.add_argument("--workers", type=int, help="K: DRAIN_MAX_WORKERS of every drain; a drain that meets a backlog "
                   "starts K-1 workers through the emulator's invoke API, each a drain process of its own")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--keep", action="store_true", help="keep each run's directory (a failed run's is always kept)")
    p.add_argument("--only", help="comma-separated run numbers to run alone (reproduce a failure; with --keep)")
    args = p.parse_args(argv)
    cfg = PRESETS.get(args.preset, Config())
    changes: dict[str, Any] = {}
    for name in ("name", "runs", "seed", "messages", "chaos_seconds", "sink_lock_max", "workers"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.mns_timeout:
        changes["mns_timeouts"] = tuple(float(x) for x in args.mns_timeout.split(","))
    if args.timeout:
        lo, _, hi = args.timeout.partition(":")
        changes["timeout_min"], changes["timeout_max"] = float(lo), float(hi or lo)
    if args.sinks:
        changes["sinks"] = tuple(s.strip() for s in args.sinks.split(",") if s.strip())
        unknown = sorted(set(changes["sinks"]) - set(SINKS))
        if unknown or not changes["sinks"]:
            p.error(f"--sinks: unknown {unknown}; choose from {','.join(SINKS)}")
    if args.keep:
        changes["keep"] = True
    if args.only:
        changes["only"] = tuple(int(x) for x in args.only.split(","))
    cfg = replace(cfg, **changes)
    if not 1 <= cfg.workers <= 64:
        p.error("--workers must be from 1 to 64 (DRAIN_MAX_WORKERS)")
    if cfg.chaos_seconds < 4:
        p.error("--chaos-seconds must be at least 4")
    return cfg, args.out


def main(argv: Optional[list[str]] = None) -> int:
    cfg, out = parse(argv)
    summary = run_config(cfg, out)
    return 0 if summary["ok"] else 1
