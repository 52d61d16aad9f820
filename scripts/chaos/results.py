"""Many runs: run them, sum them up, save `scripts/results/chaos-<name>.json`, render the figures."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from scripts.chaos.config import FAULT_KINDS, KILL_PHASES, RESULTS, Config
from scripts.chaos.probe import CRASH_POINTS
from scripts.chaos.run import ChaosRun
from scripts.chaos.sinks import start_moto


def selected(cfg: Config) -> list[int]:
    """The run indexes `cfg` runs (all, or those `--only` names)."""
    return [i for i in range(cfg.runs) if not cfg.only or i + 1 in cfg.only]


def run_config(cfg: Config, out_dir: Path = RESULTS, log: Callable[[str], None] = print) -> dict[str, Any]:
    started = time.monotonic()
    runs = []
    base = Path(tempfile.mkdtemp(prefix=f"chaos-{cfg.name}-"))
    moto = start_moto({cfg.sinks[i % len(cfg.sinks)] for i in selected(cfg)})
    try:
        for i in selected(cfg):
            workdir = base / f"run-{i}"
            workdir.mkdir()
            t = time.monotonic()
            result = ChaosRun(cfg, i, workdir, log, moto).execute()
            result["seconds"] = round(time.monotonic() - t, 1)
            runs.append(result)
            log(run_line(cfg, result))
            if result["failures"]:  # its drains' output and phase files, for diagnosis (scheduling varies)
                result["kept"] = str(workdir)
                log(f"  kept {workdir}")
            elif not cfg.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if moto is not None:
            moto.stop()
        if not cfg.keep and not any(r["failures"] for r in runs):
            shutil.rmtree(base, ignore_errors=True)
    summary = summarize(cfg, runs, time.monotonic() - started)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"chaos-{cfg.name}.json"
    path.write_text(json.dumps(summary, indent=1, ensure_ascii=False, default=str) + "\n")
    summary["path"] = str(path)
    log(render(summary))
    log(f"results: {path}")
    return summary


def run_line(cfg: Config, r: dict) -> str:
    status = "OK" if not r["failures"] else "FAIL: " + "; ".join(r["failures"])
    return (f"run {r['run'] + 1}/{cfg.runs} {r['sink']:8} enqueued {r['enqueued']} stored {r['stored']}/{r['facts']} "
            f"dead-lettered {r['dead_lettered']}/{r['expected_dead_letters']} lost {r['lost']} "
            f"dup rows {r['table_duplicates']} dup lines {r['object_duplicate_lines']} "
            f"drains {r['invocations']} (workers {r['fan_out']['workers_started']}) kills {r['kills']}+{r['crashpoints']} "
            f"worst overrun {r['worst_overrun']}s ({r['seconds']}s) {status}")


def _worst(runs: list[dict], name: str) -> Any:
    return max((r[name] for r in runs if r[name] is not None), default=None)


def summarize(cfg: Config, runs: list[dict], seconds: float) -> dict[str, Any]:
    total = lambda name: sum(r[name] for r in runs)  # noqa: E731
    counters = {name: Counter() for name in ("faults", "fault_details", "kills_by_phase", "crashpoints_by_point",
                                             "drain_errors", "tracebacks", "endings", "stop_reasons")}
    security: Counter = Counter()
    long_keys: Counter = Counter()
    long_labels: Counter = Counter()
    hang: Counter = Counter()
    hang_endings: Counter = Counter()
    fan_out: Counter = Counter()
    fan_out_counters = {name: Counter() for name in ("invoke_errors", "worker_endings", "left_running")}
    for r in runs:
        fan_out.update({k: v for k, v in r["fan_out"].items() if isinstance(v, int) and k != "max_drains_at_once"})
        for name, counter in fan_out_counters.items():
            counter.update(r["fan_out"][name])
        for name, counter in counters.items():
            counter.update(r[name])
        security.update({k: v for k, v in r["security"].items() if isinstance(v, int)})
        long_keys.update({k: v for k, v in r["long_keys"].items() if isinstance(v, int) and k != "longest_stored_key_bytes"})
        long_labels.update(r["long_keys"]["by_label"])
        hang.update({k: v for k, v in r["sink_hang"].items() if isinstance(v, int)})
        hang_endings.update(r["sink_hang"]["endings"])
    failed = [{"run": r["run"], "sink": r["sink"], "seed": cfg.seed, "failures": r["failures"]} for r in runs if r["failures"]]
    faults, phases, points = counters["faults"], counters["kills_by_phase"], counters["crashpoints_by_point"]
    return {
        "config": asdict(cfg),
        "command": f"python -m scripts.chaos --runs {cfg.runs} --seed {cfg.seed} --messages {cfg.messages} "
                   f"--chaos-seconds {cfg.chaos_seconds} --timeout {cfg.timeout_min}:{cfg.timeout_max} "
                   f"--sinks {','.join(cfg.sinks)} --workers {cfg.workers} --name {cfg.name}",
        "python": sys.version.split()[0],
        "seconds": round(seconds, 1),
        "runs": len(runs),
        "runs_by_sink": dict(Counter(r["sink"] for r in runs)),
        **{name: total(name) for name in ("enqueued", "facts", "stored", "dead_lettered", "lost", "table_duplicates",
                                          "object_duplicate_lines", "body_mismatches", "left_in_queue", "redeliveries",
                                          "invocations", "kills", "crashpoints", "platform_kills", "lingered", "exit_mismatches",
                                          "raise_mismatches", "no_result")},
        "kills_by_phase": {k: phases[k] for k in KILL_PHASES if phases[k]},
        "crashpoints_by_point": {k: points[k] for k in CRASH_POINTS if points[k]},
        "faults": {k: faults[k] for k in FAULT_KINDS},
        "fault_details": dict(sorted(counters["fault_details"].items())),
        "endings": dict(counters["endings"].most_common()),
        "long_keys": {**dict(long_keys), "by_label": dict(sorted(long_labels.items())),
                      "longest_stored_key_bytes": _worst([r["long_keys"] for r in runs if "longest_stored_key_bytes"
                                                          in r["long_keys"]], "longest_stored_key_bytes")},
        "sink_hang": {**dict(hang), "endings": dict(hang_endings.most_common()),
                      "wrong_endings": [dict(w, run=r["run"]) for r in runs for w in r["sink_hang"]["wrong_endings"]]},
        "fan_out": {**dict(fan_out), "workers_per_drain": cfg.workers,
                    **{name: dict(c.most_common()) for name, c in fan_out_counters.items()},
                    "worker_worst_overrun": _worst([r["fan_out"] for r in runs], "worker_worst_overrun"),
                    "max_drains_at_once": _worst([r["fan_out"] for r in runs], "max_drains_at_once"),
                    "runs_without_a_worker": sum(1 for r in runs if not r["fan_out"]["workers_started"])},
        "worst_overrun": _worst(runs, "worst_overrun"),
        "worst_process_overrun": _worst(runs, "worst_process_overrun"),
        "worst_exit_lag": _worst(runs, "worst_exit_lag"),
        "worst_cold_start": _worst(runs, "worst_cold_start"),
        "worst_spawn_to_return_overrun": _worst(runs, "worst_spawn_to_return_overrun"),
        "drain_errors": dict(counters["drain_errors"].most_common()),
        "tracebacks": dict(counters["tracebacks"]),
        "security": dict(security),
        "failed_runs": failed,
        "ok": not failed,
        # Drain processes are listed for the runs that failed (for diagnosis), not for every run.
        "per_run": [{k: v for k, v in r.items() if k != "processes" or r["failures"]} for r in runs],
    }


def render(s: dict[str, Any]) -> str:
    lines = [
        f"chaos {s['config']['name']}: {s['runs']} runs ({s['runs_by_sink']}) in {s['seconds']}s",
        f"  enqueued {s['enqueued']}  facts {s['facts']}  stored {s['stored']}  dead-lettered {s['dead_lettered']}",
        f"  lost {s['lost']}  table duplicates {s['table_duplicates']}  object duplicate lines {s['object_duplicate_lines']}"
        f"  body mismatches {s['body_mismatches']}  left in queue {s['left_in_queue']}",
        f"  drain runs {s['invocations']}  kills {s['kills']}  crash points {s['crashpoints']}  "
        f"platform kills {s['platform_kills']}  reaped after returning {s['lingered']}  redeliveries {s['redeliveries']}",
        f"  endings {s['endings']}  against summaries: {s['exit_mismatches']} exit codes and "
        f"{s['raise_mismatches']} RunFailed raised or not wrong, {s['no_result']} without a result",
        _render_fan_out(s["fan_out"]),
        f"  kills by phase {s['kills_by_phase']}",
        f"  crash points {s['crashpoints_by_point']}",
        f"  faults {s['faults']}",
        f"  fault details {s['fault_details']}",
        f"  long keys {s['long_keys']}",
        f"  hung sink met by {s['sink_hang'].get('processes', 0)} drain(s), {s['sink_hang'].get('hung_to_the_end', 0)} "
        f"to the end; endings {s['sink_hang']['endings']}",
        f"  worst deadline overrun {s['worst_overrun']}s (handler start to return, minus --timeout; <= 0 is in time)",
        f"  cold start (spawn to handler start) up to {s['worst_cold_start']}s; counting it: worst "
        f"{s['worst_spawn_to_return_overrun']}s; spawn to process exit: worst {s['worst_process_overrun']}s "
        f"(interpreter shutdown after the result up to {s['worst_exit_lag']}s)",
        f"  security {s['security']}",
        f"  {'OK: failed safe' if s['ok'] else 'FAILED: ' + json.dumps(s['failed_runs'])[:2000]}",
    ]
    return "\n".join(line for line in lines if line)


def _render_fan_out(f: dict[str, Any]) -> str:
    if f["workers_per_drain"] <= 1:
        return ""
    return (f"  fan-out K={f['workers_per_drain']}: {f.get('drains_that_fanned_out', 0)} scheduled drains fanned out, "
            f"invoked {f.get('invoked', 0)} (failed {f.get('invoke_failed', 0)} {f['invoke_errors']}), accepted "
            f"{f.get('accepted', 0)}, workers started {f.get('workers_started', 0)} (runs without one: "
            f"{f['runs_without_a_worker']}); worker endings {f['worker_endings']}; kills that hit workers "
            f"{f.get('worker_kills', 0)} + {f.get('worker_crashpoints', 0)} crash points; worker platform kills "
            f"{f.get('worker_platform_kills', 0)}, worst worker overrun {f['worker_worst_overrun']}s; "
            f"up to {f['max_drains_at_once']} drains at once; left running {f['left_running']}")
