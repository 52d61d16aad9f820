"""The harness's configuration: paths, message types, fault kinds, `Config` and its presets."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parents[1]
HOOKS = PACKAGE / "hooks"  # first on a drain process's PYTHONPATH: its sitecustomize loads the probe
RESULTS = REPO / "scripts" / "results"
TYPES = ("SmsReport", "SmsUp", "VoiceReport", "VoiceCallReport")
UID = "1943695596114318"
FUNCTION = "alicom-drain"  # the name a drain's fan-out invokes (scripts.invoke_local's context names it so)

LOCAL_SINKS = ("sqlite", "file")
CLOUD_SINKS = ("dynamodb", "s3")  # moto in server mode, behind the fault proxy
SINKS = LOCAL_SINKS + CLOUD_SINKS
TABLE_SINKS = ("sqlite", "dynamodb")  # one row per key: a second row for a fact is a duplicate

# Emulator faults, one kind at a time (the emulator holds one fault configuration).
EMULATOR_FAULTS = ("server_error", "throttle", "drop", "drop_after_commit", "slow", "hang", "token_throttle")
# The emulator's own fault behind a kind named otherwise (its stats count that name).
EMULATOR_KIND = {"token_throttle": "throttle"}
HANG_SCOPES = ("token", "BatchReceiveMessage", "BatchDeleteMessage")
TOKEN_THROTTLE_CODES = ("Throttling.User", "Throttling", "ServiceUnavailable")
# Sink faults, by the sinks that have them.
SINK_FAULTS = {
    "sqlite": ("sink_refuse", "sink_part_way", "sink_lock"),
    "file": ("sink_refuse", "sink_part_way"),
    "dynamodb": ("sink_refuse", "sink_part_way", "sink_hang"),
    "s3": ("sink_refuse", "sink_part_way", "sink_hang"),
}
FAULT_KINDS = (("kill", "crashpoint") + EMULATOR_FAULTS + ("latency_spike", "token_expiry", "short_visibility")
               + ("sink_refuse", "sink_part_way", "sink_lock", "sink_hang", "long_key", "overlap"))
KILL_PHASES = ("startup", "between_batches", "mid_receive", "received_not_written", "mid_write",
               "between_write_and_delete", "mid_delete")
SIGNATURE_RE = re.compile(r"Signature=|MNS [A-Za-z0-9.]+:|security-token|SecurityToken|AccessKeySecret"
                          r"|X-Amz-Signature|Credential=|aws_secret_access_key")
TICK = 0.02


@dataclass(frozen=True)
class Config:
    name: str = "custom"
    runs: int = 4
    seed: int = 1
    messages: int = 200             # valid receipts per run (spread over the 4 types), plus duplicates, bad bodies, long keys
    chaos_seconds: float = 6.0      # faults and kills during this window, then calm until the queues are empty
    timeout_min: float = 4.0        # each drain process gets --timeout uniform in [min, max]
    timeout_max: float = 9.0
    mns_timeouts: tuple[float, ...] = (1.5, 3.0)  # MNS_TIMEOUT_SECONDS, one per run; slow answers and spikes exceed it
    sink_lock_max: float = 1.5      # longest hold of the sqlite write lock (writes wait that long)
    sinks: tuple[str, ...] = SINKS  # one per run, in turn
    cloud_allowance: float = 1.0    # S3/DynamoDB drains get this much longer: their SDK's import and client
                                    # take a second or more of the deadline at start on a busy host
    kill_rate: float = 0.7          # share of the other drain processes started in the chaos window SIGKILLed at random
    crash_rate: float = 0.3         # share of drain processes started in the chaos window given an exact crash point
    worker_crash_rate: Optional[float] = None  # the same for the fan-out's workers (None: crash_rate)
    worker_crash_at: str = ""       # "point:n" every worker given a crash point dies at (the self-test's
                                    # "received:1"); empty: the points in turn, like the other drains
    overlap_rate: float = 0.5       # chance that a schedule tick starts a second drain while one runs
    run_limit: float = 120.0        # seconds after the chaos window for the queues to empty ("stuck" if not)
    grace: float = 5.0              # the harness SIGKILLs a drain this long past its timeout
    keep: bool = False              # keep each run's directory (sink, outputs, phase files)
    only: tuple[int, ...] = ()      # run just these run numbers (1-based) of the seeded sequence, to reproduce one
    sabotage: str = ""              # "delete_before_write": break the drain on purpose (the harness's self-test)
    sabotaged: str = "all"          # which drains the sabotage breaks: "all", or "workers" (the fan-out's only)
    workers: int = 1                # DRAIN_MAX_WORKERS of every drain: K > 1 fans out to K - 1 worker processes
                                    # through the emulator's invoke API when a scheduled drain meets a backlog


PRESETS = {
    "ci": Config(name="ci", runs=4, messages=160, chaos_seconds=8.0, timeout_min=3.5, timeout_max=7.0),
    "large": Config(name="large", runs=50, messages=1200, chaos_seconds=14.0, timeout_max=12.0),
    # The CI configuration with fan-out: the table sinks, where a second worker's row would show;
    # timeouts as "workers" (below) for the same reason.
    "ci-workers": Config(name="ci-workers", runs=2, messages=320, chaos_seconds=8.0, timeout_min=5.0, timeout_max=9.0,
                         cloud_allowance=2.0, sinks=("sqlite", "dynamodb"), workers=4),
    # K = 4: a scheduled drain that meets a backlog starts 3 workers; with overlap up to 8 drain at once.
    # Longer timeouts than "large": 2K interpreters starting at once on a small shared host can spend
    # seconds of a worker's deadline building its runtime (SDK imports, clients) before it drains.
    "workers": Config(name="workers", runs=14, messages=1600, chaos_seconds=14.0, timeout_min=6.0, timeout_max=14.0,
                      cloud_allowance=2.0, workers=4),
}
