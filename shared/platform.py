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
from typing import Any, Optional

import msgspec

from shared.clock import SYSTEM_CLOCK, Clock, Deadline
from shared.structs import repr_hiding

# A manual event is a handful of fields (a reconcile event may list up to 100,000 phone
# numbers, about 2 MB): anything far larger or deeper is not an event of ours. 6 MB is
# Lambda's own payload limit for a synchronous invoke.
MAX_EVENT_BYTES = 6 * 1024 * 1024
MAX_EVENT_DEPTH = 16


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


class Invocation(msgspec.Struct):
    platform: str  # "fc" | "lambda" | "local"
    trigger: str  # "timer" | "manual"
    payload: dict[str, Any]  # the manual/timer payload (validated by the function's own model)
    deadline: Deadline
    request_id: str
    function_name: str = ""
    function_arn: str = ""  # Lambda's invoked function ARN (with its qualifier), for a self-invocation
    raw_event: Any = None
    event_error: Optional[EventError] = None  # the event could not be read: raised by `options`

    __repr__ = repr_hiding("raw_event")  # the event may hold phone numbers

    @property
    def options(self) -> dict[str, Any]:
        """The payload; raises EventError for an unreadable event (inside the handler's failure
        metric, so a bad event counts as a failed run)."""
        if self.event_error is not None:
            raise self.event_error
        return self.payload


def _json_object(data: Any, where: str) -> dict[str, Any]:
    if isinstance(data, (bytes, bytearray, str)) and len(data) > MAX_EVENT_BYTES:
        raise EventError(f"invalid event: {where}: {len(data):,} bytes; at most {MAX_EVENT_BYTES:,}")
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise EventError(f"invalid event: {where}: not UTF-8 JSON") from None
    if isinstance(data, str):
        if not data.strip():
            return {}
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise EventError(f"invalid event: {where}: not valid JSON ({exc})") from None
        except RecursionError:  # the parser recurses: far deeper than any event of ours
            raise EventError(f"invalid event: {where}: nested more than {MAX_EVENT_DEPTH} levels deep") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EventError(f"invalid event: {where}: must be a JSON object, got {type(data).__name__}")
    _check_nesting(data, where)
    return data


def _check_nesting(data: Any, where: str) -> None:
    """The same for an event the platform parsed already (Lambda), without recursion."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_EVENT_DEPTH:
            raise EventError(f"invalid event: {where}: nested more than {MAX_EVENT_DEPTH} levels deep")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _is_fc_timer(event: dict[str, Any]) -> bool:
    return "triggerTime" in event and "triggerName" in event


def _is_aws_schedule(event: dict[str, Any]) -> bool:
    return event.get("source") == "aws.events" or event.get("detail-type") == "Scheduled Event"


def adapt(event: Any, context: Any, clock: Clock = SYSTEM_CLOCK, default_timeout: float = 60.0) -> Invocation:
    """Recognise the platform from the context and normalise the event."""
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        return _from_lambda(event, context, clock)
    if (context is not None and getattr(context, "function", None) is not None
            and isinstance(event, (bytes, bytearray, str))):
        return _from_fc(event, context, clock)
    return _from_local(event, context, clock, default_timeout)


def _read(event: Any, read) -> tuple[str, dict[str, Any], Optional[EventError]]:
    """(trigger, payload, error): an unreadable event is kept as an error, raised later by
    `Invocation.options` once the handler counts failures."""
    try:
        trigger, body = read(event)
        return trigger, body, None
    except EventError as exc:
        return "manual", {}, exc


def _fc_event(event: Any) -> tuple[str, dict[str, Any]]:
    body = _json_object(event, "event")
    if _is_fc_timer(body):
        return "timer", _json_object(body.get("payload"), "event.payload")
    return "manual", body


def _lambda_event(event: Any) -> tuple[str, dict[str, Any]]:
    body = _json_object(event, "event")
    if _is_aws_schedule(body):
        # A classic EventBridge rule without Input: nothing to narrow the run with.
        return "timer", {}
    if body.get("_trigger") == "schedule":
        # Our EventBridge Scheduler input marks itself so summaries say "timer".
        return "timer", {k: v for k, v in body.items() if k != "_trigger"}
    return "manual", body


def _from_fc(event: Any, context: Any, clock: Clock) -> Invocation:
    trigger, body, error = _read(event, _fc_event)
    timeout = float(getattr(context.function, "timeout", 0) or 60)
    return Invocation(
        platform="fc",
        trigger=trigger,
        payload=body,
        event_error=error,
        deadline=Deadline(timeout, clock),
        request_id=str(getattr(context, "request_id", "") or uuid.uuid4()),
        function_name=str(getattr(context.function, "name", "") or ""),
        raw_event=event,
    )


def _from_lambda(event: Any, context: Any, clock: Clock) -> Invocation:
    trigger, body, error = _read(event, _lambda_event)
    return Invocation(
        platform="lambda",
        trigger=trigger,
        payload=body,
        event_error=error,
        deadline=Deadline(context.get_remaining_time_in_millis() / 1000.0, clock),
        request_id=str(getattr(context, "aws_request_id", "") or uuid.uuid4()),
        function_name=str(getattr(context, "function_name", "") or ""),
        function_arn=str(getattr(context, "invoked_function_arn", "") or ""),
        raw_event=event,
    )


def _from_local(event: Any, context: Any, clock: Clock, default_timeout: float) -> Invocation:
    trigger, body, error = _read(event, _fc_event)
    timeout: Optional[float] = getattr(context, "timeout", None) if context is not None else None
    return Invocation(
        platform="local",
        trigger=trigger,
        payload=body,
        event_error=error,
        deadline=Deadline(float(timeout or default_timeout), clock),
        request_id=str(getattr(context, "request_id", "") or uuid.uuid4()),
        raw_event=event,
    )
