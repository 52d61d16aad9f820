"""Throughput and cost benchmark: alicom-drain against the vendor's sample consumer.

    python -m scripts.bench                     # default sweep (latencies 5,20,50,150 ms; 20,000 messages)
    python -m scripts.bench --latencies 20 --concurrency 2,8 --messages 100000
    python -m scripts.bench --faults            # failure under load: stored exactly once, queue empty
    python -m scripts.bench --import-times      # cold-start import cost per sink
    python -m scripts.bench --all               # sweep + RSS-vs-M + faults + import times, one JSON
    python -m scripts.bench.scale               # scale-out: a backlog drained by K runs at once

Placement: the loopback emulator runs in this process; every measured consumer (the
vendor-sample baseline, alicom-drain's real handler, the raw SDK clients that measure the
emulator's own ceiling) runs in a child process of its own, so consumer and emulator never
share a GIL and peak RSS (os.wait4's ru_maxrss) belongs to that one run. The sweep
starts by measuring the alternative (drain in this process, next to the emulator) and
reports both, so the choice is shown, not assumed.

For every configuration a fresh emulator is filled with the same M receipts (mixed types
from scripts/receipts.py), given a per-request latency, and drained by one consumer;
requests come from the emulator's counters, sink writes from the consumer's own report.
The ceiling is `consumers * 16 / rtt`, with rtt = injected latency + the per-request time
measured at zero latency. A configuration predicted to take longer than
--max-config-seconds is run for a fixed --window instead and labelled time-boxed; its
full duration is extrapolated from the rate over that window.

Throughput runs use DRAIN_WAIT_SECONDS=0 (--wait-seconds): the long poll only adds a
fixed tail (its wait) once the queue is empty, which is not throughput. Everything else is
alicom-drain's default unless the row says otherwise. Tests do not assert on timings; this
script is not a test.
"""
