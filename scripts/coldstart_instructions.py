"""The handler import counted in CPU instructions, layer by layer (a benchmark, not a test).

    python -m scripts.coldstart_instructions --build build/fc-oss --build build/aws [--python python3.12]

`scripts/coldstart` times the import, and its figures move with whatever else the machine is
doing (the same build gave medians up to 15% apart on two days here). An instruction count does not:
`valgrind --tool=callgrind` counts the same total, to within a few hundred instructions, for
the same interpreter, build and command, loaded machine or not. So this says where a handler
import's work goes and what a change saved, though not how many milliseconds that is on a
given CPU.

Each layer imports the layers before it and then its own modules, in a fresh `python -s -B`
with an emptied environment (hash randomisation off) and the build first on `sys.path`, as
`scripts/coldstart` does; its count is the difference from the layer before. The first line
is the interpreter started with nothing imported; the others add up to the handler import.
Needs valgrind (Debian's package `valgrind`); each layer takes a few seconds under it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from scripts.coldstart import FUNCTIONS, build_paths, python_version

# What the handler's module loads, cheapest to explain first: the standard modules shared/
# imports itself (whatever else it used), what the library every handler's logger comes from
# adds to them, the library our value types are made with, the standard modules the first run
# would load anyway (the SDKs' request signing needs hashlib; the drain's consumers are
# threads), and last our own modules.
LAYERS = (
    ("standard modules shared/ imports itself (typing, logging, json, re, datetime, base64, threading)",
     ("typing", "logging", "json", "re", "datetime", "base64", "threading")),
    ("Powertools on top (its package __init__ loads Logger, Metrics and Tracer; inspect, pathlib, jmespath)",
     ("aws_lambda_powertools",)),
    ("msgspec (value types and settings)", ("msgspec",)),
    ("hashlib, concurrent.futures (the first run needs them anyway)", ("hashlib", "concurrent.futures.thread")),
)

_COLLECTED = re.compile(r"Collected : (\d+)")
IMPORT_TIMEOUT = 300  # seconds per interpreter under valgrind (a handler import takes a few)


def instructions(python: str, build: Path, modules: Sequence[str]) -> int:
    """Instructions a fresh interpreter executes to start and import `modules` from `build`."""
    code = f"import sys; sys.path[:0] = {build_paths(build)!r}\n" + "".join(f"import {m}\n" for m in modules)
    # Not -I, which would ignore PYTHONHASHSEED: hash randomisation changes dict and set layouts,
    # and with them the count, from run to run. The environment is emptied instead.
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, "-s", "-B", "-c", code]
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"}
    try:
        # An import that hangs (a module waiting on the network at import) must not hang the bench:
        # under valgrind a whole handler import takes seconds, so this is generous.
        proc = subprocess.run(command, capture_output=True, text=True, cwd=build, env=env, timeout=IMPORT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"coldstart_instructions: importing {list(modules)} from {build} took over "
                         f"{IMPORT_TIMEOUT} s under valgrind; stopped") from None
    found = _COLLECTED.search(proc.stderr)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"coldstart_instructions: importing {list(modules)} from {build} failed:\n"
                         f"{proc.stderr[-2000:]}")
    return int(found.group(1))


def layers(python: str, build: Path, function: str) -> list[dict]:
    """Each layer's own instructions (the handler's layer is what the others left)."""
    steps = [("the interpreter, started", ())] + list(LAYERS) + [(f"{FUNCTIONS[function]} and shared/ (ours)",
                                                                  (FUNCTIONS[function],))]
    rows: list[dict] = []
    modules: list[str] = []
    before = 0
    for name, own in steps:
        modules += own
        total = instructions(python, build, modules)
        rows.append({"layer": name, "instructions": total - before})
        before = total
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.coldstart_instructions",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, action="append", required=True, help="a build directory (repeatable)")
    parser.add_argument("--function", choices=sorted(FUNCTIONS), default="drain")
    parser.add_argument("--python", default=sys.executable, help="the interpreter (the build's CPython version)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("coldstart_instructions: valgrind is not on PATH (Debian: apt-get install valgrind)")
    version = python_version(args.python)
    report = []
    for build in args.build:
        rows = layers(args.python, build.resolve(), args.function)
        handler = sum(r["instructions"] for r in rows[1:])
        print(f"{build} ({args.function} handler import: {handler / 1e6:,.1f} M instructions)")
        for row in rows:
            share = f"{100 * row['instructions'] / handler:5.1f}%" if row is not rows[0] else "     -"
            print(f"  {row['instructions'] / 1e6:8,.1f} M  {share}  {row['layer']}")
        report.append({"build": str(build), "function": args.function, "handler_import_instructions": handler,
                       "layers": rows})
    print(f"CPython {version}; valgrind --tool=callgrind instruction counts (the same, loaded machine or not)")
    if args.json:
        args.json.write_text(json.dumps({"python": version, "builds": report}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
