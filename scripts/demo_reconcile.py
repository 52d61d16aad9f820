"""Local demo of reconcile: ledger, drain, scheduled reconcile, a late receipt, a backfill.

    python -m scripts.demo_reconcile [--out demo-output]     # standalone, with its own emulator

or from scripts/demo.py, with the emulator it already runs:

    from scripts.demo_reconcile import run_reconcile_demo
    run_reconcile_demo(emu, Path("demo-output/reconcile.db"))

Everything goes through the real handlers and SDKs over the emulator's sockets, into a
SQLite sink (the ledger needs a table sink). The environment variables it sets for that are
restored afterwards, so a caller's own configuration is left as it was.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional, TextIO

from shared.decode import SHANGHAI, format_time

DEMO_AK, DEMO_SECRET = "LTAI5tDemoReconcileKey", "demo-reconcile-secret-not-real"


def _fc_timer(name: str) -> tuple[bytes, Any]:
    event = json.dumps({"triggerTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "triggerName": name, "payload": "{}"}).encode()
    context = SimpleNamespace(request_id=f"demo-{name}", credentials=None,
                              function=SimpleNamespace(name=name, timeout=60))
    return event, context


def _receipt(biz_id: str, phone: str, sent: datetime, ok: bool) -> dict[str, Any]:
    return {"phone_number": phone, "success": ok, "biz_id": biz_id, "out_id": f"order-{biz_id[-2:]}",
            "send_time": format_time(sent),
            "report_time": format_time(sent + timedelta(seconds=6)),
            "err_code": "DELIVERED" if ok else "MK:0001", "err_msg": "", "sms_size": "1"}


def run_reconcile_demo(emu, db_path: Path, out: Optional[TextIO] = None, sends: int = 12) -> dict[str, Any]:
    """Run the reconcile story against a started emulator; print it; return the two reconcile reports."""
    out = out or sys.stdout
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    if db_path.exists():
        db_path.unlink()
    keys = dict(emu.backend.customer_keys())
    ak = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    if not ak or keys.get(ak) != os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
        emu.add_customer_key(DEMO_AK, DEMO_SECRET)
        ak = DEMO_AK
    env = {
        "ALICOM_UID": emu.uid, "ALICOM_MESSAGE_TYPES": "SmsReport",
        "ALICOM_MNS_ENDPOINT": emu.url, "ALICOM_TOKEN_ENDPOINT": emu.url, "ALICOM_SMS_ENDPOINT": emu.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": ak, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": keys.get(ak, DEMO_SECRET),
        "SINK": "sqlite", "SINK_PATH": str(db_path), "DRAIN_WAIT_SECONDS": "0",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from shared.runtime import reset_reconcile_runtime, reset_runtime

    reset_runtime()
    reset_reconcile_runtime()
    try:
        return _story(emu, db_path, out, sends)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_runtime()
        reset_reconcile_runtime()


def _story(emu, db_path: Path, out: TextIO, n: int) -> dict[str, Any]:
    n = max(n, 9)  # the story needs sends 5 and 8
    from functions.drain import handler as drain
    from functions.reconcile import handler as reconcile
    from scripts import backfill
    from shared.ledger import Send, receipt_key, record_sends
    from shared.sinks.sqlite import SqliteSink

    queue = emu.queue_name("SmsReport")
    if not emu.backend.queues.has_queue(queue):
        emu.create_queue(queue)
    sink = SqliteSink(str(db_path))
    sent = datetime.now(SHANGHAI) - timedelta(hours=2)
    sends = [Send(f"90061974693{i:04d}^0", f"1390000{i:04d}", sent + timedelta(seconds=i), out_id=f"order-{i:02d}",
                  template_code="SMS_20260001", sign_name="AlicomDemo") for i in range(n)]
    record_sends(sink, sends)
    # Alicom knows every send; only two in three receipts reach the queue.
    for i, s in enumerate(sends):
        status = {3: 2, 5: 1, 8: 2}.get(i, 3)  # 2 failed, 1 still waiting for its receipt
        emu.add_send_record(s.phone_number, sent.strftime("%Y%m%d"), s.biz_id, status,
                            err_code={3: "DELIVERED", 2: "MK:0001", 1: ""}[status], template_code="SMS_20260001",
                            content=f"[AlicomDemo] Your code is {1000 + i}",
                            send_time=format_time(sent + timedelta(seconds=i)), out_id=f"order-{i:02d}")
    delivered = [s for i, s in enumerate(sends) if i % 3 != 2]
    for s in delivered:
        emu.enqueue_receipt(queue, _receipt(s.biz_id, s.phone_number, sent, True))
    drained = drain(*_fc_timer("alicom-drain"))
    print(f"\n== Reconcile demo (sink: {db_path})", file=out)
    print(f"ledger: {n} sends recorded; drain stored {drained['totals']['stored']} receipts", file=out)

    emu.reset_stats()
    first = reconcile(*_fc_timer("alicom-reconcile"))
    print(f"scheduled reconcile: queried {first['queried']} sends with no receipt "
          f"({emu.stats()['QuerySendDetails']} QuerySendDetails calls): delivered {first['delivered']}, "
          f"failed {first['failed']}, waiting {first['waiting']}; {first['already_received']} already had a receipt",
          file=out)

    waiting = sends[5]
    emu.enqueue_receipt(queue, _receipt(waiting.biz_id, waiting.phone_number, sent, False))
    drain(*_fc_timer("alicom-drain"))
    row = sink.get(receipt_key(waiting.biz_id, waiting.phone_number))
    print(f"a late receipt for a 'waiting' send merged into its row: source={row['source']}, "
          f"err_code={json.loads(row['body'])['err_code']}; records: {len(list(sink.iter_records()))} "
          f"(one per send)", file=out)

    # A backfill over three days for a few numbers, one of them with 120 sends a day (3 pages).
    days = [(datetime.now(SHANGHAI) - timedelta(days=d)) for d in (3, 2, 1)]
    busy = "13700000001"
    for d in days:
        for i in range(120):
            emu.add_send_record(busy, d.strftime("%Y%m%d"), f"bulk-{i}", 3, content=f"[AlicomDemo] notice {i}",
                                send_time=d.strftime("%Y-%m-%d ") + f"09:{i // 60:02d}:{i % 60:02d}")
    print("\nbackfill --local over 3 days x 3 numbers:", file=out)
    emu.reset_stats()
    saved_stdout, sys.stdout = sys.stdout, out
    try:
        code = backfill.main(["--local", "--date-from", days[0].strftime("%Y-%m-%d"), "--date-to",
                              days[-1].strftime("%Y-%m-%d"), "--phones", f"{busy},13700000002,13700000003",
                              "--no-progress"])
    finally:
        sys.stdout = saved_stdout
    print(f"({emu.stats()['QuerySendDetails']} QuerySendDetails calls; exit code {code})", file=out)
    sink.close()
    return {"scheduled": first, "backfill_exit_code": code}


def main(argv: Optional[list[str]] = None) -> int:
    from scripts.emulator import Emulator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    args = parser.parse_args(argv)
    with Emulator(customer_keys={DEMO_AK: DEMO_SECRET}, seed=1) as emu:
        result = run_reconcile_demo(emu, args.out / "reconcile.db")
    return 0 if result["scheduled"]["ok"] and result["backfill_exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
