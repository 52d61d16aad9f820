"""The manual reconcile event: its fields, their forms, and how they combine.

Validated with pydantic (the reconcile function's path only; the drain never imports it).
"""
from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Callable, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.platform import EventError
from shared.send_records import (
    PHONE_FORMS,
    QUERY_WINDOW_DAYS,
    SendDateError,
    beijing_today,
    check_send_date,
    normalize_phone,
)

MAX_PHONES = 100_000
MAX_DATES = QUERY_WINDOW_DAYS + 1
DATE_FORM = "a date 'YYYY-MM-DD' within the last 30 days by Beijing time, not in the future"

FIELD_FORMS = {
    "dates": f"a non-empty list of dates, each {DATE_FORM}",
    "date_from": f"{DATE_FORM}; with date_to",
    "date_to": f"{DATE_FORM}, not before date_from",
    "phones": f"a non-empty list of phone numbers as strings, each {PHONE_FORMS}",
    "phones_file": "a path in the function's file system, or 'sink:<key>' for an object in the (object) sink; "
                   "one phone number per line (blank lines and lines starting with # are skipped), or a JSON list",
    "biz_id": "the BizId SendSms returned (a non-empty string of at most 256 characters)",
    "targets": "a list of {\"date\": \"YYYY-MM-DD\", \"phones\": [...], \"biz_id\": optional} groups "
               "(the shape of a previous run's `unreached`)",
    "max_targets": "a whole number >= 1: phone-days this run queries at most",
}


def _check_date(value: str) -> str:
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
    except (TypeError, ValueError):
        raise ValueError(f"{str(value)[:20]!r} is not a date 'YYYY-MM-DD'") from None
    try:
        check_send_date(day, beijing_today())
    except SendDateError as exc:
        raise ValueError(str(exc)) from None
    return value


def _check_phones(values: list[str]) -> list[str]:
    if not values:
        raise ValueError("the list is empty")
    if len(values) > MAX_PHONES:
        raise ValueError(f"{len(values)} phone numbers; at most {MAX_PHONES} per event")
    return list(dict.fromkeys(_each(values, normalize_phone)))


def _each(values: list[str], check: Callable[[str], str]) -> list[str]:
    """`check` applied to every item; the first failure names its item."""
    out = []
    for i, value in enumerate(values):
        try:
            out.append(check(value))
        except ValueError as exc:  # PhoneError and SendDateError included
            raise ValueError(f"item {i}: {exc}") from None
    return out


class TargetGroup(BaseModel):
    """One date and its phone numbers (optionally one BizId): an element of `targets`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    date: str
    phones: list[str]
    biz_id: Optional[str] = Field(None, min_length=1, max_length=256)

    @field_validator("date")
    @classmethod
    def _date(cls, value: str) -> str:
        return _check_date(value)

    @field_validator("phones")
    @classmethod
    def _phones(cls, value: list[str]) -> list[str]:
        return _check_phones(value)


class ReconcileEvent(BaseModel):
    """A manual reconcile event. Without any target field it works the ledger, as a timer run does."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    dates: Optional[list[str]] = Field(None, min_length=1, max_length=MAX_DATES)
    date_from: Optional[str] = None
    date_to: Optional[str] = None
    phones: Optional[list[str]] = None
    phones_file: Optional[str] = Field(None, min_length=1, max_length=1024)
    biz_id: Optional[str] = Field(None, min_length=1, max_length=256)
    targets: Optional[list[TargetGroup]] = Field(None, min_length=1, max_length=10_000)
    max_targets: Optional[int] = Field(None, ge=1, le=1_000_000)

    @field_validator("dates")
    @classmethod
    def _dates(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is None:
            return None
        return sorted(set(_each(value, _check_date)))

    @field_validator("date_from", "date_to")
    @classmethod
    def _one_date(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else _check_date(value)

    @field_validator("phones")
    @classmethod
    def _phones(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        return None if value is None else _check_phones(value)

    @property
    def is_ledger_run(self) -> bool:
        return all(getattr(self, f) is None for f in ("dates", "date_from", "date_to", "phones", "phones_file",
                                                       "biz_id", "targets"))

    def days(self) -> list[date]:
        if self.dates is not None:
            return [datetime.strptime(d, "%Y-%m-%d").date() for d in self.dates]
        assert self.date_from is not None and self.date_to is not None  # shape_problem checked the pair
        first = datetime.strptime(self.date_from, "%Y-%m-%d").date()
        last = datetime.strptime(self.date_to, "%Y-%m-%d").date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def shape_problem(event: ReconcileEvent) -> Optional[tuple[str, str]]:
    """(field, problem) when the fields do not combine into one of the accepted forms."""
    has_range = event.date_from is not None or event.date_to is not None
    has_dates = event.dates is not None or has_range
    has_phones = event.phones is not None or event.phones_file is not None
    if event.targets is not None:
        if has_dates or has_phones or event.biz_id is not None:
            return "targets", "give either targets, or dates with phones, not both"
        return None
    if event.is_ledger_run:
        return None
    if event.dates is not None and has_range:
        return "dates", "give either dates or date_from + date_to, not both"
    if has_range and (event.date_from is None or event.date_to is None):
        return ("date_to" if event.date_to is None else "date_from"), "date_from and date_to go together"
    if event.date_from is not None and event.date_to is not None and event.date_from > event.date_to:
        return "date_to", f"{event.date_to} is before date_from {event.date_from}"
    if not has_dates:
        return "dates", "required with phones, phones_file or biz_id (or date_from + date_to)"
    if not has_phones:
        return "phones", "required with dates (or phones_file)"
    if event.phones is not None and event.phones_file is not None:
        return "phones", "give either phones or phones_file, not both"
    return None


def parse_reconcile_event(options: dict[str, Any]) -> ReconcileEvent:
    """Validate a reconcile event (fields, then how they combine); EventError names the field and its form."""
    from shared.events import parse_event

    event = parse_event(ReconcileEvent, options, FIELD_FORMS)
    problem = shape_problem(event)
    if problem:
        name, detail = problem
        raise EventError(f"invalid event: {name}: {detail}; expected {FIELD_FORMS[name]}")
    return event
