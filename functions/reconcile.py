"""Reconcile function entry point (Function Compute and Lambda): `functions.reconcile.handler`.

Thin on purpose: adapt the platform, validate the event (before any API call), read the
settings, run the reconcile logic in shared/, log and return the report, or raise
`RunFailed` (carrying it) when the run failed.

Events (shared/reconcile.py has the forms and their limits):
  {} or a timer / schedule           work the send ledger
  {"dates": ["2026-11-20"], "phones": ["13800000000"], "biz_id": "..."}
  {"date_from": "2026-11-18", "date_to": "2026-11-20", "phones_file": "sink:reconcile/phones.txt"}
  {"targets": [{"date": "2026-11-20", "phones": [...]}]}   (a previous run's `unreached`)
"""
from __future__ import annotations

from typing import Any

from shared.logs import bind_invocation, get_logger, with_lambda_context
from shared.metrics import RECONCILE_RUN_SET, emit_reconcile_metrics, failure_metric
from shared.platform import RunFailed, adapt
from shared.reconcile import expand_targets, log_safe, parse_reconcile_event, read_phones_file
from shared.runtime import reconcile_runtime

logger = get_logger()


@with_lambda_context(logger)
def handler(event: Any, context: Any) -> dict[str, Any]:
    invocation = adapt(event, context)
    given = invocation.deadline.remaining()  # the platform's time for this invocation, before any work
    bind_invocation(logger, invocation)
    with failure_metric(invocation, "alicom-reconcile", RECONCILE_RUN_SET):
        options = dict(invocation.options)
        trigger = invocation.trigger
        if options.pop("_trigger", None) == "schedule":  # a scheduler's input seen outside Lambda's adapter
            trigger = "timer"
        logger.append_keys(trigger=trigger)
        request = parse_reconcile_event(options)
        runtime = reconcile_runtime()
        runtime.settings.check_timeout(given, "reconcile")
        reconciler = runtime.reconciler(logger=logger)
        if request.is_ledger_run:
            report = reconciler.run_ledger(invocation.deadline, request.max_targets)
        else:
            phones = read_phones_file(request.phones_file, runtime.sink) if request.phones_file else None
            report = reconciler.run_targets(expand_targets(request, phones), invocation.deadline, request.max_targets)
    result = report.as_dict()
    result["request_id"] = invocation.request_id
    result["trigger"] = trigger
    result["sink"] = runtime.settings.sink
    (logger.info if report.ok else logger.error)("reconcile run finished", extra={"summary": log_safe(result)})
    emit_reconcile_metrics(invocation, result)
    if not report.ok:
        raise RunFailed("reconcile", result)
    return result
