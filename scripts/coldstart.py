"""Cold-start import time of the functions from a built package (a benchmark, not a test).

    python -m scripts.package --target aws --out build/aws
    python -m scripts.package --target fc --sink oss --out build/fc-oss
    python -m scripts.coldstart --build build/aws --build build/fc-oss [--python python3.12] [--runs 10]

For each build, function and sink the build carries, a fresh interpreter (`python -I`, with
only the build on sys.path, as the platforms run it) imports the handler's module and the
sink's module (which imports the sink's SDK), timed inside the interpreter with
perf_counter; the interpreter's own start-up is not counted. Each figure is the median of
`--runs` fresh interpreters. The interpreter should be the build's CPython version: the
bytecode in the build is for that version only, and another would compile every module.

`--cpu 0.35` runs every interpreter in a cgroup (v2 `cpu.max` or v1 `cpu.cfs_quota_us`)
capped at that fraction of one CPU, like a function sized for that share; it needs root.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from scripts.cpu_cap import CpuCap

# The sinks each target's builds may carry, and the shared module that imports each SDK.
SINKS = {"file": "shared.sinks.file", "sqlite": "shared.sinks.sqlite", "s3": "shared.sinks.s3",
         "dynamodb": "shared.sinks.dynamodb", "oss": "shared.sinks.oss", "tablestore": "shared.sinks.tablestore"}
FUNCTIONS = {"drain": "functions.drain", "reconcile": "functions.reconcile"}

_PROBE = r"""
import importlib, json, sys, time
sys.path[:0] = json.loads(sys.argv[1])
modules = json.loads(sys.argv[2])
start = time.perf_counter()
for name in modules:
    importlib.import_module(name)
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "modules": len(sys.modules)}))
"""


def build_paths(build: Path) -> list[str]:
    """sys.path as the platform sets it: the code root, plus python/ on FC (PYTHONPATH=/code/python)."""
    paths = [str(build)]
    if (build / "python").is_dir():
        paths.append(str(build / "python"))
    return paths


def sinks_in(build: Path) -> list[str]:
    """The sinks whose SDK the build holds (file and sqlite need none)."""
    deps = build / "python" if (build / "python").is_dir() else build
    present = {"s3": "boto3", "dynamodb": "boto3", "oss": "oss2", "tablestore": "tablestore"}
    return ["file", "sqlite"] + [s for s, pkg in present.items() if (deps / pkg).is_dir()]


def measure(python: str, build: Path, modules: list[str], runs: int, cap: Optional[CpuCap] = None) -> dict:
    times, count = [], 0
    for _ in range(runs):
        # -B: a build without bytecode must stay cold on every run, not cache what it compiled.
        command = [python, "-I", "-B", "-c", _PROBE, json.dumps(build_paths(build)), json.dumps(modules)]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=build,
                              preexec_fn=cap.enter if cap else None)
        if proc.returncode != 0:
            raise SystemExit(f"coldstart: importing {modules} from {build} failed:\n{proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        times.append(result["seconds"])
        count = result["modules"]
    return {"median_ms": round(statistics.median(times) * 1000, 1), "min_ms": round(min(times) * 1000, 1),
            "max_ms": round(max(times) * 1000, 1), "modules": count, "runs": runs}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.coldstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, action="append", required=True, help="a build directory (repeatable)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter (the build's CPython version)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cpu", type=float, help="cap each interpreter at this fraction of one CPU (cgroups, root)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    version = subprocess.run([args.python, "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    cap = CpuCap(args.cpu) if args.cpu else None
    rows = []
    try:
        for build in args.build:
            for sink in sinks_in(build):
                for function, module in FUNCTIONS.items():
                    figures = measure(args.python, build.resolve(), [module, SINKS[sink]], args.runs, cap)
                    rows.append({"build": str(build), "function": function, "sink": sink, **figures})
                    print(f"{str(build):<28} {function:<10} {sink:<11} median {figures['median_ms']:>7.1f} ms "
                          f"(min {figures['min_ms']:.1f}, max {figures['max_ms']:.1f}; {figures['modules']} modules)",
                          flush=True)
    finally:
        if cap:
            cap.close()
    print(f"CPython {version}; {args.runs} fresh interpreters each" + (f"; CPU capped at {args.cpu}" if cap else ""))
    if args.json:
        args.json.write_text(json.dumps({"python": version, "cpu": args.cpu, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
