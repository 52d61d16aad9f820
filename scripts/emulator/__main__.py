"""CLI: run the emulator until SIGINT/SIGTERM.

    python -m scripts.emulator --port 0 --ak X --secret Y --uid U \\
        --queues SmsReport,SmsUp --latency 0.02 --token-lifetime 3600

Prints one JSON line (url, port, uid, ak, queue names) and nothing else; the
secret is never printed. The secret may also come from $ALICOM_EMULATOR_SECRET.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from .control import DEFAULT_AK, DEFAULT_SECRET, Emulator


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.emulator", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--ak", default=DEFAULT_AK, help="customer AccessKeyId")
    p.add_argument("--secret", default=os.environ.get("ALICOM_EMULATOR_SECRET", DEFAULT_SECRET),
                   help="customer AccessKeySecret (or $ALICOM_EMULATOR_SECRET)")
    p.add_argument("--uid", default="1234567890", help="account uid used in queue names")
    p.add_argument("--queues", default="SmsReport", help="comma-separated message types to create queues for")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    p.add_argument("--jitter", type=float, default=0.0, help="+/- seconds of random latency")
    p.add_argument("--token-lifetime", type=float, default=3600.0, help="seconds")
    p.add_argument("--visibility-timeout", type=float, default=30.0, help="seconds")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    emu = Emulator(customer_keys={args.ak: args.secret}, token_lifetime=args.token_lifetime,
                   visibility_timeout=args.visibility_timeout, latency=args.latency, jitter=args.jitter,
                   seed=args.seed, uid=args.uid, port=args.port)
    types = [t.strip() for t in args.queues.split(",") if t.strip()]
    queues = {t: emu.create_queue(emu.queue_name(t)) for t in types}
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    emu.start()
    try:
        print(json.dumps({"url": emu.url, "port": emu.port, "uid": emu.uid, "ak": args.ak,
                          "queues": queues}), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
