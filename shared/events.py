"""Manual and timer payloads the functions accept, validated with a clear error per field."""
from __future__ import annotations

from typing import Any, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.message_types import MESSAGE_TYPES
from shared.platform import EventError


class DrainEvent(BaseModel):
    """What a manual invoke (or a timer payload) may say to narrow one drain run."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    message_types: Optional[tuple[str, ...]] = Field(None, min_length=1)
    max_messages: Optional[int] = Field(None, ge=1, le=10_000_000)
    wait_seconds: Optional[int] = Field(None, ge=0, le=30)
    # Set by a run that fanned out: this run is one of its workers (it drains, never fans out).
    worker: bool = False
    parent: Optional[str] = Field(None, min_length=1, max_length=128)

    @field_validator("message_types", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("message_types")
    @classmethod
    def _known(cls, value: Optional[tuple[str, ...]]) -> Optional[tuple[str, ...]]:
        if value is not None:
            unknown = [t for t in value if t not in MESSAGE_TYPES]
            if unknown:
                raise ValueError(f"unknown message type(s) {unknown}; expected some of {list(MESSAGE_TYPES)}")
            twice = sorted({t for t in value if value.count(t) > 1})
            if twice:  # refused, not collapsed: a typo'd list should be seen, and it would double the consumers
                raise ValueError(f"{', '.join(twice)} listed more than once")
        return value


FIELD_FORMS = {
    "message_types": "a non-empty list of distinct message type names, e.g. [\"SmsReport\"]",
    "max_messages": "a whole number >= 1",
    "wait_seconds": "a whole number from 0 to 30",
    "worker": "true or false (set by a fanning-out run for its workers)",
    "parent": "the request id of the run that started this worker (at most 128 characters)",
}


M = TypeVar("M", bound=BaseModel)


def parse_event(model: type[M], options: dict[str, Any], forms: dict[str, str] = FIELD_FORMS) -> M:
    """Validate `options` against `model`; raise EventError naming each bad field."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            # A problem with the event as a whole (not an object, undecodable text) has no location.
            loc = ".".join(str(p) for p in err.get("loc") or ()) or "event"
            field = str((err.get("loc") or ("",))[0])
            if err.get("type") == "extra_forbidden":
                problems.append(f"{loc}: unknown field; accepted fields are {sorted(model.model_fields)}")
                continue
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            form = forms.get(field)
            problems.append(f"{loc}: {msg}" + (f"; expected {form}" if form else ""))
        raise EventError("invalid event: " + "; ".join(problems)) from None
