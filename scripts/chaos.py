"""Chaos harness: prove that the drain fails safe.

    python -m scripts.chaos --preset ci                  # a few seeded runs (what tests/test_chaos.py runs)
    python -m scripts.chaos --preset large               # 50 seeded runs, by hand
    python -m scripts.chaos --runs 5 --seed 7 --messages 600 --chaos-seconds 10 --name mine

Each run enqueues a known corpus (valid receipts of every type in scripts/receipts.py,
duplicates, bad bodies) into an in-process loopback emulator, then runs the real drain as
separate processes (`python -m scripts.invoke_local drain --platform fc --timeout T --timer`)
into a sqlite or a file sink, alternating by run, and for `--chaos-seconds` injects, seeded:

  kill               SIGKILL of a drain process at a random moment; the phase it hit is read
                     from the process's phase file (scripts/chaos_probe.py)
  crashpoint         a drain process SIGKILLs itself at an exact point (before a receive, after
                     it, before/inside/after a write, before/after a delete)
  server_error, throttle, drop, drop_after_commit, slow
                     emulator faults (5xx, 429, dropped connection, answer lost after the
                     change was applied, an answer slower than MNS_TIMEOUT_SECONDS)
  latency_spike      every request delayed past the socket timeout for a while
  token_expiry       every issued token expired every few seconds (and short token lifetimes)
  short_visibility   a visibility timeout shorter than one write: messages reappear in flight
  sink_refuse        the sink refuses every write for a while (sqlite: a trigger aborts inserts;
                     file: its partition directories are replaced by files)
  sink_part_way      the sink fails part-way through a write (sqlite: inserts of dead letters
                     abort after the records of the same transaction; file: the dead_letters/
                     directory is replaced by a file, after the batch's record objects are put)
  sink_lock          sqlite only: the harness holds the write lock, so writes wait
  overlap            a second drain process started while one runs (overlapping schedules)

Then faults stop and drains are started on schedule until the queues are empty, and the
run is checked: nothing lost (every corpus fact stored, every bad message dead-lettered),
no duplicate rows in the table sink, every key in the object sink (duplicate lines are
counted, not failed), stored bodies equal what was sent, no drain process passed its
deadline (wall time from spawn to exit minus --timeout; the harness SIGKILLs one that
runs `grace` seconds over, as the platform would), no secret, signature or unmasked
phone number in any drain output, no secret in the stored data. Results go to
scripts/results/chaos-<name>.json; the exit code is non-zero when an invariant failed.

Seeded: the same seed gives the same corpus, fault plan, kill plan and emulator fault
draws; which request a fault meets still depends on scheduling.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from scripts.chaos_probe import CRASH_AT_VAR, CRASH_POINTS, PHASE_FILE_VAR, SABOTAGE_VAR, classify, read_phase
from scripts.emulator import Emulator
from scripts.receipts import BAD_BODIES, b64json, make_receipts
from shared.decode import decode_message
from shared.logs import PHONE_RE
from shared.records import MnsMeta, Record, canonical_json

REPO = Path(__file__).resolve().parent.parent
HOOKS = REPO / "scripts" / "chaos_hooks"
RESULTS = REPO / "scripts" / "results"
TYPES = ("SmsReport", "SmsUp", "VoiceReport", "VoiceCallReport")
UID = "1943695596114318"
EMULATOR_FAULTS = ("server_error", "throttle", "drop", "drop_after_commit", "slow")
FAULT_KINDS = ("kill", "crashpoint") + EMULATOR_FAULTS + (
    "latency_spike", "token_expiry", "short_visibility", "sink_refuse", "sink_part_way", "sink_lock", "overlap")
KILL_PHASES = ("startup", "between_batches", "mid_receive", "received_not_written", "mid_write",
               "between_write_and_delete", "mid_delete")
SIGNATURE_RE = re.compile(r"Signature=|MNS [A-Za-z0-9.]+:|security-token|SecurityToken|AccessKeySecret")
TICK = 0.02

# Bodies beyond scripts/receipts.BAD_BODIES (type None: any queue), each of which broke a
# decoder or a sink once: see the fixes in shared/decode.py and shared/sinks/base.py.
EXTRA_BODIES = [
    # An SMS reply cut in the middle of an emoji: valid JSON with an unpaired surrogate escape.
    ("SmsUp", base64.b64encode(b'{"phone_number": "13800138000", "sequence_id": 7, '
                               b'"send_time": "2026-11-25 10:00:00", "content": "\\ud83d"}').decode()),
    (None, b64json({"biz_id": "x" * 300, "phone_number": "13900139000"})),  # key part too long
    (None, b64json(42)),
    (None, "e30"),  # "{}" without its base64 padding
    # Valid, but U+2028 inside a string (JSONL readers must not split there).
    ("SmsUp", b64json({"phone_number": "13700137000", "sequence_id": 99, "send_time": "2026-11-25 10:00:01",
                       "content": "line\u2028separator\u2029and\x85next"})),
]


@dataclass(frozen=True)
class Config:
    name: str = "custom"
    runs: int = 3
    seed: int = 1
    messages: int = 200             # valid receipts per run (spread over the 4 types), plus duplicates and bad bodies
    chaos_seconds: float = 6.0      # faults and kills during this window, then calm until the queues are empty
    timeout_min: float = 4.0        # each drain process gets --timeout uniform in [min, max]
    timeout_max: float = 9.0
    mns_timeouts: tuple[float, ...] = (1.5, 3.0)  # MNS_TIMEOUT_SECONDS, one per run; slow answers and spikes exceed it
    sink_lock_max: float = 1.5      # longest hold of the sqlite write lock (writes wait that long)
    sinks: tuple[str, ...] = ("sqlite", "file")
    kill_rate: float = 0.7          # share of the other drain processes started in the chaos window SIGKILLed at random
    crash_rate: float = 0.3         # share of drain processes started in the chaos window given an exact crash point
    overlap_rate: float = 0.5       # chance that a schedule tick starts a second drain while one runs
    run_limit: float = 120.0        # seconds after the chaos window for the queues to empty ("stuck" if not)
    grace: float = 5.0              # the harness SIGKILLs a drain this long past its timeout
    keep: bool = False              # keep each run's directory (sink, outputs, phase files)
    only: tuple[int, ...] = ()      # run just these run numbers (1-based) of the seeded sequence, to reproduce one
    sabotage: str = ""              # "delete_before_write": break the drain on purpose (the harness's self-test)


PRESETS = {
    "ci": Config(name="ci", runs=3, messages=160, chaos_seconds=8.0, timeout_min=3.5, timeout_max=7.0),
    "large": Config(name="large", runs=50, messages=1200, chaos_seconds=14.0, timeout_max=12.0),
}


# --- corpus ---------------------------------------------------------------------------------

@dataclass
class Corpus:
    items: list[tuple[str, str]]                      # (message type, body) in enqueue order
    message_ids: list[str] = field(default_factory=list)
    phones: set[str] = field(default_factory=set)

    def expected(self) -> tuple[dict[str, dict], set[str], dict[str, set[str]]]:
        """Record key -> body, the dead-letter keys, and key -> the message ids that carry it."""
        keys: dict[str, dict] = {}
        dead: set[str] = set()
        carriers: dict[str, set[str]] = {}
        for (mtype, body), mid in zip(self.items, self.message_ids):
            decoded = decode_message(mtype, body, MnsMeta(message_id=mid))
            if isinstance(decoded, Record):
                keys[decoded.key] = decoded.body
            else:
                dead.add(decoded.key)
            carriers.setdefault(decoded.key, set()).add(mid)
        return keys, dead, carriers


def build_corpus(rng: random.Random, messages: int) -> Corpus:
    per = max(1, messages // len(TYPES))
    items: list[tuple[str, str]] = []
    phones: set[str] = set()
    for mtype in TYPES:
        bodies = make_receipts(mtype, per, seed=rng.randrange(10 ** 9))
        for body in bodies:
            phones.update(str(body[k]) for k in ("phone_number", "callee") if k in body)
            items.append((mtype, b64json(body)))
        for body in rng.sample(bodies, max(1, per // 20)):  # the same fact delivered twice
            items.append((mtype, b64json(body)))
    for mtype, raw in [(None, b) for b in BAD_BODIES] + EXTRA_BODIES:
        items.append((mtype or rng.choice(TYPES), raw))
    phones.update({"13800138000", "13900139000", "13700137000"})
    rng.shuffle(items)
    return Corpus(items, phones=phones)


# --- drain processes ---------------------------------------------------------------------------

@dataclass
class DrainProcess:
    n: int
    popen: subprocess.Popen
    started: float
    timeout: float
    phase_file: Path
    out: Path
    err: Path
    kill_at: Optional[float] = None        # chaos SIGKILL at this monotonic time
    crash_at: Optional[str] = None         # exact crash point "<point>:<n>"
    overlapped: bool = False
    ended: Optional[float] = None
    result_at: Optional[float] = None      # when the handler's result line arrived (the invocation's end)
    killed_by: Optional[str] = None        # "chaos", "crashpoint", "platform" (harness at timeout + grace)
    phases: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.ended is None

    def kill(self, reason: str) -> None:
        if self.alive():
            try:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.killed_by = reason
            except ProcessLookupError:
                pass


def _wait(proc: DrainProcess) -> None:
    """Copy stdout to its file, noting when the result line (the handler's return) arrives."""
    with open(proc.out, "wb") as out:
        for line in proc.popen.stdout:
            out.write(line)
            if line.startswith(b'{"ok": ') and proc.result_at is None:
                proc.result_at = time.monotonic()
    proc.popen.wait()
    proc.ended = time.monotonic()


# --- sink faults ----------------------------------------------------------------------------------

class SqliteFaults:
    """Refuse (trigger), fail part-way (trigger on dead letters) or hold the write lock."""

    TRIGGERS = {
        "sink_refuse": "CREATE TRIGGER IF NOT EXISTS chaos_refuse BEFORE INSERT ON records "
                       "BEGIN SELECT RAISE(ABORT, 'chaos: the sink refuses writes'); END",
        "sink_part_way": "CREATE TRIGGER IF NOT EXISTS chaos_part_way BEFORE INSERT ON dead_letters "
                         "BEGIN SELECT RAISE(ABORT, 'chaos: the sink fails part-way'); END",
    }
    DROPS = {"sink_refuse": "DROP TRIGGER IF EXISTS chaos_refuse", "sink_part_way": "DROP TRIGGER IF EXISTS chaos_part_way"}

    def __init__(self, path: Path):
        from shared.sinks.sqlite import SqliteSink

        SqliteSink(str(path)).close()  # the schema exists before any drain runs, so triggers can be set
        self.path = path
        # Short busy timeouts: the harness must not stall its own clock waiting for a drain's write.
        self.ddl = sqlite3.connect(path, timeout=0.05, isolation_level=None)
        self.locker = sqlite3.connect(path, timeout=0.05, isolation_level=None)
        self.holds = 0  # overlapping lock episodes share the one held lock

    def start(self, kind: str) -> bool:
        try:
            if kind == "sink_lock":
                if not self.holds:
                    self.locker.execute("BEGIN EXCLUSIVE")
                self.holds += 1
            else:
                self.ddl.execute(self.TRIGGERS[kind])
            return True
        except sqlite3.OperationalError:  # a drain holds the lock this instant: try again next tick
            return False

    def stop(self, kind: str) -> bool:
        try:
            if kind == "sink_lock":
                if self.holds == 1:
                    self.locker.execute("ROLLBACK")
                self.holds = max(0, self.holds - 1)
            else:
                self.ddl.execute(self.DROPS[kind])
            return True
        except sqlite3.OperationalError:
            return False

    def close(self) -> None:
        if self.holds:
            self.holds = 1
        for kind in ("sink_lock", "sink_refuse", "sink_part_way"):
            for _ in range(200):
                if self.stop(kind):
                    break
                time.sleep(0.05)
        self.ddl.close()
        self.locker.close()


class FileFaults:
    """Replace the sink's partition directories (refuse) or its dead_letters/ directory (part-way)
    by files. SINK_PATH itself stays a directory: a file there is a settings error at start-up."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def targets(self, kind: str) -> list[Path]:
        if kind == "sink_refuse":
            return [self.root / f"type={mtype}" for mtype in TYPES] + [self.root / "dead_letters"]
        return [self.root / "dead_letters"]

    def start(self, kind: str) -> bool:
        for path in self.targets(kind):
            aside = path.with_name(path.name + ".chaos-aside")
            try:
                if path.is_dir():
                    os.rename(path, aside)
                path.write_text("chaos: not a directory\n")
            except OSError:  # a writer re-created it this instant
                self._restore(path, aside)
                self.stop(kind)
                return False
        return True

    def stop(self, kind: str) -> bool:
        done = True
        for path in self.targets(kind):
            try:
                self._restore(path, path.with_name(path.name + ".chaos-aside"))
            except OSError:
                done = False
        return done

    def _restore(self, path: Path, aside: Path) -> None:
        if path.is_file():
            path.unlink()
        if not aside.exists():
            return
        if not path.exists():
            os.rename(aside, path)
            return
        # A writer re-created the directory meanwhile: move the set-aside objects back in.
        # Same object name = same keys, so keeping the newer copy loses nothing.
        for src in sorted(p for p in aside.rglob("*") if p.is_file()):
            dst = path / src.relative_to(aside)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                os.replace(src, dst)
        shutil.rmtree(aside)

    def close(self) -> None:
        for kind in ("sink_refuse", "sink_part_way"):
            self.stop(kind)


# --- one run ----------------------------------------------------------------------------------------

def _secret(rng: random.Random, prefix: str, n: int) -> str:
    return prefix + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


class ChaosRun:
    def __init__(self, cfg: Config, index: int, workdir: Path, log: Callable[[str], None]):
        self.cfg, self.index, self.workdir, self.log = cfg, index, workdir, log
        self.rng = random.Random(f"chaos-{cfg.seed}-{index}")
        self.crash_assigned = 0
        self.sink = cfg.sinks[index % len(cfg.sinks)]
        self.sink_path = workdir / ("receipts.db" if self.sink == "sqlite" else "receipts")
        self.ak = _secret(self.rng, "LTAI5t", 18)
        self.secret = _secret(self.rng, "", 30)
        self.vt_base = self.rng.uniform(2.0, 3.5)
        self.base_latency = self.rng.uniform(0.0, 0.03)
        self.token_lifetime = self.rng.uniform(4.0, 10.0)
        self.mns_timeout = self.rng.choice(cfg.mns_timeouts)
        self.corpus = build_corpus(self.rng, cfg.messages)
        self.procs: list[DrainProcess] = []
        self.faults: Counter = Counter()
        self.episodes: Counter = Counter()
        self.events: list[tuple[float, str, Callable[[], Any]]] = []
        self.sink_faults: Any = None
        self.timeline: list[tuple[float, str]] = []  # (seconds into the run, what happened), for diagnosis
        self.pending: list[tuple[str, bool]] = []  # sink fault starts/stops that met a lock: retried each tick

    # -- plan -----------------------------------------------------------------------------------
    def plan(self) -> None:
        rng, c, mt = self.rng, self.cfg.chaos_seconds, self.mns_timeout
        # Emulator faults one kind at a time (set_faults holds one configuration) in the first 80%
        # of the window; the rest is kept for a second episode of any kind that met no request.
        kinds = list(EMULATOR_FAULTS) * max(1, round(c / 7))
        rng.shuffle(kinds)
        slot = (0.8 * c - 0.3) / len(kinds)
        for i, kind in enumerate(kinds):
            start = 0.3 + i * slot + rng.uniform(0, slot * 0.2)
            dur = slot * rng.uniform(0.6, 0.8)
            scope = rng.choice([None, None, "mns", "BatchReceiveMessage", "BatchDeleteMessage", "token"])
            self._emulator_fault(start, dur, kind, scope, rng.uniform(0.2, 0.5))
        self.events.append((0.8 * c, "fault_retries", self._retry_missing_faults))
        for _ in range(max(1, round(c / 6))):
            start, dur = rng.uniform(0.5, c - 1.5), rng.uniform(0.6, 1.3)
            spike = mt + rng.uniform(0.2, 0.7)
            self._episode(start, dur, "latency_spike", lambda s=spike: self.emu.set_latency(s),
                          lambda: self.emu.set_latency(self.base_latency, self.base_latency / 2))
        t = rng.uniform(1.0, 2.5)
        while t < c:
            self.events.append((t, "token_expiry", self._expire_tokens))
            t += rng.uniform(2.0, 4.0)
        for _ in range(max(1, round(c / 7))):
            start, dur = rng.uniform(0.5, c - 2.0), rng.uniform(1.0, 2.0)
            vt = rng.uniform(0.2, 0.5)
            self._episode(start, dur, "short_visibility", lambda v=vt: self._set_visibility(v),
                          lambda: self._set_visibility(self.vt_base))
        sink_kinds = ["sink_refuse", "sink_part_way"] + (["sink_lock"] if self.sink == "sqlite" else [])
        for kind in sink_kinds * max(1, round(c / 7)):
            dur = rng.uniform(0.4, self.cfg.sink_lock_max if kind == "sink_lock" else 1.5)
            start = rng.uniform(0.5, c - dur)
            self._episode(start, dur, kind, lambda k=kind: self._sink_fault(k, True), lambda k=kind: self._sink_fault(k, False))
        self.events.sort(key=lambda e: e[0])

    def _emulator_fault(self, start: float, dur: float, kind: str, scope: Optional[str], prob: float) -> None:
        kwargs = {kind: prob, "apis": scope}
        if kind == "slow":
            kwargs["slow_seconds"] = self.mns_timeout + self.rng.uniform(0.3, 0.8)
        self._episode(start, dur, kind, lambda: self.emu.set_faults(**kwargs), lambda: self.emu.set_faults())

    def _missing_faults(self) -> list[str]:
        stats = self.emu.stats()
        return [k for k in EMULATOR_FAULTS if not stats.get(f"fault_{k}")]

    def _retry_missing_faults(self, until: Optional[float] = None) -> list[str]:
        """Another episode, now to `until` (default: the window's end), of each kind that struck nothing."""
        missing = self._missing_faults()
        if not missing:
            return missing
        start = self.now()
        slot = ((until if until is not None else self.cfg.chaos_seconds) - start) / len(missing)
        first = len(self.events)
        for i, kind in enumerate(missing):
            self._emulator_fault(start + i * slot, slot * 0.85, kind, None, 0.5)
        self._pending_events.extend(self.events[first:])
        self._pending_events.sort(key=lambda e: e[0])
        return missing

    def _episode(self, start: float, dur: float, name: str, on: Callable[[], Any], off: Callable[[], Any]) -> None:
        ident = f"{name}-{len(self.events)}"

        def begin():
            self.episodes[name] += 1
            self._stats_mark[ident] = self.emu.stats()
            on()

        def end():
            off()
            if ident not in self._stats_mark:  # ended by the calm phase already
                return
            before, after = self._stats_mark.pop(ident), self.emu.stats()
            if name == "latency_spike":
                self.faults[name] += after.get("total", 0) - before.get("total", 0)
            elif name == "short_visibility":
                self.faults[name] += after.get("BatchReceiveMessage", 0) - before.get("BatchReceiveMessage", 0)

        self.events.append((start, f"{name}+", begin))
        self.events.append((start + dur, f"{name}-", end))

    def _expire_tokens(self) -> None:
        self.emu.expire_tokens()
        if any(p.alive() for p in self.procs):
            self.faults["token_expiry"] += 1

    def _set_visibility(self, seconds: float) -> None:
        for mtype in TYPES:
            self.emu.create_queue(self.emu.queue_name(mtype), visibility_timeout=seconds)

    def _sink_fault(self, kind: str, on: bool) -> bool:
        if not on:
            # A start still waiting for the lock is dropped with its episode.
            self.pending = [(k, o) for k, o in self.pending if k != kind]
        if not (self.sink_faults.start(kind) if on else self.sink_faults.stop(kind)):
            self.pending.append((kind, on))
            return False
        if on and any(p.alive() for p in self.procs):
            self.faults[kind] += 1
        return True

    # -- drains ----------------------------------------------------------------------------------
    def launch(self, in_chaos: bool) -> DrainProcess:
        n = len(self.procs)
        lrng = random.Random(f"chaos-{self.cfg.seed}-{self.index}-launch-{n}")
        timeout = round(lrng.uniform(self.cfg.timeout_min, self.cfg.timeout_max), 2)
        phase_file = self.workdir / f"phase-{n}.json"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": f"{HOOKS}{os.pathsep}{REPO}",
            "ALICOM_UID": UID,
            "ALICOM_MESSAGE_TYPES": ",".join(TYPES),
            "ALICOM_MNS_ENDPOINT": self.emu.url,
            "ALICOM_TOKEN_ENDPOINT": self.emu.url,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": self.ak,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": self.secret,
            "SINK": self.sink,
            "SINK_PATH": str(self.sink_path),
            "DRAIN_WAIT_SECONDS": str(lrng.choice([0, 1, 1])),
            "DRAIN_CONCURRENCY": str(lrng.choice([1, 2, 2, 3])),
            "DRAIN_COALESCE_SECONDS": f"{lrng.uniform(0.0, 0.6):.2f}",
            "MNS_TIMEOUT_SECONDS": str(self.mns_timeout),
            "TOKEN_REFRESH_BUFFER_SECONDS": "1",
            "POWERTOOLS_LOG_LEVEL": "DEBUG",
            "PYTHONUNBUFFERED": "1",  # each line leaves when written: the result line marks the handler's return
            PHASE_FILE_VAR: str(phase_file),
        }
        if self.cfg.sabotage:
            env[SABOTAGE_VAR] = self.cfg.sabotage
        kill_at = crash_at = None
        if in_chaos and lrng.random() < self.cfg.crash_rate:
            # Round-robin from a per-run offset: every point gets hit, and a run replays alone (--only).
            point = CRASH_POINTS[(3 * self.index + self.crash_assigned) % len(CRASH_POINTS)]
            self.crash_assigned += 1
            crash_at = f"{point}:{lrng.randint(1, 3)}"
            env[CRASH_AT_VAR] = crash_at
        elif in_chaos and lrng.random() < self.cfg.kill_rate:
            kill_at = lrng.uniform(0.3, 0.8 * timeout)
        out, err = self.workdir / f"drain-{n}.out", self.workdir / f"drain-{n}.err"
        overlapped = any(p.alive() for p in self.procs)
        with open(err, "wb") as fe:
            started = time.monotonic()
            popen = subprocess.Popen(
                [sys.executable, "-m", "scripts.invoke_local", "drain", "--platform", "fc",
                 "--timeout", str(timeout), "--timer"],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=fe, stdin=subprocess.DEVNULL)
        proc = DrainProcess(n, popen, started, timeout, phase_file, out, err,
                            kill_at=None if kill_at is None else started + kill_at, crash_at=crash_at,
                            overlapped=overlapped)
        threading.Thread(target=_wait, args=(proc,), daemon=True).start()
        self.procs.append(proc)
        if overlapped:
            self.faults["overlap"] += 1
        self.timeline.append((round(self.now(), 3), f"launch {n} timeout {timeout}" + (f" crash {crash_at}" if crash_at else "")
                              + (f" kill at +{kill_at:.2f}" if kill_at is not None else "")))
        return proc

    def now(self) -> float:
        return time.monotonic() - getattr(self, "t0", time.monotonic())

    def queues_empty(self) -> tuple[int, int]:
        visible = in_flight = 0
        for mtype in TYPES:
            s = self.emu.queue_state(self.emu.queue_name(mtype))
            visible += s["visible"]
            in_flight += s["in_flight"]
        return visible, in_flight

    # -- execute ----------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        cfg, rng = self.cfg, self.rng
        self.emu = Emulator(customer_keys={self.ak: self.secret}, uid=UID, token_lifetime=self.token_lifetime,
                            visibility_timeout=self.vt_base, latency=self.base_latency,
                            jitter=self.base_latency / 2, seed=cfg.seed * 1000 + self.index)
        self.emu.start()
        self._stats_mark: dict[str, dict] = {}
        try:
            for mtype in TYPES:
                self.emu.create_queue(self.emu.queue_name(mtype))
            # A backlog at the start, the rest arriving through the chaos window (receipts keep coming),
            # so that the drains have work whenever a fault strikes.
            self.backlog = int(len(self.corpus.items) * 0.4)
            self._feed(self.backlog)
            self.sink_faults = SqliteFaults(self.sink_path) if self.sink == "sqlite" else FileFaults(self.sink_path)
            self.plan()
            self._loop(rng)
            return self._check()
        finally:
            for p in self.procs:
                p.kill("cleanup")
            for p in self.procs:
                try:
                    p.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            self.emu.stop()

    def _feed(self, upto: int) -> None:
        ids = self.corpus.message_ids
        for mtype, body in self.corpus.items[len(ids):upto]:
            ids.append(self.emu.enqueue(self.emu.queue_name(mtype), body))

    def _fed_by(self, now: float) -> int:
        n, window = len(self.corpus.items), self.cfg.chaos_seconds * 0.85
        return n if now >= window else self.backlog + int((n - self.backlog) * now / window)

    def _loop(self, rng: random.Random) -> None:
        cfg = self.cfg
        interval = rng.uniform(0.8, 1.6)
        self.t0 = time.monotonic()
        next_tick = 0.0
        events = self._pending_events = list(self.events)
        calm = False
        self.stuck = False
        chaos_end, extensions = cfg.chaos_seconds, 0
        while True:
            now = self.now()
            mono = time.monotonic()
            self._feed(self._fed_by(now))
            while events and events[0][0] <= now:
                _, label, action = events.pop(0)
                self.timeline.append((round(now, 3), label))
                action()
            for kind, on in list(self.pending):
                if (kind, on) in self.pending:
                    self.pending.remove((kind, on))
                    self._sink_fault(kind, on)
            if not calm and now >= chaos_end:
                # A run must show every fault kind: a kind that met no request (the drains were
                # between runs, or luck) gets more time, a few times at most.
                if extensions < 3 and self._retry_missing_faults(until=now + 2.0):
                    extensions += 1
                    chaos_end = now + 2.0
                    self.timeline.append((round(now, 3), "chaos window extended for missing fault kinds"))
                    if not any(p.alive() for p in self.procs):
                        self.launch(in_chaos=True)
                    continue
                calm = True
                self._calm()
            for p in self.procs:
                if p.alive() and p.kill_at is not None and mono >= p.kill_at and p.result_at is None:
                    p.phases = classify(_read(p.phase_file))
                    p.kill("chaos")
                    self.timeline.append((round(now, 3), f"kill {p.n} {p.phases}"))
                    if not calm and not any(q.alive() for q in self.procs if q is not p):
                        self.launch(in_chaos=True)  # start it again
                if p.alive() and mono - p.started > p.timeout + cfg.grace:
                    p.kill("platform")
            live = [p for p in self.procs if p.alive()]
            if now >= next_tick:
                next_tick = now + interval
                if not calm and (not live or (len(live) < 2 and rng.random() < cfg.overlap_rate)):
                    self.launch(in_chaos=True)
            if calm and not live:
                visible, in_flight = self.queues_empty()
                if not visible and not in_flight:
                    return
                if visible:
                    self.launch(in_chaos=False)
            if now > chaos_end + cfg.run_limit:
                self.stuck = True
                return
            time.sleep(TICK)

    def _calm(self) -> None:
        """End of the chaos window: every fault off, the sink restored."""
        self.emu.set_faults()
        self.emu.set_latency(self.base_latency, self.base_latency / 2)
        self.emu.set_token_lifetime(3600)
        self._set_visibility(self.vt_base)
        self.pending.clear()
        self.sink_faults.close()
        self._stats_mark.clear()

    # -- check -----------------------------------------------------------------------------------
    def _check(self) -> dict[str, Any]:
        deadline = time.monotonic() + 15
        while any(p.alive() for p in self.procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        keys, dead_keys, carriers = self.corpus.expected()
        stored_rows = self._read_sink()
        stored_keys = {k for k, _ in stored_rows["records"]}
        stored_dead = {k for k in stored_rows["dead"]}
        # Lost: not stored, and no message carrying it is left in a queue (left ones are "not drained").
        queued = {mid for t in TYPES for mid in self.emu.message_ids(self.emu.queue_name(t))}
        lost_keys = sorted(k for k in set(keys) - stored_keys if not carriers[k] & queued)
        lost_dead = sorted(k for k in dead_keys - stored_dead if not carriers[k] & queued)
        unexpected = sorted((stored_keys - set(keys)) | (stored_dead - dead_keys))
        mismatched = sorted({k for k, body in stored_rows["records"] if k in keys and body != keys[k]})
        per_key = Counter(k for k, _ in stored_rows["records"]) + Counter(stored_rows["dead"])
        # Facts stored under more than one row: bodies are the facts' identity (a key that varied
        # between deliveries would show up here).
        by_body = Counter(canonical_json(body) for _, body in stored_rows["records"])
        dup_lines = sum(n - 1 for n in per_key.values() if n > 1)
        dup_facts = sum(n - 1 for n in by_body.values() if n > 1) if self.sink == "sqlite" else 0
        visible, in_flight = self.queues_empty()
        stats = self.emu.stats()
        for kind in EMULATOR_FAULTS:
            self.faults[kind] += stats.get(f"fault_{kind}", 0)
        procs = [self._process_result(p) for p in self.procs]
        for p in procs:
            if p["killed_by"] == "chaos":
                self.faults["kill"] += 1
            if p["killed_by"] == "crashpoint":
                self.faults["crashpoint"] += 1
        security = self._security(procs)
        overruns = [p["overrun"] for p in procs if p["overrun"] is not None]
        finished = [p for p in procs if p["overrun"] is not None]
        drain_errors: Counter = Counter()
        stop_reasons: Counter = Counter()
        for p in procs:
            drain_errors.update(p.pop("errors"))
            if p["stop_reason"]:
                stop_reasons[p["stop_reason"]] += 1
        kills_by_phase: Counter = Counter()
        for p in procs:
            for phase in p["phases"]:
                kills_by_phase[phase] += 1
        result = {
            "run": self.index,
            "sink": self.sink,
            "enqueued": len(self.corpus.items),
            "facts": len(keys),
            "expected_dead_letters": len(dead_keys),
            "stored": len(stored_keys & set(keys)),
            "dead_lettered": len(stored_dead & dead_keys),
            "lost": len(lost_keys) + len(lost_dead),
            "lost_keys": (lost_keys + lost_dead)[:20],
            "unexpected_keys": unexpected[:20],
            "body_mismatches": len(mismatched),
            "table_duplicates": (dup_lines + dup_facts) if self.sink == "sqlite" else 0,
            "object_duplicate_lines": dup_lines if self.sink == "file" else 0,
            "left_in_queue": visible + in_flight,
            "stuck": self.stuck,
            "invocations": len(procs),
            "kills": self.faults["kill"],
            "crashpoints": self.faults["crashpoint"],
            "platform_kills": sum(1 for p in procs if p["killed_by"] == "platform"),
            "kills_by_phase": dict(kills_by_phase),
            "crashpoints_by_point": dict(Counter(p["crash_at"].split(":")[0] for p in procs
                                                 if p["killed_by"] == "crashpoint")),
            "faults": {k: self.faults[k] for k in FAULT_KINDS},
            "episodes": dict(self.episodes),
            "worst_overrun": round(max(overruns), 3) if overruns else None,
            "worst_process_overrun": max((p["process_overrun"] for p in finished), default=None),
            "worst_exit_lag": max((round(p["wall"] - p["cold_start"] - p["invocation"], 3) for p in finished), default=None),
            "worst_cold_start": max((p["cold_start"] for p in procs), default=None),
            "worst_spawn_to_return_overrun": max((round(p["cold_start"] + p["invocation"] - p["timeout"], 3)
                                                  for p in finished), default=None),
            "stop_reasons": dict(stop_reasons),
            "drain_errors": dict(drain_errors),
            "tracebacks": dict(Counter(p["traceback"] for p in procs if p["traceback"])),
            "emulator_requests": {k: v for k, v in stats.items() if v and not k.startswith("fault_")},
            "redeliveries": sum(self.emu.queue_state(self.emu.queue_name(t))["received"] for t in TYPES)
                            - len(self.corpus.items),
            "security": security,
            "settings": {"visibility_timeout": round(self.vt_base, 2), "token_lifetime": round(self.token_lifetime, 2),
                         "latency": round(self.base_latency, 3), "mns_timeout": self.mns_timeout},
            "processes": procs,
        }
        result["failures"] = failures(result)
        if result["failures"]:
            result["timeline"] = self.timeline + [(round(p.started - self.t0, 3), f"drain {p.n} started")
                                                  for p in self.procs] + [
                (round((p.ended or 0) - self.t0, 3), f"drain {p.n} ended") for p in self.procs]
            result["timeline"].sort()
        return result

    def _read_sink(self) -> dict[str, list]:
        if self.sink == "sqlite":
            db = sqlite3.connect(self.sink_path, timeout=10)
            try:
                records = [(k, json.loads(b)) for k, b in db.execute("SELECT key, body FROM records")]
                dead = [k for (k,) in db.execute("SELECT key FROM dead_letters")]
            finally:
                db.close()
            return {"records": records, "dead": dead}
        from shared.sinks.file import FileSink

        sink = FileSink(self.sink_path)
        return {"records": [(r.key, r.body) for r in sink.iter_records()],
                "dead": [d["key"] for d in sink.iter_dead_letters()]}

    def _process_result(self, p: DrainProcess) -> dict[str, Any]:
        out, err = _read(p.out) or "", _read(p.err) or ""
        summary = None
        lines = out.strip().splitlines()
        if lines:
            try:
                summary = json.loads(lines[-1])
                if not isinstance(summary, dict) or "totals" not in summary:
                    summary = None
            except ValueError:
                summary = None
        phase_text = _read(p.phase_file)
        if p.killed_by is None and p.popen.returncode == -signal.SIGKILL:
            p.killed_by = "crashpoint"  # it killed itself at its crash point
        phases = p.phases
        if p.killed_by == "crashpoint":
            phases = classify(phase_text)
        ended = p.ended or time.monotonic()
        wall = ended - p.started
        # The invocation runs from the handler's start (when it builds its deadline from the
        # timeout; the probe notes that moment) to its return (the result line): on FC and
        # Lambda the process lives on, so interpreter shutdown is no part of it. Start-up and
        # imports before the handler ran are reported apart, as cold start.
        doc = read_phase(phase_text) or {}
        invoked = doc.get("invoked_at") or p.started
        invocation = (p.result_at or ended) - invoked
        overrun = None if p.killed_by in ("chaos", "crashpoint", "cleanup") else round(invocation - p.timeout, 3)
        traceback = None
        if "Traceback (most recent call last)" in err:
            tail = [line for line in err.strip().splitlines() if line and not line.startswith(" ")]
            traceback = tail[-1][:200] if tail else "Traceback"
        errors: Counter = Counter()
        if summary:
            for t in summary.get("types", {}).values():
                errors.update(t.get("errors", {}))
        return {
            "n": p.n,
            "timeout": p.timeout,
            "wall": round(wall, 3),
            "cold_start": round(invoked - p.started, 3),
            "invocation": round(invocation, 3),
            "overrun": overrun,
            "process_overrun": round(wall - p.timeout, 3),  # spawn to exit, interpreter shutdown included
            "exit": p.popen.returncode,
            "killed_by": p.killed_by,
            "crash_at": p.crash_at,
            "overlapped": p.overlapped,
            "phases": phases if p.killed_by in ("chaos", "crashpoint") else [],
            "stop_reason": summary.get("stop_reason") if summary else None,
            "error": summary.get("error") if summary else None,
            "totals": {k: v for k, v in (summary or {}).get("totals", {}).items() if k != "api_calls"},
            "traceback": traceback,
            "errors": errors,
            "_output": out + err,
        }

    def _security(self, procs: list[dict]) -> dict[str, Any]:
        text = "".join(p.pop("_output") for p in procs)
        issued = [v for grant in self.emu.issued_tokens() for v in grant]
        forbidden = [self.ak, self.secret] + issued
        leaked = sorted({s for s in forbidden if s and s in text})
        signatures = sorted(set(SIGNATURE_RE.findall(text)))
        unmasked = sorted(p for p in self.corpus.phones if p in text)
        phone_like = len(PHONE_RE.findall(text))
        stored = _sink_bytes(self.sink_path)
        stored_secrets = sorted({s for s in forbidden if s and s.encode() in stored})
        masked = len(re.findall(r"1[3-9]\d\*{6}\d{2}", text))
        return {
            "output_bytes": len(text.encode("utf-8", "replace")),
            "secrets_checked": len(forbidden),
            "leaked_secrets": len(leaked),
            "signature_patterns": signatures,
            "unmasked_phones": len(unmasked),
            "phone_like_strings": phone_like,
            "masked_phones_seen": masked,
            "secrets_in_stored_data": len(stored_secrets),
        }


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text("utf-8", "replace")
    except OSError:
        return None


def _sink_bytes(path: Path) -> bytes:
    if path.is_file():
        files = [path] + [Path(str(path) + s) for s in ("-wal", "-shm") if Path(str(path) + s).exists()]
    else:
        files = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return b"".join(f.read_bytes() for f in files)


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
    s = r["security"]
    if s["leaked_secrets"] or s["signature_patterns"] or s["secrets_in_stored_data"]:
        out.append(f"secret material in output/storage: {s['leaked_secrets']} value(s), patterns {s['signature_patterns']}, "
                   f"{s['secrets_in_stored_data']} in stored data")
    if s["unmasked_phones"] or s["phone_like_strings"]:
        out.append(f"{s['unmasked_phones']} corpus phone number(s) / {s['phone_like_strings']} phone-like string(s) in logs")
    if r["tracebacks"]:
        out.append(f"uncaught exception(s) in drain processes: {r['tracebacks']}")
    return out


# --- many runs ----------------------------------------------------------------------------------

def run_config(cfg: Config, out_dir: Path = RESULTS, log: Callable[[str], None] = print) -> dict[str, Any]:
    started = time.monotonic()
    runs = []
    base = Path(tempfile.mkdtemp(prefix=f"chaos-{cfg.name}-"))
    try:
        for i in range(cfg.runs):
            if cfg.only and i + 1 not in cfg.only:
                continue
            workdir = base / f"run-{i}"
            workdir.mkdir()
            t = time.monotonic()
            result = ChaosRun(cfg, i, workdir, log).execute()
            result["seconds"] = round(time.monotonic() - t, 1)
            runs.append(result)
            log(_run_line(cfg, result))
            if not cfg.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if not cfg.keep:
            shutil.rmtree(base, ignore_errors=True)
    summary = summarize(cfg, runs, time.monotonic() - started)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"chaos-{cfg.name}.json"
    path.write_text(json.dumps(summary, indent=1, ensure_ascii=False, default=str) + "\n")
    summary["path"] = str(path)
    log(render(summary))
    log(f"results: {path}")
    return summary


def _run_line(cfg: Config, r: dict) -> str:
    status = "OK" if not r["failures"] else "FAIL: " + "; ".join(r["failures"])
    return (f"run {r['run'] + 1}/{cfg.runs} {r['sink']:6} enqueued {r['enqueued']} stored {r['stored']}/{r['facts']} "
            f"dead-lettered {r['dead_lettered']}/{r['expected_dead_letters']} lost {r['lost']} "
            f"dup rows {r['table_duplicates']} dup lines {r['object_duplicate_lines']} "
            f"drains {r['invocations']} kills {r['kills']}+{r['crashpoints']} "
            f"worst overrun {r['worst_overrun']}s ({r['seconds']}s) {status}")


def summarize(cfg: Config, runs: list[dict], seconds: float) -> dict[str, Any]:
    total = lambda name: sum(r[name] for r in runs)  # noqa: E731
    faults: Counter = Counter()
    phases: Counter = Counter()
    points: Counter = Counter()
    errors: Counter = Counter()
    tracebacks: Counter = Counter()
    security: Counter = Counter()
    for r in runs:
        faults.update(r["faults"])
        phases.update(r["kills_by_phase"])
        points.update(r["crashpoints_by_point"])
        errors.update(r["drain_errors"])
        tracebacks.update(r["tracebacks"])
        security.update({k: v for k, v in r["security"].items() if isinstance(v, int)})
    overruns = [r["worst_overrun"] for r in runs if r["worst_overrun"] is not None]
    failed = [{"run": r["run"], "seed": cfg.seed, "failures": r["failures"]} for r in runs if r["failures"]]
    return {
        "config": asdict(cfg),
        "command": f"python -m scripts.chaos --runs {cfg.runs} --seed {cfg.seed} --messages {cfg.messages} "
                   f"--chaos-seconds {cfg.chaos_seconds} --name {cfg.name}",
        "python": sys.version.split()[0],
        "seconds": round(seconds, 1),
        "runs": len(runs),
        "runs_by_sink": dict(Counter(r["sink"] for r in runs)),
        "enqueued": total("enqueued"),
        "facts": total("facts"),
        "stored": total("stored"),
        "dead_lettered": total("dead_lettered"),
        "lost": total("lost"),
        "table_duplicates": total("table_duplicates"),
        "object_duplicate_lines": total("object_duplicate_lines"),
        "body_mismatches": total("body_mismatches"),
        "left_in_queue": total("left_in_queue"),
        "redeliveries": total("redeliveries"),
        "invocations": total("invocations"),
        "kills": total("kills"),
        "crashpoints": total("crashpoints"),
        "platform_kills": total("platform_kills"),
        "kills_by_phase": {k: phases[k] for k in KILL_PHASES if phases[k]},
        "crashpoints_by_point": {k: points[k] for k in CRASH_POINTS if points[k]},
        "faults": {k: faults[k] for k in FAULT_KINDS},
        "worst_overrun": max(overruns) if overruns else None,
        "worst_process_overrun": max((r["worst_process_overrun"] for r in runs if r["worst_process_overrun"] is not None),
                                     default=None),
        "worst_exit_lag": max((r["worst_exit_lag"] for r in runs if r["worst_exit_lag"] is not None), default=None),
        "worst_cold_start": max((r["worst_cold_start"] for r in runs if r["worst_cold_start"] is not None), default=None),
        "worst_spawn_to_return_overrun": max((r["worst_spawn_to_return_overrun"] for r in runs
                                              if r["worst_spawn_to_return_overrun"] is not None), default=None),
        "drain_errors": dict(errors.most_common()),
        "tracebacks": dict(tracebacks),
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
        f"platform kills {s['platform_kills']}  redeliveries {s['redeliveries']}",
        f"  kills by phase {s['kills_by_phase']}",
        f"  crash points {s['crashpoints_by_point']}",
        f"  faults {s['faults']}",
        f"  worst deadline overrun {s['worst_overrun']}s (handler start to return, minus --timeout; <= 0 is in time)",
        f"  cold start (spawn to handler start) up to {s['worst_cold_start']}s; counting it: worst "
        f"{s['worst_spawn_to_return_overrun']}s; spawn to process exit: worst {s['worst_process_overrun']}s "
        f"(interpreter shutdown after the result up to {s['worst_exit_lag']}s)",
        f"  security {s['security']}",
        f"  {'OK: failed safe' if s['ok'] else 'FAILED: ' + json.dumps(s['failed_runs'])[:2000]}",
    ]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.chaos", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named configuration (options below override it)")
    p.add_argument("--name", help="names the results file scripts/results/chaos-<name>.json")
    p.add_argument("--runs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--messages", type=int, help="valid receipts per run")
    p.add_argument("--chaos-seconds", type=float)
    p.add_argument("--timeout", help="drain --timeout range MIN:MAX seconds")
    p.add_argument("--mns-timeout", help="MNS_TIMEOUT_SECONDS of the drains: one value, or choices a,b,c (one per run)")
    p.add_argument("--sink-lock-max", type=float, help="longest sqlite write-lock hold, seconds")
    p.add_argument("--sinks", help="comma-separated: sqlite,file")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--keep", action="store_true", help="keep each run's directory")
    p.add_argument("--only", help="comma-separated run numbers to run alone (reproduce a failure; with --keep)")
    args = p.parse_args(argv)
    cfg = PRESETS.get(args.preset, Config())
    changes: dict[str, Any] = {}
    for name in ("name", "runs", "seed", "messages", "chaos_seconds", "sink_lock_max"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.mns_timeout:
        changes["mns_timeouts"] = tuple(float(x) for x in args.mns_timeout.split(","))
    if args.timeout:
        lo, _, hi = args.timeout.partition(":")
        changes["timeout_min"], changes["timeout_max"] = float(lo), float(hi or lo)
    if args.sinks:
        changes["sinks"] = tuple(s.strip() for s in args.sinks.split(",") if s.strip())
    if args.keep:
        changes["keep"] = True
    if args.only:
        changes["only"] = tuple(int(x) for x in args.only.split(","))
    cfg = replace(cfg, **changes)
    if cfg.chaos_seconds < 4:
        p.error("--chaos-seconds must be at least 4")
    summary = run_config(cfg, args.out)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
