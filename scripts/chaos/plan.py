"""A run's fault plan: which faults strike when, seeded, laid out on the run's `Schedule`."""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Optional

from scripts.chaos.config import EMULATOR_FAULTS, EMULATOR_KIND, HANG_SCOPES, SINK_FAULTS, TOKEN_THROTTLE_CODES

if TYPE_CHECKING:
    from scripts.chaos.drains import DrainProcess
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

      emulator      two kinds at a time, one episode after another, to 80% of the window (the
                    emulator holds one fault configuration), each on all APIs or one scope;
                    `hang` on the token API, receive or delete (in turn), past the socket
                    timeout; `token_throttle` answers a share of QueryTokenForMnsQueue calls with
                    a POP throttling code. An episode on the token API expires every token as it
                    starts, so that the consumers' refreshes meet it. Kinds that struck nothing
                    get another episode at the window's end, which grows (2 s, up to 3 times).
      sink          refusals, part-way failures and (sqlite) lock holds at random; cloud sinks
                    also hang in long windows.
      latency spikes, token expiry, short visibility: independent of those.
      finale        after the window, all else calm, the first drain meets a hang that lasts
                    until it has returned (a hang longer than the run it meets), neither killed
                    nor crashed: the cloud sink's endpoint, or else the token API, receive or
                    delete (in turn by run).
    """

    def __init__(self, run: "ChaosRun"):
        self.run = run
        self.rng: random.Random = run.rng
        self.pending: list[tuple[str, bool]] = []  # sink fault starts/stops that met a lock: retried each tick
        self.waits: list[tuple[str, "DrainProcess"]] = []  # episodes that end when a drain returned
        self.hang_turn = run.index + 1  # which scope the next hang in the window takes (the finale's: run.index)
        self.emulator_free_at = 0.0  # when the emulator episodes laid out so far end
        self.finale_due = False  # the calm phase starts with a hung cloud sink

    @property
    def emu(self) -> Any:
        return self.run.emu

    def lay_out(self) -> None:
        rng, c, mt, schedule = self.rng, self.run.cfg.chaos_seconds, self.run.mns_timeout, self.run.schedule
        kinds = list(EMULATOR_FAULTS) * max(1, round(c / 7))
        rng.shuffle(kinds)
        self.emulator_groups(0.3, pairs(kinds))
        for _ in range(max(1, round(c / 6))):
            self.latency_spike(rng.uniform(0.5, c - 1.5), rng.uniform(0.6, 1.3))
        t = rng.uniform(1.0, 2.5)
        while t < c:
            schedule.at(t, "token_expiry", self.expire_tokens)
            t += rng.uniform(2.0, 4.0)
        for _ in range(max(1, round(c / 7))):
            self.short_visibility(rng.uniform(0.5, c - 2.0), rng.uniform(1.0, 2.0))
        rounds = max(1, round(c / 7))
        for kind in SINK_FAULTS[self.run.sink.kind]:
            for i in range(rounds - 1 if kind == "sink_hang" else rounds):  # and one after the window
                self.sink_fault(kind, latest=c * (i + 1) / rounds if kind == "sink_hang" else None)

    def emulator_groups(self, t: float, groups: list[tuple[str, ...]]) -> None:
        """The emulator episodes, one after another from `t` to 80% of the window."""
        rng, c, schedule = self.rng, self.run.cfg.chaos_seconds, self.run.schedule
        hang = self.run.mns_timeout + rng.uniform(0.2, 0.6)  # a hang past the socket timeout
        room = 0.8 * c - t - sum(hang / 0.8 for g in groups if "hang" in g)
        slot = max(0.6, room / max(1, sum(1 for g in groups if "hang" not in g)))
        for group in groups:
            if "hang" in group:
                self.emulator_fault(t, hang, group)
                t += hang / 0.8
            else:
                self.emulator_fault(t + rng.uniform(0, slot * 0.2), slot * rng.uniform(0.6, 0.8), group)
                t += slot
        self.emulator_free_at = t
        schedule.at(max(0.8 * c, t), "fault retries", self.retry_missing)

    def latency_spike(self, start: float, dur: float) -> None:
        """Every request delayed past the socket timeout (struck: requests made meanwhile)."""
        spike = self.run.mns_timeout + self.rng.uniform(0.2, 0.7)
        self.run.schedule.episode(start, dur, "latency_spike", lambda: self.emu.set_latency(spike), self.base_latency,
                                  counts={"latency_spike": lambda: self.emu.stats()["total"]})

    def short_visibility(self, start: float, dur: float) -> None:
        """A visibility timeout shorter than one write (struck: receives made meanwhile)."""
        vt = self.rng.uniform(0.2, 0.5)
        self.run.schedule.episode(start, dur, "short_visibility", lambda: self.run.set_visibility(vt),
                                  lambda: self.run.set_visibility(self.run.vt_base),
                                  counts={"short_visibility": lambda: self.emu.stats()["BatchReceiveMessage"]})

    def base_latency(self) -> None:
        self.emu.set_latency(self.run.base_latency, self.run.base_latency / 2)

    # -- emulator faults ---------------------------------------------------------------------------
    def emulator_fault(self, start: float, dur: float, kinds: tuple[str, ...], scope: Any = "draw",
                       prob: Optional[float] = None, until_returned: bool = False) -> str:
        """One emulator configuration holding `kinds` (one or two), each striking a share of requests
        (`until_returned`: a hang that lasts until its drain returned, counted as "hang:<scope>/run")."""
        rng = self.rng
        kwargs: dict[str, Any] = {}
        variants: dict[str, str] = {}
        for kind in kinds:
            kwargs[EMULATOR_KIND.get(kind, kind)] = rng.uniform(0.25, 0.45) if prob is None else prob
        if until_returned:
            scope = HANG_SCOPES[self.run.index % len(HANG_SCOPES)]
            variants["hang"] = scope + "/run"
        elif "hang" in kinds:
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
        return self.run.schedule.episode(start, dur, kinds, on, lambda: self.emu.set_faults(), counts=counts,
                                         variants=variants)

    def hung_api(self, start: float) -> None:
        """The token API, receive or delete (in turn) answers nothing to half the requests from
        `start` until the drain started with the hang has returned (at most its timeout and the
        grace: past that the harness kills it)."""
        cfg = self.run.cfg
        timeout = cfg.timeout_min + self.run.allowance
        ident = self.emulator_fault(start, timeout + cfg.grace + 1.0, ("hang",), prob=0.5, until_returned=True)
        self.run.schedule.at(start, "hung API: its drain", lambda: self.wait_for(ident, self.dedicated(timeout)))

    def dedicated(self, timeout: float) -> "DrainProcess":
        """A drain neither killed nor crashed, with a 1 s margin: it lives until its deadline."""
        return self.run.launch(in_chaos=True, timeout=timeout, unharmed=True, DRAIN_SAFETY_MARGIN_SECONDS="1")

    def wait_for(self, ident: str, drain: "DrainProcess") -> None:
        self.waits.append((ident, drain))

    def missing(self) -> list[str]:
        """Kinds that struck nothing so far (but the sink hang: one follows the window)."""
        kinds = EMULATOR_FAULTS + ("latency_spike", "short_visibility") + SINK_FAULTS[self.run.sink.kind]
        return [k for k in kinds if k != "sink_hang" and not self.run.schedule.struck(k)]

    def retry_missing(self, until: Optional[float] = None) -> list[str]:
        """Another episode, now to `until` (default: the window's end), of each kind that struck nothing."""
        missing = self.missing()
        now = self.run.now()
        end = max(until if until is not None else self.run.cfg.chaos_seconds, now + 1.0)
        start = max(now, self.emulator_free_at)
        # While the emulator's episodes laid out so far still run, the next round retries.
        groups = pairs([k for k in missing if k in EMULATOR_FAULTS]) if start <= end - 0.5 else []
        for i, group in enumerate(groups):
            slot = (end - start) / len(groups)
            self.emulator_fault(start + i * slot, slot * 0.85, group, None, 0.45)
            self.emulator_free_at = end
        if "latency_spike" in missing:
            self.latency_spike(now + 0.1, min(1.0, end - now - 0.2))
        if "short_visibility" in missing:
            self.short_visibility(now + 0.1, end - now - 0.2)
        for kind in missing:
            if kind in SINK_FAULTS[self.run.sink.kind]:
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
        if kind == "sink_hang":
            self.hung_sink(rng.uniform(max(earliest, latest - 2.5), max(earliest, latest - 1.5)))
            return
        dur = rng.uniform(0.4, cfg.sink_lock_max if kind == "sink_lock" else 1.5)
        dur = min(dur, max(0.4, latest - earliest))
        start = rng.uniform(earliest, max(earliest, latest - dur))
        answer = rng.choice(faults.answers(kind)) if hasattr(faults, "answers") else ""
        self.run.schedule.episode(start, dur, kind, lambda: self.switch(kind, True, answer),
                                  lambda: self.switch(kind, False), variants={kind: answer})

    def hung_sink(self, start: float) -> None:
        """The cloud sink's endpoint answers nothing from `start` until the drain started with the
        hang has returned: a hang longer than the run it meets (struck: requests held)."""
        cfg, faults = self.run.cfg, self.run.sink.faults
        timeout = cfg.timeout_min + self.run.allowance
        ident = self.run.schedule.episode(start, timeout + cfg.grace + 1.0, "sink_hang",
                                          lambda: faults.start("sink_hang"), lambda: faults.stop("sink_hang"),
                                          counts={"sink_hang": lambda: self.run.sink.proxy.hang.held})
        self.run.schedule.at(start, "hung sink: its drain", lambda: self.wait_for(ident, self.dedicated(timeout)))

    def tick(self) -> None:
        """End each episode whose drain has returned; retry sink faults that met a lock."""
        for ident, proc in list(self.waits):
            if proc.result_at is not None or not proc.alive():
                self.waits.remove((ident, proc))
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
        """End of the chaos window: every fault off, the sink restored, open episodes credited.
        Then the first calm drain meets a hang (`finale`)."""
        self.emu.set_faults()
        self.base_latency()
        self.emu.set_token_lifetime(3600)
        self.run.set_visibility(self.run.vt_base)
        self.pending.clear()
        self.run.schedule.drop_unbegun()
        self.run.schedule.close_all()
        self.run.sink.faults.close()
        self.finale_due = True

    def finale(self) -> None:
        """The calm phase's first drain (there are messages to write) meets a hang that lasts
        until it has returned: a cloud sink's, or else the token API's, receive's or delete's."""
        self.finale_due = False
        if "sink_hang" in SINK_FAULTS[self.run.sink.kind]:
            self.hung_sink(self.run.now())
        else:
            self.hung_api(self.run.now())
