"""A run's fault plan: which faults strike when, seeded, laid out on the run's `Schedule`."""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Optional

from scripts.chaos.config import EMULATOR_FAULTS, EMULATOR_KIND, HANG_SCOPES, SINK_FAULTS, TOKEN_THROTTLE_CODES

if TYPE_CHECKING:
    from scripts.chaos.run import ChaosRun

SCOPES = (None, None, "mns", "BatchReceiveMessage", "BatchDeleteMessage", "token")


class FaultPlan:
    """Lays out a run's faults and turns them on and off.

      emulator faults   one kind at a time in the first 80% of the window (the emulator holds
                        one fault configuration), each on all APIs or one scope; `hang` on the
                        token API, receive or delete (in turn), lasting past the socket timeout;
                        `token_throttle` answers a share of QueryTokenForMnsQueue calls with a
                        POP throttling code. An episode on the token API expires every token
                        as it starts, so that the consumers' refreshes meet it.
      latency spikes, token expiry, short visibility, sink faults: independent of those.
    """

    def __init__(self, run: "ChaosRun"):
        self.run = run
        self.rng: random.Random = run.rng
        self.pending: list[tuple[str, bool]] = []  # sink fault starts/stops that met a lock: retried each tick
        self.hang_drains: list[tuple[str, Any]] = []  # (sink hang episode, the drain it waits for)
        self.hang_turn = run.index  # which scope the next hang takes: runs start at different ones

    @property
    def emu(self) -> Any:
        return self.run.emu

    def lay_out(self) -> None:
        rng, c, mt, schedule = self.rng, self.run.cfg.chaos_seconds, self.run.mns_timeout, self.run.schedule
        kinds = list(EMULATOR_FAULTS) * max(1, round(c / 7))
        rng.shuffle(kinds)
        # A hang lasts past the client's socket timeout; the other kinds share what is left.
        hangs = [mt + rng.uniform(0.2, 0.6) for k in kinds if k == "hang"]
        others = len(kinds) - len(hangs)
        slot = max(0.5, (0.8 * c - 0.3 - sum(h / 0.8 for h in hangs)) / max(1, others))
        t = 0.3
        for kind in kinds:
            if kind == "hang":
                dur = hangs.pop()
                self.emulator_fault(t, dur, kind)
                t += dur / 0.8
            else:
                self.emulator_fault(t + rng.uniform(0, slot * 0.2), slot * rng.uniform(0.6, 0.8), kind)
                t += slot
        schedule.at(0.8 * c, "fault_retries", self.retry_missing)
        for _ in range(max(1, round(c / 6))):
            start, dur = rng.uniform(0.5, c - 1.5), rng.uniform(0.6, 1.3)
            spike = mt + rng.uniform(0.2, 0.7)
            schedule.episode(start, dur, "latency_spike", lambda s=spike: self.emu.set_latency(s), self.base_latency,
                             count=lambda: self.emu.stats()["total"])
        t = rng.uniform(1.0, 2.5)
        while t < c:
            schedule.at(t, "token_expiry", self.expire_tokens)
            t += rng.uniform(2.0, 4.0)
        for _ in range(max(1, round(c / 7))):
            start, dur = rng.uniform(0.5, c - 2.0), rng.uniform(1.0, 2.0)
            vt = rng.uniform(0.2, 0.5)
            schedule.episode(start, dur, "short_visibility", lambda v=vt: self.run.set_visibility(v),
                             lambda: self.run.set_visibility(self.run.vt_base),
                             count=lambda: self.emu.stats()["BatchReceiveMessage"])
        rounds = max(1, round(c / 7))
        for i in range(rounds):
            for kind in SINK_FAULTS[self.run.sink.kind]:
                # Sink hangs one after another, the last at the window's end (it outlasts the window).
                self.sink_fault(kind, latest=c * (i + 1) / rounds if kind == "sink_hang" else None)

    def base_latency(self) -> None:
        self.emu.set_latency(self.run.base_latency, self.run.base_latency / 2)

    # -- emulator faults ---------------------------------------------------------------------------
    def emulator_fault(self, start: float, dur: float, kind: str, scope: Any = "draw", prob: Optional[float] = None) -> None:
        rng = self.rng
        base = EMULATOR_KIND.get(kind, kind)
        kwargs: dict[str, Any] = {base: rng.uniform(0.3, 0.6) if prob is None else prob}
        variant = ""
        if kind == "hang":
            scope = HANG_SCOPES[self.hang_turn % len(HANG_SCOPES)]
            self.hang_turn += 1
            variant = scope
        elif kind == "token_throttle":
            scope = "token"
            variant = kwargs["throttle_code"] = rng.choice(TOKEN_THROTTLE_CODES)
        elif scope == "draw":
            scope = rng.choice(SCOPES)
        if kind == "slow":
            kwargs["slow_seconds"] = self.run.mns_timeout + rng.uniform(0.3, 0.8)
        kwargs["apis"] = scope

        def on():
            if scope == "token":
                self.emu.expire_tokens()
            self.emu.set_faults(**kwargs)

        self.run.schedule.episode(start, dur, kind, on, lambda: self.emu.set_faults(),
                                  count=lambda: self.emu.stats().get(f"fault_{base}", 0), variant=variant)

    def missing(self) -> list[str]:
        """Kinds that struck nothing so far. A sink hang still to come or on is not missing (two
        at once would share the proxy's one switch)."""
        kinds = EMULATOR_FAULTS + SINK_FAULTS[self.run.sink.kind]
        schedule = self.run.schedule
        return [k for k in kinds if not schedule.struck(k) and not (k == "sink_hang" and schedule.waiting(k))]

    def retry_missing(self, until: Optional[float] = None) -> list[str]:
        """Another episode, now to `until` (default: the window's end), of each kind that struck nothing."""
        missing = self.missing()
        start = self.run.now()
        end = until if until is not None else self.run.cfg.chaos_seconds
        emulator = [k for k in missing if k in EMULATOR_FAULTS]
        for i, kind in enumerate(emulator):
            slot = (end - start) / len(emulator)
            # A hang needs a request in its one scope to strike: a higher share of them.
            self.emulator_fault(start + i * slot, slot * 0.85, kind, None, 0.6 if kind == "hang" else 0.5)
        for kind in missing:
            if kind not in EMULATOR_FAULTS:
                self.sink_fault(kind, start + 0.1, end)
        return missing

    def expire_tokens(self) -> None:
        self.emu.expire_tokens()
        if self.run.any_alive():
            self.run.schedule.strike("token_expiry")

    # -- sink faults ----------------------------------------------------------------------------------
    def sink_fault(self, kind: str, earliest: float = 0.5, latest: Optional[float] = None) -> None:
        """An episode of `kind` between `earliest` and `latest` (default: the window's end)."""
        rng, cfg, faults = self.rng, self.run.cfg, self.run.sink.faults
        latest = cfg.chaos_seconds if latest is None else latest
        schedule = self.run.schedule
        if kind == "sink_hang":  # struck: requests held; it lasts as long as the drain it meets
            start = rng.uniform(max(earliest, latest - 1.5), max(earliest, latest - 0.5))
            ident = schedule.episode(start, cfg.timeout_min + self.run.allowance + cfg.grace, kind, lambda: self.hang_sink(ident),
                                     lambda: faults.stop(kind), count=lambda: self.run.sink.proxy.hang.held)
            return
        dur = rng.uniform(0.4, cfg.sink_lock_max if kind == "sink_lock" else 1.5)
        dur = min(dur, max(0.4, latest - earliest))
        start = rng.uniform(earliest, max(earliest, latest - dur))
        answer = rng.choice(faults.answers(kind)) if hasattr(faults, "answers") else ""
        schedule.episode(start, dur, kind, lambda: self.switch(kind, True, answer), lambda: self.switch(kind, False),
                         variant=answer)

    def hang_sink(self, ident: str) -> None:
        """The sink's endpoint stops answering until the drain started now (neither killed nor
        crashed) has returned: a hang longer than the run it meets. It may outlast the chaos
        window: the calm phase waits for it."""
        self.run.sink.faults.start("sink_hang")
        # The shortest timeout, and a 1 s margin so that the run has time to meet the hang.
        drain = self.run.launch(in_chaos=True, timeout=self.run.cfg.timeout_min + self.run.allowance, unharmed=True,
                                DRAIN_SAFETY_MARGIN_SECONDS="1")
        self.hang_drains.append((ident, drain))

    def tick(self) -> None:
        """End each sink hang whose drain has returned; retry sink faults that met a lock."""
        for ident, proc in list(self.hang_drains):
            if proc.result_at is not None or not proc.alive():
                self.hang_drains.remove((ident, proc))
                self.run.schedule.finish(ident)
        for kind, on in list(self.pending):
            if (kind, on) in self.pending:
                self.pending.remove((kind, on))
                self.switch(kind, on)

    def switch(self, kind: str, on: bool, answer: str = "") -> bool:
        """Turn a refusal, part-way failure or lock on or off; struck when a drain is running."""
        faults = self.run.sink.faults
        if not on:
            # A start still waiting for the lock is dropped with its episode.
            self.pending = [(k, o) for k, o in self.pending if k != kind]
        done = (faults.start(kind, answer) if answer else faults.start(kind)) if on else faults.stop(kind)
        if not done:
            self.pending.append((kind, on))
            return False
        if on and self.run.any_alive():
            self.run.schedule.strike(kind, variant=answer)
        return True

    def calm(self) -> None:
        """End of the chaos window: every fault off (but a sink hang, until its drain returned),
        the sink restored, open episodes credited."""
        self.emu.set_faults()
        self.base_latency()
        self.emu.set_token_lifetime(3600)
        self.run.set_visibility(self.run.vt_base)
        self.pending.clear()
        faults = self.run.sink.faults
        if self.hang_drains:  # a sink hang ends when its drain returned (tick)
            for kind in SINK_FAULTS[self.run.sink.kind]:
                if kind != "sink_hang":
                    faults.stop(kind)
        else:
            faults.close()
        self.run.schedule.close_all(keep=("sink_hang",) if self.hang_drains else ())
