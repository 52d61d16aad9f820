"""What the handlers need from Function Compute or Lambda, in one shape.

FC passes the event as bytes (a timer wraps the configured payload in
{"triggerTime","triggerName","payload"}) and gives no remaining-time call, so the
deadline is start + context.function.timeout. Lambda passes a dict and answers
get_remaining_time_in_millis(). Anything else (a local run) passes a dict and may
give a `timeout` in seconds.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from shared.clock import SYSTEM_CLOCK, Clock, Deadline


class EventError(ValueError):
    """The invocation event is malformed; the message names the field."""


class RunFailed(RuntimeError):
    """A run failed (sink, token or queue error, no time to work): raised by a handler after it
    logged the summary and emitted the metrics, so the platform counts a failed invocation
    (Lambda's Errors metric, async retries and on-failure destination; FC's failed invocation).

    `summary` is the run's whole result, for callers that want it. The message holds the stop
    reason and the error, redacted like a log line: the platform prints it outside our logger.
    """

    def __init__(self, function: str, summary: dict[str, Any]):
        from shared.logs import redact

        reason = summary.get("stop_reason") or "failed"
        error = summary.get("error") or ""
        super().__init__(redact(f"{function} run failed: {reason}" + (f": {error}" if error else "")))
        self.summary = summary


@dataclass
class Invocation:
    platform: str  # "fc" | "lambda" | "local"
    trigger: str  # "timer" | "manual"
    options: dict[str, Any]  # the manual/timer payload (validated by the function's own model)
    deadline: Deadline
    request_id: str
    function_name: str = ""
    raw_event: Any = field(default=None, repr=False)


def _json_object(data: Any, where: str) -> dict[str, Any]:
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise EventError(f"{where}: event is not UTF-8 JSON") from None
    if isinstance(data, str):
        if not data.strip():
            return {}
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise EventError(f"{where}: event is not valid JSON ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EventError(f"{where}: event must be a JSON object, got {type(data).__name__}")
    return data


def _is_fc_timer(event: dict[str, Any]) -> bool:
    return "triggerTime" in event and "triggerName" in event


def _is_aws_schedule(event: dict[str, Any]) -> bool:
    return event.get("source") == "aws.events" or event.get("detail-type") == "Scheduled Event"


def adapt(event: Any, context: Any, clock: Clock = SYSTEM_CLOCK, default_timeout: float = 60.0) -> Invocation:
    """Recognise the platform from the context and normalise the event."""
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        return _from_lambda(event, context, clock)
    if context is not None and getattr(context, "function", None) is not None and isinstance(event, (bytes, bytearray, str)):
        return _from_fc(event, context, clock)
    return _from_local(event, context, clock, default_timeout)


def _from_fc(event: Any, context: Any, clock: Clock) -> Invocation:
    body = _json_object(event, "event")
    trigger = "manual"
    if _is_fc_timer(body):
        trigger = "timer"
        body = _json_object(body.get("payload"), "event.payload")
    timeout = float(getattr(context.function, "timeout", 0) or 60)
    return Invocation(
        platform="fc",
        trigger=trigger,
        options=body,
        deadline=Deadline(timeout, clock),
        request_id=str(getattr(context, "request_id", "") or uuid.uuid4()),
        function_name=str(getattr(context.function, "name", "") or ""),
        raw_event=event,
    )


def _from_lambda(event: Any, context: Any, clock: Clock) -> Invocation:
    body = _json_object(event, "event")
    trigger = "manual"
    if _is_aws_schedule(body):
        # A classic EventBridge rule without Input: nothing to narrow the run with.
        trigger, body = "timer", {}
    elif body.pop("_trigger", None) == "schedule":
        # Our EventBridge Scheduler input marks itself so summaries say "timer".
        trigger = "timer"
    return Invocation(
        platform="lambda",
        trigger=trigger,
        options=body,
        deadline=Deadline(context.get_remaining_time_in_millis() / 1000.0, clock),
        request_id=str(getattr(context, "aws_request_id", "") or uuid.uuid4()),
        function_name=str(getattr(context, "function_name", "") or ""),
        raw_event=event,
    )


def _from_local(event: Any, context: Any, clock: Clock, default_timeout: float) -> Invocation:
    body = _json_object(event, "event")
    trigger = "manual"
    if _is_fc_timer(body):
        trigger, body = "timer", _json_object(body.get("payload"), "event.payload")
    timeout: Optional[float] = getattr(context, "timeout", None) if context is not None else None
    return Invocation(
        platform="local",
        trigger=trigger,
        options=body,
        deadline=Deadline(float(timeout or default_timeout), clock),
        request_id=str(getattr(context, "request_id", "") or uuid.uuid4()),
        raw_event=event,
    )
