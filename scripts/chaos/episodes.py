"""A run's timeline: events at set times, and fault episodes with what each of them struck."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

Kinds = Union[str, tuple[str, ...]]


@dataclass
class Episode:
    kinds: tuple[str, ...]
    variants: dict[str, str]
    counts: dict[str, Callable[[], int]]       # kind -> a counter that only grows
    marks: dict[str, int] = field(default_factory=dict)
    started: float = 0.0

    def grown(self, kind: str) -> int:
        return self.counts[kind]() - self.marks[kind] if kind in self.counts else 0


class Schedule:
    """Timed events (`at`), fault episodes (`episode`) and the tally of faults that struck.

    An episode holds one fault kind or several at once. A kind with a counter (faults the
    emulator injected, requests a stand-in held) is credited with how much it grew while the
    episode lasted; one without, by its `on` action (see `strike`). Two episodes that count
    with one counter must not overlap.
    """

    def __init__(self, now: Callable[[], float]):
        self.now = now
        self.events: list[tuple[float, str, Callable[[], Any]]] = []
        self.faults: Counter = Counter()    # fault kind -> times it struck
        self.details: Counter = Counter()   # "<kind>:<variant>" -> times it struck
        self.episodes: Counter = Counter()  # fault kind -> episodes begun
        self.planned: Counter = Counter()   # fault kind -> episodes scheduled
        self.spans: dict[str, list[tuple[float, Optional[float]]]] = {}  # fault kind -> (begin, end) of its episodes
        self.timeline: list[tuple[float, str]] = []  # (seconds into the run, what happened), for diagnosis
        self._open: dict[str, Episode] = {}
        self._ends: dict[str, Callable[[], None]] = {}
        self._begins: dict[Callable[[], None], tuple[str, ...]] = {}  # begin actions not yet run -> kinds
        self._serial = 0

    def at(self, t: float, label: str, action: Callable[[], Any]) -> None:
        self.events.append((t, label, action))
        self.events.sort(key=lambda e: e[0])

    def episode(self, start: float, dur: float, kinds: Kinds, on: Callable[[], Any], off: Callable[[], Any],
                counts: Optional[dict[str, Callable[[], int]]] = None,
                variants: Optional[dict[str, str]] = None) -> str:
        """Schedule an episode of `kinds` from `start` for `dur` seconds (or until `finish`);
        return its id. `counts` and `variants` are per kind."""
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        counts, variants = counts or {}, {k: v for k, v in (variants or {}).items() if v}
        self._serial += 1
        self.planned.update(kinds)
        ident = f"{'+'.join(kinds)}-{self._serial}"
        label = "+".join(k + (f"/{variants[k]}" if k in variants else "") for k in kinds)

        def begin():
            self._begins.pop(begin, None)
            self.episodes.update(kinds)
            now = self.now()
            self._open[ident] = Episode(kinds, variants, counts, {k: c() for k, c in counts.items()}, now)
            for kind in kinds:
                self.spans.setdefault(kind, []).append((now, None))
            on()

        def end():
            off()
            self.close(ident)

        self.at(start, f"{label} on", begin)
        self.at(start + dur, f"{'+'.join(kinds)} off", end)
        self._ends[ident] = end
        self._begins[begin] = kinds
        return ident

    def drop_unbegun(self) -> None:
        """Take the episodes that have not begun off the schedule (the calm phase starts)."""
        for _, _, action in self.events:
            if action in self._begins:
                self.planned.subtract(self._begins[action])
        self.events = [e for e in self.events if e[2] not in self._begins]

    def finish(self, ident: str) -> None:
        """End an open episode now rather than at its scheduled end."""
        end = self._ends.get(ident)
        if ident in self._open and end is not None:
            self.events = [e for e in self.events if e[2] is not end]
            self.note(f"{'+'.join(self._open[ident].kinds)} off (finished)")
            end()

    def close(self, ident: str) -> None:
        """Credit an episode with what it struck (once; the calm phase may have closed it already)."""
        ep = self._open.pop(ident, None)
        if ep is None:
            return
        now = self.now()
        for kind in ep.kinds:
            if kind in ep.counts:
                self.strike(kind, ep.grown(kind), ep.variants.get(kind, ""))
            spans = self.spans[kind]
            for i, (b, e) in enumerate(spans):
                if b == ep.started and e is None:
                    spans[i] = (b, now)
                    break

    def close_all(self, keep: tuple[str, ...] = ()) -> None:
        """Close every open episode but those holding a kind in `keep`."""
        for ident in list(self._open):
            if not set(self._open[ident].kinds) & set(keep):
                self.close(ident)

    def strike(self, name: str, n: int = 1, variant: str = "") -> None:
        if n > 0:
            self.faults[name] += n
            if variant:
                self.details[f"{name}:{variant}"] += n

    def waiting(self, name: str) -> bool:
        """Whether an episode of `name` is on, or scheduled and not begun yet."""
        return self.planned[name] > self.episodes[name] or any(name in ep.kinds for ep in self._open.values())

    def struck(self, name: str) -> int:
        """What `name` struck so far, open episodes included."""
        return self.faults[name] + sum(ep.grown(name) for ep in self._open.values() if name in ep.kinds)

    def due(self, now: float) -> list[tuple[str, Callable[[], Any]]]:
        """The events whose time has come, in order, taken off the schedule."""
        out = []
        while self.events and self.events[0][0] <= now:
            _, label, action = self.events.pop(0)
            self.timeline.append((round(now, 3), label))
            out.append((label, action))
        return out

    def note(self, what: str) -> None:
        self.timeline.append((round(self.now(), 3), what))

    def span_at(self, name: str, t: float) -> Optional[tuple[float, Optional[float]]]:
        """The (begin, end) of the episode of `name` that was on at time `t` (seconds into the run)."""
        return next(((b, e) for b, e in self.spans.get(name, ()) if b <= t and (e is None or t <= e)), None)
