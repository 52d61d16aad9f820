"""What a read of a sink asks for: message types and an inclusive range of event dates.

Every stored record and dead letter carries `event_date`, the `YYYY-MM-DD` part of its
`event_time` (Beijing, the vendor's clock); object sinks also name their `dt=` partitions by
it. Dates compare as that text, which for such dates is calendar order.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any, Iterable, Mapping, Optional, Union

DateBound = Union[date, str, None]


def day_text(value: DateBound, name: str) -> Optional[str]:
    """A date bound as `YYYY-MM-DD` (from a date or from text in that form), or None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    try:
        return date.fromisoformat(str(value).strip()).isoformat()
    except ValueError:
        raise ValueError(f"{name}: expected a date 'YYYY-MM-DD', got {str(value)[:40]!r}") from None


class Selection:
    """Message types (None: every type) and event dates from `date_from` to `date_to`, both
    included (None: open at that end)."""

    # A plain class, not a dataclass: the drain imports this module and never reads, and a
    # frozen dataclass costs one to two milliseconds to build at import.
    __slots__ = ("types", "date_from", "date_to")

    def __init__(self, types: Optional[frozenset[str]] = None, date_from: Optional[str] = None,
                 date_to: Optional[str] = None):
        self.types, self.date_from, self.date_to = types, date_from, date_to

    @classmethod
    def of(cls, message_types: Optional[Iterable[str]] = None, date_from: DateBound = None,
           date_to: DateBound = None) -> "Selection":
        first, last = day_text(date_from, "date_from"), day_text(date_to, "date_to")
        if first is not None and last is not None and last < first:
            raise ValueError(f"date_to: {last} is before date_from {first}")
        if isinstance(message_types, str):  # one type, not its letters
            message_types = (message_types,)
        # An empty list of types asks for every type, as it always has.
        return cls(frozenset(message_types) if message_types else None, first, last)

    @property
    def dated(self) -> bool:
        return self.date_from is not None or self.date_to is not None

    def has_day(self, day: str) -> bool:
        return (self.date_from is None or self.date_from <= day) and (self.date_to is None or day <= self.date_to)

    def has_type(self, message_type: str) -> bool:
        return self.types is None or message_type in self.types

    def matches(self, item: Mapping[str, Any]) -> bool:
        """Whether a stored row (with `message_type` and `event_date`) is selected."""
        if not self.has_type(item.get("message_type") or ""):
            return False
        day = item.get("event_date")
        return not self.dated or (isinstance(day, str) and self.has_day(day))
