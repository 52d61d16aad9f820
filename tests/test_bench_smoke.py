"""A tiny run of scripts/bench (python -m scripts.bench): the report has its fields and every message was stored.

No timing is asserted (docs/ARCHITECTURE.md, "How it is tested"): the benchmark's numbers are for people.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

RUN_FIELDS = {
    "consumer", "sink", "latency_ms", "concurrency", "consumers", "messages", "stored", "drained", "complete",
    "time_boxed", "elapsed_seconds", "msg_per_s", "mns_requests", "mns_requests_per_1k", "token_requests",
    "sink_writes", "sink_writes_per_1k", "peak_rss_mb", "ceiling_msg_per_s", "share_of_ceiling",
    "ratio_vs_baseline", "consumer_cpu_ms_per_msg", "emulator_cpu_util", "note",
}


def test_tiny_bench_run_reports_every_field_and_stores_every_message(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.bench", "--messages", "300", "--latencies", "0", "--concurrency", "2",
         "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())

    assert report["meta"]["messages"] == 300 and report["meta"]["commit"]
    emulator = report["emulator"]
    assert emulator["per_request_ms_zero_latency"] > 0 and emulator["ceiling_msg_per_s"] > 0
    # The raw calibration clients, the SDK's own and the drain's: one thread each, on one of the
    # four equally filled queues, each drains all of it.
    per_queue = emulator["messages"] // 4
    assert {(c["client"], c["threads"], c["messages"]) for c in emulator["clients"]} == {
        ("sdk", 1, per_queue), ("drain", 1, per_queue)}

    runs = report["runs"]
    default = Settings.default("concurrency")
    # the baseline's 2 threads per queue, the drain's default row and the swept point 2
    assert {(r["consumer"], r["concurrency"]) for r in runs} == {("baseline", 2), ("drain", default), ("drain", 2)}
    for run in runs:
        assert RUN_FIELDS <= set(run), RUN_FIELDS - set(run)
        assert run["complete"] and not run["time_boxed"], run
        assert run["stored"] == run["drained"] == 300
        assert run["peak_rss_mb"] > 0 and run["mns_requests"] > 0 and run["sink_writes"] > 0
    drain = next(r for r in runs if r["consumer"] == "drain" and r["concurrency_source"] == "default")
    baseline = next(r for r in runs if r["consumer"] == "baseline")
    assert drain["ratio_vs_baseline"] is not None
    # Request counts follow from the consumers' patterns, not from timing: one delete per message
    # for the vendor's sample, batches of up to 16 for the drain.
    assert baseline["requests_by_action"]["DeleteMessage"] == 300
    assert drain["mns_requests"] < baseline["mns_requests"]
    assert "Throughput" in proc.stdout
