"""The report as text tables."""
from __future__ import annotations

from scripts.bench.common import SDK_GROUPS

COLUMNS = [("consumer", 8), ("sink", 6), ("lat ms", 6), ("conc", 8), ("cons", 4), ("msgs", 7), ("time s", 7),
           ("msg/s", 8), ("MNS/1k", 7), ("writes/1k", 9), ("RSS MB", 6), ("ceiling", 8), ("%ceil", 6),
           ("x base", 6), ("cpu ms/msg", 10), ("cons%", 5), ("emu%", 5), ("note", 0)]


def format_row(r: dict) -> str:
    conc = f"{r['concurrency']}" + ("*" if r["concurrency_source"] == "default" and r["consumer"] == "drain" else "")
    if r["consumer"] == "baseline":
        conc = f"{r['concurrency']} thr"
    vals = [r["consumer"], r["sink"], f"{r['latency_ms']:g}", conc, str(r["consumers"]),
            f"{r['stored']}" + ("" if r["complete"] or r["time_boxed"] else "!"),
            f"{r['elapsed_seconds']:.1f}", f"{r['msg_per_s']:.0f}",
            "-" if r["mns_requests_per_1k"] is None else f"{r['mns_requests_per_1k']:.0f}",
            "-" if r["sink_writes_per_1k"] is None else f"{r['sink_writes_per_1k']:.0f}",
            f"{r['peak_rss_mb']:.0f}", f"{r['ceiling_msg_per_s']:.0f}", f"{100 * r['share_of_ceiling']:.0f}%",
            "-" if r["ratio_vs_baseline"] is None else f"{r['ratio_vs_baseline']:.1f}",
            "-" if r["consumer_cpu_ms_per_msg"] is None else f"{r['consumer_cpu_ms_per_msg']:.2f}",
            f"{100 * (r['consumer_cpu_util'] or 0):.0f}", f"{100 * (r['emulator_cpu_util'] or 0):.0f}", r["note"]]
    cells = enumerate(zip(COLUMNS, vals, strict=False))
    return " ".join(v.rjust(w) if i and w else v.ljust(w) for i, ((_, w), v) in cells).rstrip()


def print_report(report: dict) -> None:
    meta = report["meta"]
    dirty = " (+uncommitted shared/functions changes)" if meta["code_dirty"] else ""
    print(f"\nalicom-drain benchmark — commit {meta['commit']}{dirty}, "
          f"{meta['date']}, Python {meta['python']}, {meta['cpus']} CPUs")
    print(f"placement: {meta['placement']}")
    print(f"machine: 1M-iteration Python loop {meta['python_loop_1m_ms']:.0f} ms; load average at start "
          f"{meta['loadavg_at_start'][0]:.1f}, at end {meta.get('loadavg_at_end', [0])[0]:.1f}")
    emu = report.get("emulator")
    if emu:
        print("\nEmulator at 0 ms injected latency (raw receive16 + batch delete, no decode, no sink; sdk = the MNS "
              "SDK's own client, drain = shared.mns_queue):")
        for c in emu["clients"]:
            print(f"  {c.get('client', 'sdk'):>5} client, {c['threads']:>2} threads: {c['msg_per_s']:8.0f} msg/s, "
                  f"{c['requests_per_s']:7.0f} req/s, {c['ms_per_request']:.3f} ms per request per client, client CPU "
                  f"{c.get('client_cpu_ms_per_request', 0):.2f} ms/request; emulator CPU "
                  f"{c['emulator_cpu_ms_per_request']:.2f} ms/request, {100 * c['emulator_cpu_util']:.0f}% of a core; "
                  f"clients {100 * c['client_cpu_util']:.0f}%")
        print(f"  per-request time at zero latency ({emu.get('per_request_client', 'sdk')} client, 1 thread): "
              f"{emu['per_request_ms_zero_latency']:.3f} ms; emulator ceiling >= {emu['ceiling_msg_per_s']:.0f} msg/s "
              f"measured (client-bound); by its own CPU per request one core of emulator serves "
              f"~{emu['emulator_cpu_bound_requests_per_s']:.0f} req/s "
              f"= ~{emu['emulator_cpu_bound_msg_per_s']:.0f} msg/s")
    if report.get("placement"):
        print("\nPlacement check (drain defaults, sqlite):")
        for r in report["placement"]["rows"]:
            print(f"  {r['latency_ms']:>3} ms: beside the emulator {r['in_process_msg_per_s']:.0f} msg/s, own process "
                  f"{r['child_process_msg_per_s']:.0f} msg/s (ratio {r['in_process_vs_child']:.2f})")
    if report.get("runs"):
        print(f"\nThroughput, M = {meta['messages']} mixed receipts over {len(meta['message_types'])} queues, "
              f"DRAIN_WAIT_SECONDS={meta['wait_seconds']}:")
        print(" ".join(name.rjust(w) if i and w else name.ljust(w) for i, (name, w) in enumerate(COLUMNS)))
        for r in report["runs"]:
            print(format_row(r))
        print("  conc: drain DRAIN_CONCURRENCY per queue (* = default); baseline: threads per queue. cons = consumers "
              "in all. ceiling = cons*16/rtt, rtt = latency + per-request time at 0 ms. MNS/1k: MNS requests per 1,000 "
              "messages (token calls are separate: JSON token_requests). "
              "writes/1k: sink objects or batch calls per 1,000. "
              "cpu ms/msg: the consumer's CPU per message; cons%/emu%: consumer/emulator CPU as % of one core "
              "(each is one Python process: ~100% means GIL-bound). '!' after msgs: not every message stored.")
    if report.get("rss_vs_m"):
        print("\nPeak RSS vs M (drain defaults):")
        for r in report["rss_vs_m"]:
            print(f"  M={r['messages']:>7}: {r['peak_rss_mb']:.0f} MB peak RSS, {r['msg_per_s']:.0f} msg/s"
                  f"{' (time-boxed)' if r['time_boxed'] else ''}")
    f = report.get("faults")
    if f:
        print(f"\nFailure under load: {f['messages']} messages, injected {f['injected']['server_error']} x 500 and "
              f"{f['injected']['throttle']} x 429 of {f['injected']['requests']} requests; "
              f"{len(f['drain']['invocations'])} invocation(s), {f['drain']['elapsed_seconds']:.1f} s")
        print(f"  rows {f['rows']} / distinct keys enqueued {f['distinct_keys_enqueued']}, "
              f"missing {f['missing_keys']}, "
              f"unexpected {f['unexpected_keys']}, dead letters {f['dead_letters']}, left in queue "
              f"{f['queue']['visible'] + f['queue']['in_flight']}")
        print(f"  {'PASS' if f['passed'] else 'FAIL'}: " + ", ".join(f"{k}={v}" for k, v in f["checks"].items()))
    imp = report.get("import_times")
    if imp:
        print(f"\nCold start: python -X importtime -c 'import functions.drain; make_sink(load_settings())', "
              f"median of {imp['runs']} runs, ms; target ours <= {imp['target_ours_ms']:g} ms. ours = self time of "
              f"shared.*/functions.*; an SDK column = self time of its own modules (the second table adds what it "
              f"pulls in first); wall = the whole interpreter run:")
        names = list(SDK_GROUPS)
        print(f"  {'sink':<34}{'total':>7}{'ours':>7}{'SDKs':>7} " + " ".join(f"{n[:10]:>10}" for n in names)
              + f"{'other':>7}{'wall':>7}")
        for label, r in imp["sinks"].items():
            if not r.get("present"):
                print(f"  {label:<34}not present")
            elif "error" in r:
                print(f"  {label:<34}error: {r['error'].splitlines()[-1] if r['error'] else ''}")
            else:
                print(f"  {label:<34}{r['total_ms']:7.0f}{r['ours_ms']:7.1f}{r['sdks_ms']:7.0f} "
                      + " ".join(f"{r['by_sdk_ms'][n]:10.1f}" for n in names)
                      + f"{r['other_ms']:7.0f}{r['process_wall_ms']:7.0f}"
                      + ("" if r["ours_within_target"] else "  OVER")
                      + "  other: "
                      + ", ".join(f"{k} {v:.0f}" for k, v in list(r["other_top_packages_ms"].items())[:3]))
        print("  the SDKs again, each with the packages first imported beneath it (ms):")
        for label, r in imp["sinks"].items():
            if r.get("by_sdk_incl_deps_ms"):
                print(f"  {label:<34}{'':21} " + " ".join(f"{r['by_sdk_incl_deps_ms'][n]:10.1f}" for n in names))
