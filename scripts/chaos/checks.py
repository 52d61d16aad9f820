"""The checks of one run: nothing lost, no duplicate rows, stored bodies as sent, long keys on one
row read back by their full key, every drain in time, none `stuck` in a call past its timeout,
and each exiting and raising as its summary says (a drain that met a hung sink to the end
failed with `sink_error`), no secret or phone number in any output, no secret in the stored
data."""
from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any

from scripts.chaos.config import FAULT_KINDS, FUNCTION, SIGNATURE_RE, TABLE_SINKS, TYPES
from scripts.chaos.drains import process_result
from shared.logs import PHONE_RE
from shared.records import canonical_json

if TYPE_CHECKING:
    from scripts.chaos.run import ChaosRun


def check_run(run: "ChaosRun") -> dict[str, Any]:
    table = run.sink_kind in TABLE_SINKS
    keys, dead_keys, carriers = run.corpus.expected()
    stored_rows = run.sink.read(run.corpus.long_keys)
    stored_keys = {k for k, _ in stored_rows["records"]}
    stored_dead = set(stored_rows["dead"])
    # Lost: not stored, and no message carrying it is left in a queue (left ones are "not drained").
    queued = {mid for t in TYPES for mid in run.emu.message_ids(run.emu.queue_name(t))}
    lost_keys = sorted(k for k in set(keys) - stored_keys if not carriers[k] & queued)
    lost_dead = sorted(k for k in dead_keys - stored_dead if not carriers[k] & queued)
    unexpected = sorted((stored_keys - set(keys)) | (stored_dead - dead_keys))
    mismatched = sorted({k for k, body in stored_rows["records"] if k in keys and body != keys[k]})
    per_key = Counter(k for k, _ in stored_rows["records"]) + Counter(stored_rows["dead"])
    # Facts stored under more than one row: bodies are the facts' identity (a key that varied
    # between deliveries, or a long key bounded two ways, would show up here).
    by_body = Counter(canonical_json(body) for _, body in stored_rows["records"])
    dup_lines = sum(n - 1 for n in per_key.values() if n > 1)
    dup_facts = sum(n - 1 for n in by_body.values() if n > 1) if table else 0
    visible, in_flight = run.queues_empty()
    stats = run.emu.stats()
    schedule = run.schedule
    procs = [process_result(p) for p in run.procs]
    for p in procs:
        if p["killed_by"] in ("chaos", "crashpoint"):
            schedule.strike("kill" if p["killed_by"] == "chaos" else "crashpoint")
    long_keys = _long_keys(run, stored_keys, stored_rows["long_key_rows"])
    schedule.strike("long_key", long_keys["stored"])
    hung = _met_sink_hang(run, procs)
    fan_out = _fan_out(run, procs)
    security = _security(run, procs, stored_rows["stored"])
    overruns = [p["overrun"] for p in procs if p["overrun"] is not None]
    finished = [p for p in procs if p["overrun"] is not None]
    drain_errors: Counter = Counter()
    for p in procs:
        drain_errors.update(p.pop("errors"))
    kills_by_phase = Counter(phase for p in procs for phase in p["phases"])
    result = {
        "run": run.index,
        "sink": run.sink_kind,
        "enqueued": len(run.corpus.items),
        "facts": len(keys),
        "expected_dead_letters": len(dead_keys),
        "stored": len(stored_keys & set(keys)),
        "dead_lettered": len(stored_dead & dead_keys),
        "lost": len(lost_keys) + len(lost_dead),
        "lost_keys": [_short(k) for k in (lost_keys + lost_dead)[:20]],
        "unexpected_keys": [_short(k) for k in unexpected[:20]],
        "body_mismatches": len(mismatched),
        "table_duplicates": (dup_lines + dup_facts) if table else 0,
        "object_duplicate_lines": 0 if table else dup_lines,
        "left_in_queue": visible + in_flight,
        "stuck": run.stuck,
        "chaos_window": run.windows[0],
        "drain_down": run.windows[1],
        "extended_for": [what for _, what in run.schedule.timeline if what.startswith("chaos window extended")],
        "invocations": len(procs),
        "kills": schedule.faults["kill"],
        "crashpoints": schedule.faults["crashpoint"],
        "platform_kills": sum(1 for p in procs if p["killed_by"] == "platform"),
        "lingered": sum(1 for p in procs if p["lingered"]),  # returned in time, reaped while exiting
        "kills_by_phase": dict(kills_by_phase),
        "crashpoints_by_point": dict(Counter(p["crash_at"].split(":")[0] for p in procs
                                             if p["killed_by"] == "crashpoint")),
        "faults": {k: schedule.faults[k] for k in FAULT_KINDS},
        "fault_details": dict(schedule.details),
        "episodes": dict(schedule.episodes),
        "endings": dict(Counter(p["ending"] for p in procs)),
        "exit_mismatches": sum(1 for p in procs if p["exit_mismatch"]),
        "raise_mismatches": sum(1 for p in procs if p["raise_mismatch"]),
        "no_result": sum(1 for p in procs if p["ending"] == "no_result"),
        "long_keys": long_keys,
        "throttled_out": [dict(t, n=p["n"]) for p in procs for t in p["throttled_out"]],
        "sink_hang": hung,
        "fan_out": fan_out,
        "sink_requests_refused": dict(getattr(run.sink.faults, "refused", {})),  # cloud sinks, by fault:answer
        "worst_overrun": round(max(overruns), 3) if overruns else None,
        "worst_process_overrun": max((p["process_overrun"] for p in finished), default=None),
        "worst_exit_lag": max((round(p["wall"] - p["cold_start"] - p["invocation"], 3) for p in finished), default=None),
        "worst_cold_start": max((p["cold_start"] for p in procs), default=None),
        "worst_spawn_to_return_overrun": max((round(p["cold_start"] + p["invocation"] - p["timeout"], 3)
                                              for p in finished), default=None),
        "stop_reasons": dict(Counter(p["stop_reason"] for p in procs if p["stop_reason"])),
        "drain_errors": dict(drain_errors),
        "tracebacks": dict(Counter(p["traceback"] for p in procs if p["traceback"])),
        "emulator_requests": {k: v for k, v in stats.items() if v and not k.startswith("fault_")},
        "emulator_faults": {k[len("fault_"):]: v for k, v in stats.items() if k.startswith("fault_") and v},
        "redeliveries": sum(run.emu.queue_state(run.emu.queue_name(t))["received"] for t in TYPES)
                        - len(run.corpus.items),
        "security": security,
        "settings": {"visibility_timeout": round(run.vt_base, 2), "token_lifetime": round(run.token_lifetime, 2),
                     "latency": round(run.base_latency, 3), "mns_timeout": run.mns_timeout},
        "processes": procs,
    }
    result["failures"] = failures(result)
    if result["failures"]:
        timeline = schedule.timeline + [(round(p.started - run.t0, 3), f"drain {p.n} started") for p in run.procs]
        timeline += [(round((p.ended or 0) - run.t0, 3), f"drain {p.n} ended") for p in run.procs]
        result["timeline"] = sorted(timeline)
    return result


def _short(key: str) -> str:
    """A key for the results file: long keys cut, with their size."""
    return key if len(key) <= 80 else f"{key[:60]}... ({len(key.encode())} bytes)"


def _long_keys(run: "ChaosRun", stored_keys: set[str], rows: dict[str, dict]) -> dict[str, Any]:
    """The corpus's long-key facts: stored (by their full key), and on table sinks with a key
    limit, stored under a bounded key exactly when over it and read back by the full key."""
    long_keys = run.corpus.long_keys
    out: dict[str, Any] = {"facts": len(long_keys), "stored": len(stored_keys & set(long_keys)),
                           "by_label": dict(Counter(long_keys.values()))}
    if rows:
        out["bounded"] = sum(1 for r in rows.values() if r["bounded"])
        out["read_back"] = sum(1 for r in rows.values() if r["read_back"])
        out["longest_stored_key_bytes"] = max(r["stored_key_bytes"] for r in rows.values())
        out["unreadable"] = sorted(r["label"] for r in rows.values() if not r["read_back"])
        # Bounded exactly when over the backend's limit: a fitting key keeps its own form.
        out["wrongly_bounded"] = sorted(r["label"] for r in rows.values() if r["bounded"] != r["over_limit"])
    return out


def _met_sink_hang(run: "ChaosRun", procs: list[dict]) -> dict[str, Any]:
    """Drain processes whose requests a hung sink held; those still held when they returned
    must have failed the run with `sink_error` (exit 1)."""
    held = getattr(run.sink.faults, "held", {})
    met = {n: times for n, times in held.items() if times}
    by_n = {p["n"]: p for p in procs}
    out: dict[str, Any] = {"processes": len(met), "endings": Counter(), "hung_to_the_end": 0, "wrong_endings": []}
    for n, times in met.items():
        p, proc = by_n.get(n), run.procs[n] if n < len(run.procs) else None
        if p is None or proc is None:
            continue
        out["endings"][p["ending"]] += 1
        if proc.result_at is None:
            continue
        returned = proc.result_at - run.t0
        span = run.schedule.span_at("sink_hang", returned)
        out.setdefault("met", []).append({"n": n, "held": [round(t - run.t0, 2) for t in times][:5],
                                          "returned": round(returned, 2), "span": span, "ending": p["ending"]})
        if span and any(span[0] <= t - run.t0 <= returned for t in times):
            out["hung_to_the_end"] += 1
            if p["ending"] != "failed:sink_error" or (p["exit"] != 1 and not p["lingered"]):
                out["wrong_endings"].append({"n": n, "ending": p["ending"], "exit": p["exit"]})
    out["endings"] = dict(out["endings"])
    return out


def _fan_out(run: "ChaosRun", procs: list[dict]) -> dict[str, Any]:
    """What the fan-out did: invocations the scheduled drains reported and the emulator accepted,
    the workers the harness started for them (one process each), how the workers ended, how many
    drain processes ran at once, and any left running."""
    workers = [p for p in procs if p["worker"]]
    reports = [p["fan_out"] for p in procs if p["fan_out"] and not p["worker"]]
    accepted = len(run.emu.invocations(FUNCTION)) if run.cfg.workers > 1 else 0
    spans = [(p.started, p.ended if p.ended is not None else float("inf")) for p in run.procs]
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    at_once = peak = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        at_once += step
        peak = max(peak, at_once)
    return {
        "workers_per_drain": run.cfg.workers,
        "drains_that_fanned_out": sum(1 for f in reports if f["invoked"]),
        "invoked": sum(f["invoked"] for f in reports),        # as the drains that returned report it
        "invoke_failed": sum(f["failed"] for f in reports),   # refused, faulted or out of time: counted, not fatal
        "invoke_errors": dict(sum((Counter(f["errors"]) for f in reports), Counter())),
        "accepted": accepted,                                 # as the emulator's invoke API saw it
        "workers_started": len(workers),
        "not_started": run.invoked.qsize(),
        "worker_endings": dict(Counter(p["ending"] for p in workers)),
        "worker_kills": sum(1 for p in workers if p["killed_by"] == "chaos"),
        "worker_crashpoints": sum(1 for p in workers if p["killed_by"] == "crashpoint"),
        "worker_platform_kills": sum(1 for p in workers if p["killed_by"] == "platform"),
        "worker_worst_overrun": max((p["overrun"] for p in workers if p["overrun"] is not None), default=None),
        "workers_that_fanned_out": sum(1 for p in workers if p["fan_out"]),
        "max_drains_at_once": peak,
        "left_running": {"workers": sum(1 for p in run.procs if p.alive() and p.worker),
                         "scheduled": sum(1 for p in run.procs if p.alive() and not p.worker)},
    }


def _security(run: "ChaosRun", procs: list[dict], stored: bytes) -> dict[str, Any]:
    text = "".join(p.pop("_output") for p in procs)
    issued = [v for grant in run.emu.issued_tokens() for v in grant]
    forbidden = [run.ak, run.secret] + run.sink.secrets + issued
    leaked = sorted({s for s in forbidden if s and s in text})
    signatures = sorted(set(SIGNATURE_RE.findall(text)))
    unmasked = sorted(p for p in run.corpus.phones if p in text)
    stored_secrets = sorted({s for s in forbidden if s and s.encode() in stored})
    return {
        "output_bytes": len(text.encode("utf-8", "replace")),
        "secrets_checked": len(forbidden),
        "leaked_secrets": len(leaked),
        "signature_patterns": signatures,
        "unmasked_phones": len(unmasked),
        "phone_like_strings": len(PHONE_RE.findall(text)),
        "masked_phones_seen": len(re.findall(r"1[3-9]\d\*{6}\d{2}", text)),
        "secrets_in_stored_data": len(stored_secrets),
    }


def failures(r: dict[str, Any]) -> list[str]:
    """The invariants a run broke (empty: it failed safe)."""
    out = []
    if r["lost"]:
        out.append(f"lost {r['lost']} message(s): {r['lost_keys'][:3]}")
    if r["table_duplicates"]:
        out.append(f"{r['table_duplicates']} duplicate row(s) in the table sink")
    if r["unexpected_keys"]:
        out.append(f"stored key(s) not in the corpus: {r['unexpected_keys'][:3]}")
    if r["body_mismatches"]:
        out.append(f"{r['body_mismatches']} stored body(ies) differ from what was sent")
    if r["stuck"] or r["left_in_queue"]:
        out.append(f"queues not emptied ({r['left_in_queue']} left)")
    if r["worst_overrun"] is not None and r["worst_overrun"] > 0:
        out.append(f"a drain ran {r['worst_overrun']:.3f}s past its deadline")
    if r["platform_kills"]:
        out.append(f"{r['platform_kills']} drain(s) still running at timeout + grace (killed)")
    if r["exit_mismatches"] or r["raise_mismatches"] or r["no_result"]:
        out.append(f"{r['exit_mismatches']} drain(s) whose exit code and {r['raise_mismatches']} whose raising "
                   f"RunFailed or not disagrees with their summary; {r['no_result']} that ended without a result")
    lk = r["long_keys"]
    if lk["stored"] != lk["facts"] or lk.get("unreadable") or lk.get("wrongly_bounded"):
        out.append(f"long keys: {lk['stored']} of {lk['facts']} stored; not read back by the full key: "
                   f"{lk.get('unreadable')}; bounded when they fit or not when over: {lk.get('wrongly_bounded')}")
    if r["sink_hang"]["wrong_endings"]:
        out.append(f"drain(s) that met a hung sink to the end without failing with sink_error: "
                   f"{r['sink_hang']['wrong_endings']}")
    s = r["security"]
    if s["leaked_secrets"] or s["signature_patterns"] or s["secrets_in_stored_data"]:
        out.append(f"secret material in output/storage: {s['leaked_secrets']} value(s), patterns {s['signature_patterns']}, "
                   f"{s['secrets_in_stored_data']} in stored data")
    if s["unmasked_phones"] or s["phone_like_strings"]:
        out.append(f"{s['unmasked_phones']} corpus phone number(s) / {s['phone_like_strings']} phone-like string(s) in logs")
    f = r["fan_out"]
    if f["workers_per_drain"] > 1 and not f["workers_started"]:
        out.append(f"fan-out to {f['workers_per_drain']} never started a worker (a vacuous pass)")
    if f["accepted"] != f["workers_started"] or f["not_started"]:
        out.append(f"{f['accepted']} invocation(s) accepted, {f['workers_started']} worker(s) started")
    if f["workers_that_fanned_out"]:
        out.append(f"{f['workers_that_fanned_out']} worker(s) fanned out further")
    if any(f["left_running"].values()):
        out.append(f"drain processes left running at the end: {f['left_running']}")
    stuck = r["endings"].get("failed:stuck", 0)
    if stuck:  # no fault here defeats a socket timeout (no server trickles bytes): a call outlived its own
        out.append(f"{stuck} drain(s) still inside a call at their deadline (stuck): a call outlived its timeout")
    if r["tracebacks"]:
        out.append(f"uncaught exception(s) in drain processes: {r['tracebacks']}")
    return out

