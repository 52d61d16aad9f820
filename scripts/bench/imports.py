"""Cold start: import times per sink, from `python -X importtime`."""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from scripts.bench.common import AK, OURS, ROOT, SDK_GROUPS, SECRET, SINKS_ALL, UID
from scripts.bench.runner import Bench

IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")
LAZY_IMPORTS = ("import shared.mns_queue, aliyunsdkcore.client, "
                "aliyunsdkdybaseapi.request.v20170525.QueryTokenForMnsQueueRequest")


def import_env(sink: str, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ALICOM_", "SINK", "DRAIN_", "ALIBABA_CLOUD_", "AWS_", "TABLESTORE_"))}
    env.update({"PYTHONPATH": str(ROOT), "ALICOM_UID": UID, "SINK": sink,
                "ALIBABA_CLOUD_ACCESS_KEY_ID": AK, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
                "AWS_ACCESS_KEY_ID": "AKIABENCHDUMMY", "AWS_SECRET_ACCESS_KEY": "dummy",
                "AWS_DEFAULT_REGION": "us-east-1",
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
    results: dict[str, dict[str, Any]] = {}
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
            def med(key: str, samples: list = samples) -> float:
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
        got = results[label]
        bench.log(f"  {label:<40} " + (f"total {got['total_ms']:.0f} ms, ours {got['ours_ms']:.1f} ms"
                                        if "total_ms" in got else "error"))
    return {"target_ours_ms": a.ours_target_ms, "runs": a.import_runs, "python": sys.version.split()[0],
            "sinks": results}
