"""A run's timeline: events at set times, and fault episodes with what each of them struck."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass
class Episode:
    name: str
    variant: str
    count: Optional[Callable[[], int]]
    mark: int = 0
    started: float = 0.0


class Schedule:
    """Timed events (`at`), fault episodes (`episode`) and the tally of faults that struck.

    An episode with a `count` (a counter that only grows: faults the emulator injected, requests
    a stand-in held) is credited with how much that counter grew while it lasted; one without is
    credited by its `on` action (see `strike`). Episodes of one counter must not overlap.
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
        self._serial = 0

    def at(self, t: float, label: str, action: Callable[[], Any]) -> None:
        self.events.append((t, label, action))
        self.events.sort(key=lambda e: e[0])

    def episode(self, start: float, dur: float, name: str, on: Callable[[], Any], off: Callable[[], Any],
                count: Optional[Callable[[], int]] = None, variant: str = "") -> str:
        """Schedule an episode from `start` for `dur` seconds (or until `finish`); return its id."""
        self._serial += 1
        self.planned[name] += 1
        ident = f"{name}-{self._serial}"

        def begin():
            self.episodes[name] += 1
            now = self.now()
            self._open[ident] = Episode(name, variant, count, count() if count else 0, now)
            self.spans.setdefault(name, []).append((now, None))
            on()

        def end():
            off()
            self.close(ident)

        self.at(start, f"{name}{'/' + variant if variant else ''}+", begin)
        self.at(start + dur, f"{name}-", end)
        self._ends[ident] = end
        return ident

    def finish(self, ident: str) -> None:
        """End an open episode now rather than at its scheduled end."""
        end = self._ends.get(ident)
        if ident in self._open and end is not None:
            self.events = [e for e in self.events if e[2] is not end]
            self.note(f"{self._open[ident].name}- (finished)")
            end()

    def close(self, ident: str) -> None:
        """Credit an episode with what it struck (once; the calm phase may have closed it already)."""
        ep = self._open.pop(ident, None)
        if ep is None:
            return
        if ep.count is not None:
            self.strike(ep.name, ep.count() - ep.mark, ep.variant)
        spans = self.spans[ep.name]
        for i, (b, e) in enumerate(spans):
            if b == ep.started and e is None:
                spans[i] = (b, self.now())
                break

    def close_all(self, keep: tuple[str, ...] = ()) -> None:
        """Close every open episode but those of the kinds in `keep`."""
        for ident in list(self._open):
            if self._open[ident].name not in keep:
                self.close(ident)

    def strike(self, name: str, n: int = 1, variant: str = "") -> None:
        if n > 0:
            self.faults[name] += n
            if variant:
                self.details[f"{name}:{variant}"] += n

    def waiting(self, name: str) -> bool:
        """Whether an episode of `name` is on, or scheduled and not begun yet."""
        return self.planned[name] > self.episodes[name] or any(ep.name == name for ep in self._open.values())

    def struck(self, name: str) -> int:
        """What `name` struck so far, open episodes included."""
        return self.faults[name] + sum(ep.count() - ep.mark for ep in self._open.values()
                                       if ep.name == name and ep.count is not None)

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
