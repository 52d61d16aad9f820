"""Failure under load: stored exactly once and the queues empty, with faults injected."""
from __future__ import annotations

from scripts.bench.runner import Bench


def run_faults(bench: Bench) -> dict:
    """2% 5xx and 1% 429 on every API at 0 ms latency: every message stored exactly once, queue empty."""
    from shared.decode import decode_message
    from shared.sinks.sqlite import SqliteSink

    a = bench.args
    m = a.fault_messages or a.messages
    bodies = bench.messages(m)
    expected = {decode_message(t, b).key for t, lst in bodies.items() for b in lst}
    emu = bench.emulator(m, 0, visibility_timeout=a.fault_visibility_timeout)
    emu.set_faults(server_error=0.02, throttle=0.01)
    path = bench.sink_path("sqlite")
    bench.log(f"faults: {m} messages, 2% HTTP 500 + 1% HTTP 429 on every request, 0 ms latency, "
              f"visibility timeout {a.fault_visibility_timeout:g} s")
    try:
        env = bench.env(emu, "sqlite", path)
        result, rss = bench.run_child(["-m", "scripts.bench", "--child", "drain", "--max-seconds",
                                       str(a.fault_max_seconds), "--timeout", "300", "--max-invocations", "100"],
                                      env, a.fault_max_seconds + 120)
        stats = emu.stats()
        queues = bench.queue_totals(emu)
    finally:
        emu.stop()
    sink = SqliteSink(path)
    rows = sink.count("records")
    stored_keys = {r.key for r in sink.iter_records()}
    dead = sink.count("dead_letters")
    sink.close()
    missing = expected - stored_keys
    unexpected = stored_keys - expected
    checks = {
        "rows_equal_distinct_keys": rows == len(expected),
        "no_missing_key": not missing,
        "no_unexpected_key": not unexpected,
        "no_dead_letters": dead == 0,
        "queue_empty": queues["visible"] + queues["in_flight"] == 0,
    }
    out = {
        "messages": m,
        "distinct_keys_enqueued": len(expected),
        "rows": rows,
        "missing_keys": len(missing),
        "unexpected_keys": len(unexpected),
        "dead_letters": dead,
        "queue": queues,
        "injected": {"server_error": stats.get("fault_server_error", 0), "throttle": stats.get("fault_throttle", 0),
                     "requests": stats.get("total", 0)},
        "drain": {"invocations": result["invocations"], "elapsed_seconds": result["elapsed_seconds"],
                  "totals": result["totals"], "peak_rss_mb": round(rss, 1)},
        "checks": checks,
        "passed": all(checks.values()),
    }
    return out
