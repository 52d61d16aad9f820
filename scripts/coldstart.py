"""Cold-start import time of the functions from a built package (a benchmark, not a test).

    python -m scripts.package --target aws --out build/aws
    python -m scripts.package --target fc --sink oss --out build/fc-oss
    python -m scripts.coldstart --build build/aws --build build/fc-oss [--python python3.12] [--runs 10]

A cold start costs twice: the platform imports the handler's module (the init phase), then
the first invocation imports what the handler loads only when it runs. For each build,
function and sink the build carries, a fresh interpreter (`python -I`, with only the build
on sys.path, as the platforms run it) imports the handler's module, then (drain only) what
its first timer invocation imports: the token API's SDK, the MNS SDK, the sink's module
with its SDK and, in a Lambda build, the Parameters utility that reads the AccessKey's
secret (`first_run_modules`; tests/test_packaging.py holds the list to a real first run).
Each phase is timed inside the interpreter, wall (perf_counter) and CPU (process_time, less
sensitive to other work on the machine); the interpreter's own start-up is not counted.
Each figure is the median of `--runs` fresh interpreters, taken round by round over all rows
(so several builds, e.g. before and after a change, compare fairly). The interpreter should be the
build's CPython version: the bytecode in the build is for that version only, and another
would compile every module.

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

from scripts.bench.common import python_speed_ms
from scripts.cpu_cap import CpuCap

# The sinks each target's builds may carry: the shared module that imports each SDK, and what
# the SDK loads only as its client is made (boto3's S3 customisations).
SINKS = {"file": ("shared.sinks.file",), "sqlite": ("shared.sinks.sqlite",),
         "s3": ("shared.sinks.s3", "boto3.s3.inject"), "dynamodb": ("shared.sinks.dynamodb",),
         "oss": ("shared.sinks.oss",), "tablestore": ("shared.sinks.tablestore",)}
FUNCTIONS = {"drain": "functions.drain", "reconcile": "functions.reconcile"}
# What the drain's first timer invocation imports besides its sink: the token call's client
# (shared/pop.py, shared/tokens.py) and the MNS SDK (shared/mns_queue.py, when a queue opens).
DRAIN_FIRST_RUN = ("aliyunsdkcore.client", "aliyunsdkcore.auth.credentials", "aliyunsdkcore.acs_exception.exceptions",
                   "aliyunsdkdybaseapi.request.v20170525.QueryTokenForMnsQueueRequest", "shared.mns_queue")
# On Lambda the AccessKey comes from Secrets Manager through Powertools Parameters (shared/credentials.py).
LAMBDA_FIRST_RUN = ("aws_lambda_powertools.utilities.parameters", "botocore.config")

_PROBE = r"""
import importlib, json, sys, time
sys.path[:0] = json.loads(sys.argv[1])
phases = []
for modules in json.loads(sys.argv[2]):
    wall, cpu = time.perf_counter(), time.process_time()
    for name in modules:
        importlib.import_module(name)
    phases.append({"seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
                   "modules": len(sys.modules)})
print(json.dumps(phases))
"""


def build_paths(build: Path) -> list[str]:
    """sys.path as the platform sets it: the code root, plus python/ on FC (PYTHONPATH=/code/python)."""
    paths = [str(build)]
    if (build / "python").is_dir():
        paths.append(str(build / "python"))
    return paths


def is_lambda_build(build: Path) -> bool:
    """A Lambda build has its dependencies at the code root, an FC one under python/."""
    return not (build / "python").is_dir()


def sinks_in(build: Path) -> list[str]:
    """The sinks whose SDK the build holds (file and sqlite need none)."""
    deps = build / "python" if (build / "python").is_dir() else build
    present = {"s3": "boto3", "dynamodb": "boto3", "oss": "oss2", "tablestore": "tablestore"}
    return ["file", "sqlite"] + [s for s, pkg in present.items() if (deps / pkg).is_dir()]


def first_run_modules(build: Path, function: str, sink: str) -> list[str]:
    """What the function's first timer invocation imports after its handler's module (the drain's
    only: the reconcile runs once a day, its first run is not measured beyond its sink)."""
    modules = list(DRAIN_FIRST_RUN) if function == "drain" else []
    if is_lambda_build(build):
        modules += LAMBDA_FIRST_RUN
    return modules + list(SINKS[sink])


def _phase(results: list[dict], key: str) -> dict:
    values = [r[key] for r in results]
    return {"median_ms": round(statistics.median(values) * 1000, 1), "min_ms": round(min(values) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1)}


def python_version(python: str) -> str:
    """The interpreter's version, e.g. 3.12.1 (the bytecode in a build is for one version only)."""
    return subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def probe(python: str, build: Path, phases: list[list[str]], cap: Optional[CpuCap] = None) -> list[dict]:
    """One fresh interpreter importing each phase's modules in turn: seconds, CPU seconds, modules."""
    # -B: a build without bytecode must stay cold on every run, not cache what it compiled.
    command = [python, "-I", "-B", "-c", _PROBE, json.dumps(build_paths(build)), json.dumps(phases)]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=build, preexec_fn=cap.enter if cap else None)
    if proc.returncode != 0:
        raise SystemExit(f"coldstart: importing {phases} from {build} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(results: list[list[dict]]) -> dict:
    """Medians over the runs of one probe: the first phase (median_ms, cpu_median_ms, ...), and of
    the second and both together when there is one (then_median_ms, total_median_ms, ...)."""
    first = [r[0] for r in results]
    figures = {**_phase(first, "seconds"), "cpu_median_ms": _phase(first, "cpu_seconds")["median_ms"],
               "modules": first[-1]["modules"], "runs": len(results)}
    if len(results[0]) > 1:
        second = [r[1] for r in results]
        totals = [{"seconds": a["seconds"] + b["seconds"], "cpu_seconds": a["cpu_seconds"] + b["cpu_seconds"]}
                  for a, b in zip(first, second, strict=False)]
        figures.update({f"then_{k}": v for k, v in _phase(second, "seconds").items()})
        figures["then_cpu_median_ms"] = _phase(second, "cpu_seconds")["median_ms"]
        figures["total_median_ms"] = _phase(totals, "seconds")["median_ms"]
        figures["total_cpu_median_ms"] = _phase(totals, "cpu_seconds")["median_ms"]
        figures["then_modules"] = second[-1]["modules"] - first[-1]["modules"]
    return figures


def measure(python: str, build: Path, modules: list[str], runs: int, cap: Optional[CpuCap] = None,
            then: Sequence[str] = ()) -> dict:
    """Median import time of `modules` in `runs` fresh interpreters (median_ms, cpu_median_ms),
    and with `then`, of those imported next in the same interpreter (then_median_ms, ...)."""
    phases = [modules, list(then)] if then else [modules]
    return summarise([probe(python, build, phases, cap) for _ in range(runs)])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.coldstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, action="append", required=True, help="a build directory (repeatable)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter (the build's CPython version)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cpu", type=float, help="cap each interpreter at this fraction of one CPU (cgroups, root)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    version = python_version(args.python)
    cap = CpuCap(args.cpu) if args.cpu else None
    # How fast this machine runs Python right now (other work on it slows every figure alike).
    machine = {"python_loop_1m_ms": [python_speed_ms()], "loadavg": [round(os.getloadavg()[0], 2)]}
    rows = [{"build": str(build), "function": function, "sink": sink,
             "first_run": first_run_modules(build.resolve(), function, sink)}
            for build in args.build for sink in sinks_in(build) for function in FUNCTIONS]
    results: list[list[list[dict]]] = [[] for _ in rows]
    try:
        # Round by round, every row once per round: a machine that slows down for a while slows
        # every row alike, so rows (and builds) compare fairly.
        for done in range(args.runs):
            for row, runs in zip(rows, results, strict=False):
                phases = [[FUNCTIONS[row["function"]]], row["first_run"]]
                runs.append(probe(args.python, Path(row["build"]).resolve(), phases, cap))
            print(f"round {done + 1} of {args.runs}", file=sys.stderr, flush=True)
    finally:
        if cap:
            cap.close()
    machine["python_loop_1m_ms"].append(python_speed_ms())
    machine["loadavg"].append(round(os.getloadavg()[0], 2))
    print(f"{'build':<28} {'function':<10} {'sink':<11} {'import (cpu)':>18} {'first run (cpu)':>18} "
          f"{'total (cpu)':>18}")
    for row, runs in zip(rows, results, strict=False):
        row.update(summarise(runs))
        print(f"{row['build']:<28} {row['function']:<10} {row['sink']:<11} "
              f"{row['median_ms']:>8.1f} ({row['cpu_median_ms']:>6.1f}) ms "
              f"{row['then_median_ms']:>8.1f} ({row['then_cpu_median_ms']:>6.1f}) ms "
              f"{row['total_median_ms']:>8.1f} ({row['total_cpu_median_ms']:>6.1f}) ms")
    print(f"CPython {version}; median of {args.runs} fresh interpreters each, the rows in turn; wall (CPU) ms"
          + (f"; CPU capped at {args.cpu}" if cap else "")
          + f"; scripts/bench's Python loop took {machine['python_loop_1m_ms']} ms, "
          f"load average {machine['loadavg']} (at the start and the end)")
    if args.json:
        args.json.write_text(json.dumps({"python": version, "cpu": args.cpu, **machine, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
