"""A run's fault plan: which faults strike when, seeded, laid out on the run's `Schedule`."""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Optional

from scripts.chaos.config import EMULATOR_FAULTS, EMULATOR_KIND, HANG_SCOPES, SINK_FAULTS, TOKEN_THROTTLE_CODES

if TYPE_CHECKING:
    from scripts.chaos.run import ChaosRun

SCOPES = (None, None, "mns", "BatchReceiveMessage", "BatchDeleteMessage", "token")


# Kinds that never share an episode: the two throttles count on one emulator counter; a token
# throttle needs the token API as its scope, a hang the scope of its turn.
APART = ({"throttle", "token_throttle"}, {"hang", "token_throttle"})


def pairs(kinds: list[str]) -> list[tuple[str, ...]]:
    """`kinds` two by two (in order, as far as they go together), for episodes of two kinds at
    once; never one kind twice, nor two of APART."""
    groups, rest = [], list(kinds)
    while rest:
        first = rest.pop(0)
        partner = next((k for k in rest if k != first and {first, k} not in APART), None)
        if partner is None:
            groups.append((first,))
        else:
            rest.remove(partner)
            groups.append((first, partner))
    return groups


class FaultPlan:
    """Lays out a run's faults and turns them on and off.

      emulator faults   two kinds at a time, one episode after another, in the first 80% of
                        the window (the emulator holds one fault configuration), each on all
                        APIs or one scope; `hang` on the token API, receive or delete (in turn),
                        lasting past the socket timeout; `token_throttle` answers a share of
                        QueryTokenForMnsQueue calls with a POP throttling code. An episode on
                        the token API expires every token as it starts, so that the consumers'
                        refreshes meet it. Kinds that struck nothing get another episode at
                        the window's end, which grows (2 s, up to 3 times) for them.
      latency spikes, token expiry, short visibility, sink faults: independent of those.
    """

    def __init__(self, run: "ChaosRun"):
        self.run = run
        self.rng: random.Random = run.rng
        self.pending: list[tuple[str, bool]] = []  # sink fault starts/stops that met a lock: retried each tick
        self.hang_drains: list[tuple[str, Any]] = []  # (sink hang episode, the drain it waits for)
        self.hang_turn = run.index  # which scope the next hang takes: runs start at different ones
        self.emulator_free_at = 0.0  # when the last emulator episode scheduled so far ends

    @property
    def emu(self) -> Any:
        return self.run.emu

    def lay_out(self) -> None:
        rng, c, mt, schedule = self.rng, self.run.cfg.chaos_seconds, self.run.mns_timeout, self.run.schedule
        kinds = list(EMULATOR_FAULTS) * max(1, round(c / 7))
        rng.shuffle(kinds)
        groups = pairs(kinds)
        # A hang lasts past the client's socket timeout; the other episodes share what is left.
        hangs = [mt + rng.uniform(0.2, 0.6) for g in groups if "hang" in g]
        others = len(groups) - len(hangs)
        slot = max(0.6, (0.8 * c - 0.3 - sum(h / 0.8 for h in hangs)) / max(1, others))
        t = 0.3
        for group in groups:
            if "hang" in group:
                dur = hangs.pop()
                self.emulator_fault(t, dur, group)
                t += dur / 0.8
            else:
                self.emulator_fault(t + rng.uniform(0, slot * 0.2), slot * rng.uniform(0.6, 0.8), group)
                t += slot
        self.emulator_free_at = t  # retries start after the last of these (one configuration at a time)
        schedule.at(max(0.8 * c, t), "fault retries", self.retry_missing)
        for _ in range(max(1, round(c / 6))):
            start, dur = rng.uniform(0.5, c - 1.5), rng.uniform(0.6, 1.3)
            spike = mt + rng.uniform(0.2, 0.7)
            schedule.episode(start, dur, "latency_spike", lambda s=spike: self.emu.set_latency(s), self.base_latency,
                             counts={"latency_spike": lambda: self.emu.stats()["total"]})
        t = rng.uniform(1.0, 2.5)
        while t < c:
            schedule.at(t, "token_expiry", self.expire_tokens)
            t += rng.uniform(2.0, 4.0)
        for _ in range(max(1, round(c / 7))):
            start, dur = rng.uniform(0.5, c - 2.0), rng.uniform(1.0, 2.0)
            vt = rng.uniform(0.2, 0.5)
            schedule.episode(start, dur, "short_visibility", lambda v=vt: self.run.set_visibility(v),
                             lambda: self.run.set_visibility(self.run.vt_base),
                             counts={"short_visibility": lambda: self.emu.stats()["BatchReceiveMessage"]})
        rounds = max(1, round(c / 7))
        for i in range(rounds):
            for kind in SINK_FAULTS[self.run.sink.kind]:
                # Sink hangs one after another, the last at the window's end (it outlasts the window).
                self.sink_fault(kind, latest=c * (i + 1) / rounds if kind == "sink_hang" else None)

    def base_latency(self) -> None:
        self.emu.set_latency(self.run.base_latency, self.run.base_latency / 2)

    # -- emulator faults ---------------------------------------------------------------------------
    def emulator_fault(self, start: float, dur: float, kinds: tuple[str, ...], scope: Any = "draw",
                       prob: Optional[float] = None) -> None:
        """One emulator configuration holding `kinds` (one or two), each striking a share of requests."""
        rng = self.rng
        kwargs: dict[str, Any] = {}
        variants: dict[str, str] = {}
        for kind in kinds:
            kwargs[EMULATOR_KIND.get(kind, kind)] = rng.uniform(0.25, 0.45) if prob is None else prob
        if "hang" in kinds:
            scope = variants["hang"] = HANG_SCOPES[self.hang_turn % len(HANG_SCOPES)]
            self.hang_turn += 1
        elif "token_throttle" in kinds:
            scope = "token"
        elif scope == "draw":
            scope = rng.choice(SCOPES)
        if "token_throttle" in kinds:
            variants["token_throttle"] = kwargs["throttle_code"] = rng.choice(TOKEN_THROTTLE_CODES)
        if "slow" in kinds:
            kwargs["slow_seconds"] = self.run.mns_timeout + rng.uniform(0.3, 0.8)
        kwargs["apis"] = scope

        def on():
            if scope == "token":
                self.emu.expire_tokens()
            self.emu.set_faults(**kwargs)

        counts = {kind: (lambda base=EMULATOR_KIND.get(kind, kind): self.emu.stats().get(f"fault_{base}", 0))
                  for kind in kinds}
        self.run.schedule.episode(start, dur, kinds, on, lambda: self.emu.set_faults(), counts=counts,
                                  variants=variants)

    def missing(self) -> list[str]:
        """Kinds that struck nothing so far. A sink hang still to come or on is not missing (two
        at once would share the proxy's one switch)."""
        kinds = EMULATOR_FAULTS + SINK_FAULTS[self.run.sink.kind]
        schedule = self.run.schedule
        return [k for k in kinds if not schedule.struck(k) and not (k == "sink_hang" and schedule.waiting(k))]

    def retry_missing(self, until: Optional[float] = None) -> list[str]:
        """Another episode, now to `until` (default: the window's end), of each kind that struck nothing."""
        missing = self.missing()
        now = self.run.now()
        end = max(until if until is not None else self.run.cfg.chaos_seconds, now + 1.0)
        emulator = [k for k in missing if k in EMULATOR_FAULTS]
        start = max(now, self.emulator_free_at)
        if start > end - 0.5:  # the episodes laid out so far still run: the next round retries
            emulator = []
        groups = pairs(emulator)
        for i, group in enumerate(groups):
            slot = (end - start) / len(groups)
            self.emulator_fault(start + i * slot, slot * 0.85, group, None, 0.45)
            self.emulator_free_at = end
        for kind in missing:
            if kind not in EMULATOR_FAULTS:
                self.sink_fault(kind, now + 0.1, end)
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
            start = rng.uniform(max(earliest, latest - 2.5), max(earliest, latest - 1.5))
            ident = schedule.episode(start, cfg.timeout_min + cfg.grace, kind, lambda: self.hang_sink(ident),
                                     lambda: faults.stop(kind), counts={kind: lambda: self.run.sink.proxy.hang.held})
            return
        dur = rng.uniform(0.4, cfg.sink_lock_max if kind == "sink_lock" else 1.5)
        dur = min(dur, max(0.4, latest - earliest))
        start = rng.uniform(earliest, max(earliest, latest - dur))
        answer = rng.choice(faults.answers(kind)) if hasattr(faults, "answers") else ""
        schedule.episode(start, dur, kind, lambda: self.switch(kind, True, answer), lambda: self.switch(kind, False),
                         variants={kind: answer})

    def hang_sink(self, ident: str) -> None:
        """The sink's endpoint stops answering until the drain started now (neither killed nor
        crashed) has returned: a hang longer than the run it meets. It may outlast the chaos
        window: the calm phase waits for it."""
        self.run.sink.faults.start("sink_hang")
        # The shortest timeout, and a 1 s margin so that the run has time to meet the hang.
        drain = self.run.launch(in_chaos=True, timeout=self.run.cfg.timeout_min, unharmed=True,
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
        self.run.schedule.drop_unbegun()
        self.run.schedule.close_all(keep=("sink_hang",) if self.hang_drains else ())
