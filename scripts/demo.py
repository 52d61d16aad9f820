"""Local demo: the real drain handler against the loopback Alicom emulator, into a local sink.

    python -m scripts.demo [--sink file|sqlite] [--out demo-output] [--per-type 200]

Starts the emulator, enqueues a realistic mix of receipts (and a few bad bodies) the way
Alicom would, invokes `functions.drain.handler` exactly as a Function Compute timer does,
and prints the run summary and where the records went. Then it tells the reconcile story
(sends whose receipts never came, filled from the send-record API) and writes a delivery
report (terminal, and HTML with charts) for what it drained.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from scripts.emulator import Emulator
from scripts.receipts import BAD_BODIES, BUILDERS, make_receipts

AK, SECRET, UID = "LTAI5tDemoAccessKey", "demo-secret-not-real", "1234567890123456"


def enqueue_mix(emu: Emulator, per_type: int) -> dict[str, int]:
    counts = {}
    for mtype in BUILDERS:
        queue = emu.queue_name(mtype)
        emu.create_queue(queue)
        for body in make_receipts(mtype, per_type, seed=2026):
            emu.enqueue_receipt(queue, body)
        counts[mtype] = per_type
    for raw in BAD_BODIES:
        emu.enqueue(emu.queue_name("SmsReport"), raw)
    counts["SmsReport"] += len(BAD_BODIES)
    return counts


def configure(emu: Emulator, sink: str, out: Path) -> str:
    path = out / ("receipts" if sink == "file" else "receipts.db")
    os.environ.update({
        "ALICOM_UID": UID,
        "ALICOM_MESSAGE_TYPES": ",".join(BUILDERS),
        "ALICOM_MNS_ENDPOINT": emu.url,
        "ALICOM_TOKEN_ENDPOINT": emu.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": AK,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
        "SINK": sink,
        "SINK_PATH": str(path),
        "DRAIN_WAIT_SECONDS": "1",
    })
    return str(path)


def print_summary(result: dict, enqueued: dict[str, int], path: str, sink: str) -> None:
    print(f"\n{'type':<18}{'enqueued':>9}{'received':>9}{'stored':>8}{'dead':>6}{'deleted':>8}  stop")
    for mtype, t in result["types"].items():
        print(f"{mtype:<18}{enqueued.get(mtype, 0):>9}{t['received']:>9}{t['stored']:>8}"
              f"{t['dead_lettered']:>6}{t['deleted']:>8}  {t['stop_reason']}")
    totals = result["totals"]
    print(f"{'total':<18}{sum(enqueued.values()):>9}{totals['received']:>9}{totals['stored']:>8}"
          f"{totals['dead_lettered']:>6}{totals['deleted']:>8}")
    print(f"\nAPI calls: {json.dumps(totals['api_calls'])}; sink writes: {totals['sink_writes']}; "
          f"{result['elapsed_seconds']:.2f}s; ok={result['ok']}")
    if sink == "file":
        print(f"\nRecords (JSONL, partitioned type=/dt=): {path}/type=*/dt=*/")
        print(f"Dead letters:                             {path}/dead_letters/")
    else:
        print(f"\nRecords in SQLite: {path} (tables: records, dead_letters)")
        print(f"  try: sqlite3 {path} \"select message_type, count(*) from records group by 1\"")


MARKER = ".alicom-demo"  # marks a directory this demo made, so a later run may replace it


def prepare_out(out: Path) -> None:
    """An empty --out directory, replacing only one this demo made earlier (never other files)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise ValueError(f"--out {out} is not empty and was not made by this demo; "
                             "choose another directory or empty it yourself")
        print(f"Replacing the previous demo output in {out}")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by scripts/demo.py; replaced by the next demo run\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sink", choices=["file", "sqlite"], default="file")
    parser.add_argument("--out", type=Path, default=Path("demo-output"),
                        help="output directory: made if absent; a previous demo output there is replaced, "
                             "anything else is refused")
    parser.add_argument("--per-type", type=int, default=200, help="receipts per message type")
    parser.add_argument("--no-reconcile", action="store_true", help="skip the reconcile part")
    parser.add_argument("--logs", action="store_true", help="show the functions' JSON logs and metric lines")
    args = parser.parse_args(argv)
    if not args.logs:
        # The functions log JSON for machines; the demo prints its own summary for people.
        os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
        os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    try:
        prepare_out(args.out)
    except ValueError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    with Emulator(customer_keys={AK: SECRET}, uid=UID, seed=1) as emu:
        enqueued = enqueue_mix(emu, args.per_type)
        path = configure(emu, args.sink, args.out)
        print(f"Alicom emulator on {emu.url}; enqueued {sum(enqueued.values())} messages "
              f"({len(BAD_BODIES)} of them malformed) into {len(enqueued)} queues")
        from functions.drain import handler  # imported after configuration, as a cold start would

        timer = json.dumps({"triggerTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "triggerName": "drain-every-minute", "payload": ""}).encode()
        context = SimpleNamespace(request_id="demo-run-1", credentials=None,
                                  function=SimpleNamespace(name="alicom-drain", timeout=60))
        from shared.platform import RunFailed

        try:
            result = handler(timer, context)
        except RunFailed as failed:  # the summary says what went wrong
            result = failed.summary
        left = {t: emu.queue_state(emu.queue_name(t))["visible"] for t in enqueued}
        print_summary(result, enqueued, path, args.sink)
        print(f"Left in the queues: {sum(left.values())}")
        if not args.no_reconcile:
            from scripts.demo_reconcile import run_reconcile_demo

            print("\n--- Reconcile: receipts that never came, recovered from QuerySendDetails ---")
            run_reconcile_demo(emu, args.out / "reconcile.db")
    write_report(args.sink, path, args.out)
    return 0 if result["ok"] and not any(left.values()) else 1


def write_report(sink: str, path: str, out: Path) -> None:
    """The delivery report for what was just drained (demo receipts are dated 2026-11-25)."""
    from scripts.report import format_text, write_html
    from shared.delivery_report import report_from_sink
    from shared.sinks.file import FileSink
    from shared.sinks.sqlite import SqliteSink

    with FileSink(path) if sink == "file" else SqliteSink(path) as store:
        # Every message type, as the demo drained them (the report counts the others apart).
        report = report_from_sink(store, "2026-11-25", "2026-11-25", message_types=None)
    print("\n--- Delivery report ---")
    print(format_text(report))
    print(f"Delivery report (HTML with charts): {write_html(report, out / 'report.html')}")


if __name__ == "__main__":
    sys.exit(main())
