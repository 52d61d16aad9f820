"""Drain function entry point (Function Compute and Lambda): `functions.drain.handler`.

Thin on purpose: adapt the platform, validate the event and settings, run the drain,
log the summary, emit the run's metrics and return the summary, or raise `RunFailed`
(carrying it) when the run failed, so the platform counts a failed invocation.
Everything else lives in shared/.
"""
from __future__ import annotations

from typing import Any

from shared.logs import bind_invocation, get_logger, with_lambda_context
from shared.metrics import emit_drain_metrics, failure_metric
from shared.platform import EventError, RunFailed, adapt
from shared.runtime import drain_runtime

logger = get_logger()


class _TimerRun:
    """A timer tick or an empty manual event: nothing narrows the run."""

    message_types = max_messages = wait_seconds = parent = None
    worker = False


def _parse_options(options: dict) -> Any:
    if not options:
        return _TimerRun()  # the common case: no event model to build at cold start
    from shared.events import DrainEvent, parse_event

    return parse_event(DrainEvent, options)


@with_lambda_context(logger)
def handler(event: Any, context: Any) -> dict[str, Any]:
    invocation = adapt(event, context)
    given = invocation.deadline.remaining()  # the platform's time for this invocation, before any work
    bind_invocation(logger, invocation)
    with failure_metric(invocation):
        request = _parse_options(invocation.options)
        runtime = drain_runtime()
        settings = runtime.settings
        settings.check_timeout(given, "drain")  # not the time left after a slow runtime build
        message_types = request.message_types or settings.message_types
        missing = [t for t in message_types if settings.queue_name(t) is None]
        if missing:
            raise EventError(f"invalid event: message_types: no queue name configured for {missing} "
                             "(set ALICOM_UID or ALICOM_QUEUE_NAMES)")
        drain = runtime.drain(logger=logger, wait_seconds=request.wait_seconds)
        if request.worker:
            logger.append_keys(worker_of=request.parent)
        else:  # the logger outlives the invocation in a warm container
            logger.remove_keys(["worker_of"])
        # Only a scheduled run fans out; its workers (and manual runs) never do.
        fan_out = runtime.fan_out(invocation, logger) if invocation.trigger == "timer" and not request.worker else None
        summary = drain.run(message_types, invocation.deadline, request.max_messages, fan_out)
    result = summary.as_dict()
    result["request_id"] = invocation.request_id
    result["sink"] = settings.sink
    log = logger.info if summary.ok else logger.error
    log("drain run finished", extra={"summary": result})
    emit_drain_metrics(invocation, result)
    if not summary.ok:
        raise RunFailed("drain", result)
    return result
