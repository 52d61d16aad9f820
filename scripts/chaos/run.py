"""One chaos run: a loopback emulator, a sink, the corpus fed in, drain processes started on a
schedule while the fault plan strikes, then calm until the queues are empty, then the checks."""
from __future__ import annotations

import os
import queue
import random
import subprocess
import time
from typing import Any, Callable, Optional

from scripts.chaos.checks import check_run
from scripts.chaos.config import CLOUD_SINKS, FUNCTION, TICK, TYPES, UID, Config
from scripts.chaos.corpus import build_corpus
from scripts.chaos.drains import DrainProcess, read_text, spawn
from scripts.chaos.episodes import Schedule
from scripts.chaos.plan import FaultPlan
from scripts.chaos.probe import CRASH_AT_VAR, CRASH_POINTS, PHASE_FILE_VAR, SABOTAGE_VAR, classify
from scripts.chaos.sinks import RunSink, secret
from scripts.emulator import Emulator

MAX_EXTENSIONS = 3  # times the chaos window grows by 2 s for fault kinds that struck nothing yet


class ChaosRun:
    def __init__(self, cfg: Config, index: int, workdir, log: Callable[[str], None], moto: Any = None):
        self.cfg, self.index, self.workdir, self.log, self.moto = cfg, index, workdir, log, moto
        self.rng = random.Random(f"chaos-{cfg.seed}-{index}")
        self.crash_assigned = 0
        self.sink_kind = cfg.sinks[index % len(cfg.sinks)]
        self.allowance = cfg.cloud_allowance if self.sink_kind in CLOUD_SINKS else 0.0
        self.ak = secret(self.rng, "LTAI5t", 18)
        self.secret = secret(self.rng, "", 30)
        self.vt_base = self.rng.uniform(2.0, 3.5)
        self.base_latency = self.rng.uniform(0.0, 0.03)
        self.token_lifetime = self.rng.uniform(4.0, 10.0)
        self.mns_timeout = self.rng.choice(cfg.mns_timeouts)
        self.corpus = build_corpus(self.rng, cfg.messages)
        self.procs: list[DrainProcess] = []
        self.t0 = time.monotonic()
        self.schedule = Schedule(self.now)
        self.stuck = False
        self.calm = False
        self.invoked: queue.SimpleQueue[bytes] = queue.SimpleQueue()  # accepted invocations not started yet
        self.windows = (0.0, 0.0)  # (seconds of faults, extensions included; seconds from calm to empty queues)

    # -- state the plan and the checks look at --------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.t0

    def any_alive(self) -> bool:
        return any(p.alive() for p in self.procs)

    def scheduled_alive(self) -> list[DrainProcess]:
        return [p for p in self.procs if p.alive() and not p.worker]

    def set_visibility(self, seconds: float) -> None:
        for mtype in TYPES:
            self.emu.create_queue(self.emu.queue_name(mtype), visibility_timeout=seconds)

    def queues_empty(self) -> tuple[int, int]:
        visible = in_flight = 0
        for mtype in TYPES:
            s = self.emu.queue_state(self.emu.queue_name(mtype))
            visible += s["visible"]
            in_flight += s["in_flight"]
        return visible, in_flight

    # -- drains ------------------------------------------------------------------------------------
    def launch(self, in_chaos: bool, timeout: Optional[float] = None, unharmed: bool = False,
               event: Optional[str] = None, **settings: str) -> DrainProcess:
        """Start a drain process, scheduled or (with `event`, an invocation's payload) a fan-out's
        worker; in the chaos window it may get a kill time or a crash point (not when `unharmed`).
        `timeout` overrides the drawn one; `settings` add to its environment."""
        n = len(self.procs)
        lrng = random.Random(f"chaos-{self.cfg.seed}-{self.index}-launch-{n}")
        drawn = round(lrng.uniform(self.cfg.timeout_min, self.cfg.timeout_max) + self.allowance, 2)
        timeout = drawn if timeout is None else round(timeout, 2)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "ALICOM_UID": UID,
            "ALICOM_MESSAGE_TYPES": ",".join(TYPES),
            "ALICOM_MNS_ENDPOINT": self.emu.url,
            "ALICOM_TOKEN_ENDPOINT": self.emu.url,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": self.ak,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": self.secret,
            "DRAIN_WAIT_SECONDS": str(lrng.choice([0, 1, 1])),
            "DRAIN_CONCURRENCY": str(lrng.choice([1, 2, 2, 3])),
            "DRAIN_COALESCE_SECONDS": f"{lrng.uniform(0.0, 0.6):.2f}",
            "MNS_TIMEOUT_SECONDS": str(self.mns_timeout),
            "TOKEN_REFRESH_BUFFER_SECONDS": "1",
            "POWERTOOLS_LOG_LEVEL": "DEBUG",
            PHASE_FILE_VAR: str(self.workdir / f"phase-{n}.json"),
            **self.sink.env(n),
            **self.fan_out_env(),
            **settings,
        }
        if self.cfg.sabotage and (self.cfg.sabotaged == "all" or event is not None):
            env[SABOTAGE_VAR] = self.cfg.sabotage
        kill_at = crash_at = None
        in_chaos = in_chaos and not unharmed
        crash_rate = self.cfg.crash_rate if event is None or self.cfg.worker_crash_rate is None else self.cfg.worker_crash_rate
        if in_chaos and lrng.random() < crash_rate:
            if event is not None and self.cfg.worker_crash_at:
                crash_at = self.cfg.worker_crash_at
            else:
                # Round-robin from a per-run offset: every point gets hit, and a run replays alone (--only).
                point = CRASH_POINTS[(3 * self.index + self.crash_assigned) % len(CRASH_POINTS)]
                self.crash_assigned += 1
                crash_at = f"{point}:{lrng.randint(1, 3)}"
            env[CRASH_AT_VAR] = crash_at
        elif in_chaos and lrng.random() < self.cfg.kill_rate:
            kill_at = lrng.uniform(0.3, 0.8 * timeout)
        overlapped = event is None and bool(self.scheduled_alive())  # overlapping schedules, not workers
        proc = spawn(n, timeout, env, self.workdir, event=event, crash_at=crash_at, overlapped=overlapped)
        if kill_at is not None:
            proc.kill_at = proc.started + kill_at
        self.procs.append(proc)
        if overlapped:
            self.schedule.strike("overlap")
        self.schedule.note(f"launch {n}{' worker' if event else ''} timeout {timeout}"
                           + (f" crash {crash_at}" if crash_at else "")
                           + (f" kill at +{kill_at:.2f}" if kill_at is not None else ""))
        return proc

    # -- fan-out: the harness plays the platform's instances ------------------------------------------
    def fan_out_env(self) -> dict[str, str]:
        """With K workers: every drain may fan out, through the emulator's invoke API, as soon as a
        full receive shows a backlog (any age: the harness's runs last seconds, not periods)."""
        if self.cfg.workers <= 1:
            return {}
        return {"DRAIN_MAX_WORKERS": str(self.cfg.workers), "DRAIN_BACKLOG_SECONDS": "0",
                "DRAIN_INVOKE_ENDPOINT": self.emu.url}

    def _invocation(self, payload: bytes) -> bytes:
        """The emulator accepted an async invocation (signature checked, 202 sent): the harness,
        as the platform, runs it as a drain process of its own, started from its loop (a tick,
        20 ms, later) so that every drain is under the same supervision: phase file, output
        capture, kill plan and crash points, deadline + grace."""
        self.invoked.put(payload)
        return b"null"

    def _start_workers(self) -> None:
        while True:
            try:
                payload = self.invoked.get_nowait()
            except queue.Empty:
                return
            self.launch(in_chaos=not self.calm, event=payload.decode("utf-8"))

    # -- execute -----------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        self.emu = Emulator(customer_keys={self.ak: self.secret}, uid=UID, token_lifetime=self.token_lifetime,
                            visibility_timeout=self.vt_base, latency=self.base_latency,
                            jitter=self.base_latency / 2, seed=self.cfg.seed * 1000 + self.index)
        self.emu.start()
        if self.cfg.workers > 1:
            # A callable, not a process function: the emulator would start the process itself,
            # out of reach of the harness's kills, crash points, deadline and output checks.
            self.emu.register_function(FUNCTION, self._invocation)
        self.sink = None
        try:
            for mtype in TYPES:
                self.emu.create_queue(self.emu.queue_name(mtype))
            # A backlog at the start, the rest arriving through the chaos window (receipts keep coming),
            # so that the drains have work whenever a fault strikes; the last ones arrive after the
            # window, for the finale's drain.
            self.backlog = int(len(self.corpus.items) * 0.4)
            self.last, self.last_arrived = max(16, len(self.corpus.items) // 10), False
            self._feed(self.backlog)
            self.sink = RunSink(self.sink_kind, self.workdir, self.rng, self.moto)
            self.plan = FaultPlan(self)
            self.plan.lay_out()
            self._loop()
            self._wait_for_drains(15)
            return check_run(self)
        finally:
            for p in self.procs:
                p.kill("cleanup")
            for p in self.procs:
                try:
                    p.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            if self.sink is not None:
                self.sink.close()
            self.emu.stop()

    def _feed(self, upto: int) -> None:
        ids = self.corpus.message_ids
        for mtype, body in self.corpus.items[len(ids):upto]:
            ids.append(self.emu.enqueue(self.emu.queue_name(mtype), body))

    def _fed_by(self, now: float) -> int:
        n, window = len(self.corpus.items), self.cfg.chaos_seconds * 0.85
        if self.last_arrived:
            return n
        return self.backlog + int((n - self.last - self.backlog) * min(1.0, now / window))

    def _loop(self) -> None:
        cfg, rng = self.cfg, self.rng
        interval = rng.uniform(0.8, 1.6)
        self.t0 = time.monotonic()
        next_tick = 0.0
        chaos_end, extensions = cfg.chaos_seconds, 0
        while True:
            now = self.now()
            mono = time.monotonic()
            self._feed(self._fed_by(now))
            self._start_workers()
            for _, action in self.schedule.due(now):
                action()
            self.plan.tick()
            if not self.calm and now >= chaos_end:
                # A run must show every fault kind: a kind that met no request (the drains were
                # between runs, or luck) gets more time, a few times at most.
                missing = self.plan.retry_missing(until=now + 2.0) if extensions < MAX_EXTENSIONS else []
                if missing:
                    extensions += 1
                    chaos_end = now + 2.0
                    self.schedule.note(f"chaos window extended for {', '.join(missing)}")
                    if not self.any_alive():
                        self.launch(in_chaos=True)
                    continue
                self.calm = True
                self.plan.calm()
            for p in self.procs:
                if p.alive() and p.kill_at is not None and mono >= p.kill_at and p.result_at is None:
                    p.phases = classify(read_text(p.phase_file))
                    p.kill("chaos")
                    self.schedule.note(f"kill {p.n} {p.phases}")
                    if not self.calm and not any(q.alive() for q in self.procs if q is not p):
                        self.launch(in_chaos=True)  # start it again
                if p.alive() and mono - p.started > p.timeout + cfg.grace:
                    # The platform ends an invocation that has not returned; one that returned is over
                    # (a thread left in a call may hold the interpreter's exit): reaped, not failed.
                    p.kill("platform" if p.result_at is None else "lingered")
            live = [p for p in self.procs if p.alive()]
            scheduled = self.scheduled_alive()  # overlap: two scheduled runs at once, each with its workers
            if now >= next_tick:
                next_tick = now + interval
                if not self.calm and (not scheduled or (len(scheduled) < 2 and rng.random() < cfg.overlap_rate)):
                    self.launch(in_chaos=True)
            if self.calm and not live and self.plan.finale_due:
                self.last_arrived = True
                self._feed(len(self.corpus.items))  # the last receipts arrive: the finale's drain has work
                self.plan.finale()  # its drain starts with the hang, on the next tick
            elif self.calm and not live:
                visible, in_flight = self.queues_empty()
                if not visible and not in_flight:
                    self.windows = (round(chaos_end, 1), round(now - chaos_end, 1))
                    return
                if visible:
                    self.launch(in_chaos=False)
            if now > chaos_end + cfg.run_limit:
                self.stuck = True
                return
            time.sleep(TICK)

    def _wait_for_drains(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.any_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
