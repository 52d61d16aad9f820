"""Chaos harness: prove that the drain fails safe.

    python -m scripts.chaos --preset ci                  # 4 seeded runs (what tests/test_chaos.py runs)
    python -m scripts.chaos --preset large               # 50 seeded runs, by hand
    python -m scripts.chaos --preset workers             # 14 runs with fan-out to K = 4 (--workers K)
    python -m scripts.chaos --runs 5 --seed 7 --messages 600 --chaos-seconds 10 --sinks sqlite,dynamodb --name mine

Each run enqueues a known corpus (valid receipts of every type in scripts/receipts.py,
duplicates, bad bodies, valid receipts whose keys are at and far over the table backends'
key limits) into an in-process loopback emulator, then runs the real drain as separate
processes (`python -m scripts.invoke_local drain --platform fc --timeout T --timer`) into one
sink per run, in turn: sqlite, file, DynamoDB and S3 (moto in server mode behind a fault
proxy, scripts/stand_ins/). For `--chaos-seconds` it injects, seeded:

  kill               SIGKILL of a drain process at a random moment; the phase it hit is read
                     from the process's phase file (scripts/chaos/probe.py)
  crashpoint         a drain process SIGKILLs itself at an exact point (before a receive, after
                     it, before/inside/after a write, before/after a delete)
  server_error, throttle, drop, drop_after_commit, slow
                     emulator faults (5xx, 429, dropped connection, answer lost after the
                     change was applied, an answer slower than MNS_TIMEOUT_SECONDS)
  hang               the token API, MNS receive or MNS delete accepts requests and never
                     answers them: in the window past the client's socket timeout; after the
                     window (sqlite, file) until the drain that meets it has returned
  token_throttle     QueryTokenForMnsQueue answers a share of calls with a POP throttling
                     code: 400 Throttling.User, 400 Throttling or 503 ServiceUnavailable
  latency_spike      every request delayed past the socket timeout for a while
  token_expiry       every issued token expired every few seconds (and short token lifetimes)
  short_visibility   a visibility timeout shorter than one write: messages reappear in flight
  sink_refuse        the sink refuses every write for a while (sqlite: a trigger aborts inserts;
                     file: its partition directories are replaced by files; S3/DynamoDB: every
                     write answered 5xx, or AccessDenied)
  sink_part_way      the sink fails part-way through a write (sqlite: inserts of dead letters
                     abort after the records of the same transaction; file: the dead_letters/
                     directory is replaced by a file; S3/DynamoDB: writes of dead letters
                     answered 5xx), after the batch's records were stored
  sink_lock          sqlite only: the harness holds the write lock, so writes wait
  sink_hang          S3/DynamoDB: the endpoint accepts every request and answers none, after
                     the window until the drain that meets it has returned (long windows: midway too)
  long_key           (the corpus) keys of 1,024, 1,025, 1,046 and 1,811 bytes (Tablestore's limit
                     is 1,024) and 2,048, 2,049, 2,067 and 3,072 bytes (DynamoDB's is 2,048)
  overlap            a second scheduled drain process started while one runs (overlapping schedules)

With `--workers K` (K > 1) every drain runs with DRAIN_MAX_WORKERS=K, DRAIN_BACKLOG_SECONDS=0
and DRAIN_INVOKE_ENDPOINT at the emulator: a scheduled drain whose first receives come back
full invokes K - 1 workers through the FC 3.0 invoke API (its real SDK, signed, over a loopback
socket). The emulator accepts each async invocation and hands it to the harness, which, as the
platform would, runs it as a drain process of its own (`... --event <payload>`) under the same
supervision as the scheduled ones: output checked, ending counted, SIGKILLed at its deadline +
grace, kills and crash points in the fault window. The emulator's faults strike the invoke API
too (a refused or lost invoke is counted by the drain, never fatal). With overlap, up to 2K
drain processes run at once.

Then faults stop (but the hang that follows the window, met by the first calm drain) and
drains are started on schedule until the queues are empty, and the run is checked
(scripts/chaos/checks.py): nothing lost (every corpus fact stored, every bad
message dead-lettered), no duplicate rows in a table sink (sqlite, DynamoDB), every key in
an object sink (duplicate lines are counted, not failed), stored bodies equal what was sent,
every long key stored once and read back by its full key (bounded exactly when over the
backend's limit), no drain process past its deadline (the harness SIGKILLs one that runs
`grace` seconds over, as the platform would) nor `stuck` in a call at it, every exit code and
RunFailed raised or not as the drain's summary says (a failed run raises and exits 1), every
drain that met a hung sink until it returned failed with `sink_error`, no secret, signature
or unmasked phone number in any drain output, no secret in the stored data; with K > 1, that
workers were started (a run without one fails: a vacuous pass is not a pass), every accepted
invocation ran as a worker, no worker fanned out further and none was left running. How each
drain ended is counted (ok / failed, by stop reason; killed), the workers' apart.
Results go to scripts/results/chaos-<name>.json; the exit code is non-zero when an
invariant failed.

Seeded: the same seed gives the same corpus, fault plan, kill plan and emulator fault
draws; which request a fault meets still depends on scheduling.

Layout: config (settings, presets), corpus, episodes (the timeline), plan (the faults),
sink_faults and sinks (a run's sink and how it is broken), drains (the processes), run (one
run), checks, results (many runs, the report), cli; probe and hooks/ run inside the drain
processes. This module stays light: every drain process imports it on its way to the probe.
"""
from __future__ import annotations

import importlib
from typing import Any

# Names kept importable from the package, loaded on first use.
_EXPORTS = {"Config": "config", "PRESETS": "config", "FAULT_KINDS": "config", "HOOKS": "config", "REPO": "config",
            "run_config": "results", "render": "results", "main": "cli"}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
