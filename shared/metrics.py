"""Run metrics: CloudWatch EMF on Lambda, one structured JSON line per set elsewhere (FC, local).

The same numbers, two shapes (README.md "Observability" has the queries and alarms):

- Lambda: Powertools' `EphemeralMetrics` (EMF, printed to stdout, where CloudWatch Logs
  turns it into metrics). Namespace from POWERTOOLS_METRICS_NAMESPACE (default
  `AlicomDrain`). One blob per message type with the dimension sets
  [function, message_type] and [function] (the second sums/maxes across types, which is
  what the alarms watch), plus one run-level blob with dimensions [function].
- Function Compute and local runs: one JSON line per message type
  (`metric_set: alicom_drain_run`) and one per run (`metric_set: alicom_drain_run_total`)
  that a Log Service (SLS) dashboard or alert queries by field.

Emitting never raises into the handler: a failure is logged and swallowed.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional, cast

import msgspec

from shared.logs import get_logger

DEFAULT_NAMESPACE = "AlicomDrain"
DRAIN_TYPE_SET = "alicom_drain_run"  # one per message type and run
DRAIN_RUN_SET = "alicom_drain_run_total"  # one per run
RECONCILE_RUN_SET = "alicom_reconcile_run"

COUNT, SECONDS = "Count", "Seconds"
TYPE_COUNTS = ("received", "stored", "dead_lettered", "deleted", "delete_failures")
EMF_MAX_METRICS = 100  # CloudWatch's limit per EMF blob

logger = get_logger()


class MetricSet(msgspec.Struct):
    """One EMF blob or one FC line: a name, its dimensions, and metric -> (value, unit)."""

    name: str
    dimensions: dict[str, str]
    metrics: dict[str, tuple[float, str]]
    rollup: tuple[str, ...] = ()  # an extra, coarser EMF dimension set (e.g. ("function",))
    properties: dict[str, Any] = msgspec.field(default_factory=dict)  # FC line / EMF metadata, not metrics

    def values(self) -> dict[str, float]:
        return {name: value for name, (value, _) in self.metrics.items()}


# -- building the sets (pure: tests compare these with what was printed) -----------------

def drain_metric_sets(result: Mapping[str, Any], function: str, now_ms: Optional[int] = None) -> list[MetricSet]:
    """The metric sets of one drain run, from `RunSummary.as_dict()` (the handler's result)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    sets = []
    for mtype, stats in (result.get("types") or {}).items():
        metrics = {name: (_number(stats.get(name)), COUNT) for name in TYPE_COUNTS}
        for api, calls in sorted((stats.get("api_calls") or {}).items()):
            metrics[f"api_calls_{api}"] = (_number(calls), COUNT)
        backlog = stats.get("backlog") or {}
        metrics["backlog"] = (1 if backlog.get("detected") else 0, COUNT)  # the queue is not keeping up
        metrics["receive_rate"] = (_number(backlog.get("rate_per_second")), COUNT)  # messages per second
        oldest = stats.get("oldest_enqueue_ms")
        if stats.get("received") and oldest:
            # How long the oldest message we took had waited in the queue (omitted when none came).
            metrics["queue_lag_seconds"] = (round(max(0.0, (now_ms - int(oldest)) / 1000.0), 3), SECONDS)
        sets.append(MetricSet(DRAIN_TYPE_SET, {"function": function, "message_type": mtype}, metrics,
                              rollup=("function",), properties={"stop_reason": stats.get("stop_reason", "")}))
    token_calls = ((result.get("totals") or {}).get("api_calls") or {}).get("QueryTokenForMnsQueue", 0)
    run = {
        "run_duration_seconds": (_number(result.get("elapsed_seconds")), SECONDS),
        "time_left_at_exit_seconds": (_number(result.get("remaining_seconds_at_exit")), SECONDS),
        "run_failed": (0 if result.get("ok", True) else 1, COUNT),
        "api_calls_QueryTokenForMnsQueue": (_number(token_calls), COUNT),
    }
    fan_out = result.get("fan_out")
    if fan_out:
        run["workers_invoked"] = (_number(fan_out.get("invoked")), COUNT)
        run["worker_invoke_failures"] = (_number(fan_out.get("failed")), COUNT)
    sets.append(MetricSet(DRAIN_RUN_SET, {"function": function}, run,
                          properties={"stop_reason": result.get("stop_reason", ""),
                                      "ok": bool(result.get("ok", True))}))
    return sets


def failed_run_set(function: str, error: BaseException, set_name: str = DRAIN_RUN_SET) -> MetricSet:
    """A run that raised before it had a summary (bad settings, bad event, a bug)."""
    return MetricSet(set_name, {"function": function}, {"run_failed": (1, COUNT)},
                     properties={"ok": False, "error_type": type(error).__name__})


def reconcile_metric_sets(report: Mapping[str, Any], function: str) -> list[MetricSet]:
    """Every number in a reconcile report, flattened (`targets.found` -> `targets_found`).

    Generic on purpose: the reconcile report may grow fields without touching this module.
    Booleans are not counts; `ok` becomes `run_failed` (0/1). Seconds are recognised by name.
    """
    metrics: dict[str, tuple[float, str]] = {}
    for name, value in _flatten(report):
        if len(metrics) >= EMF_MAX_METRICS - 1:
            break
        unit = SECONDS if name.endswith(("seconds", "_s")) or name in ("elapsed", "duration") else COUNT
        metrics[name] = (value, unit)
    if "ok" in report:
        metrics["run_failed"] = (0 if report.get("ok") else 1, COUNT)
    props = {k: report[k] for k in ("stop_reason", "ok") if k in report and isinstance(report[k], (str, bool))}
    return [MetricSet(RECONCILE_RUN_SET, {"function": function}, metrics, properties=props)]


_LONG_DIGITS = re.compile(r"\d{7,}")


def _flatten(data: Mapping[str, Any], prefix: str = "", depth: int = 0) -> Iterator[tuple[str, float]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        # Keys that are data (a phone number, an id) are not metric names: skip them whole.
        if isinstance(value, bool) or key == "request_id" or _LONG_DIGITS.search(str(key)):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            yield _metric_name(name), value
        elif isinstance(value, Mapping) and depth < 2:
            yield from _flatten(value, name + "_", depth + 1)


def _metric_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_-." else "_" for c in name)
    return cleaned[:255]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return value


# -- the two shapes ------------------------------------------------------------------------

def namespace() -> str:
    return os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE


def to_emf(metric_set: MetricSet, now_ms: Optional[int] = None, ns: Optional[str] = None) -> dict[str, Any]:
    """One EMF blob through Powertools' non-singleton metrics provider."""
    from aws_lambda_powertools.metrics import EphemeralMetrics

    # service="": no implicit `service` dimension from POWERTOOLS_SERVICE_NAME, so the
    # dimension sets are exactly the documented ones (the alarms name them).
    emf = EphemeralMetrics(namespace=ns or namespace(), service="")
    for name, dimension in metric_set.dimensions.items():
        emf.add_dimension(name=name, value=dimension)
    for name, (value, unit) in metric_set.metrics.items():
        emf.add_metric(name=name, unit=unit, value=value)
    if now_ms is not None:
        emf.set_timestamp(int(now_ms))
    blob = cast(dict[str, Any], emf.serialize_metric_set())  # a TypedDict without our extra key
    if metric_set.rollup:
        # A second dimension set on the same values: CloudWatch aggregates it across types.
        dims = blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
        if list(metric_set.rollup) not in dims:
            dims.append(list(metric_set.rollup))
    blob["metric_set"] = metric_set.name  # plain property: searchable in Logs Insights
    return blob


def to_line(metric_set: MetricSet, platform: str, request_id: str, now_ms: Optional[int] = None) -> dict[str, Any]:
    """One structured log line for Log Service: the set's name, dimensions and numbers at top level."""
    line: dict[str, Any] = {
        "metric_set": metric_set.name,
        "timestamp_ms": int(time.time() * 1000) if now_ms is None else int(now_ms),
        "platform": platform,
        "request_id": request_id,
    }
    line.update(metric_set.dimensions)
    line.update(metric_set.properties)
    line.update(metric_set.values())
    return line


def render(sets: list[MetricSet], platform: str, request_id: str, now_ms: Optional[int] = None) -> list[str]:
    """The lines to print: EMF on Lambda, the FC-style line on FC and locally."""
    if platform == "lambda":
        return [json.dumps(to_emf(s, now_ms), separators=(",", ":")) for s in sets]
    return [json.dumps(to_line(s, platform, request_id, now_ms), ensure_ascii=False, separators=(",", ":"))
            for s in sets]


def _disabled() -> bool:
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled

    return is_metrics_disabled()


def _print(lines: list[str], stream=None) -> None:
    out = stream or sys.stdout
    out.write("".join(line + "\n" for line in lines))
    out.flush()


# -- what the handlers call (never raises) --------------------------------------------------

def _function_name(invocation: Any, default: str) -> str:
    return str(getattr(invocation, "function_name", "") or default)


def emit_drain_metrics(invocation: Any, result: Mapping[str, Any], now_ms: Optional[int] = None, stream=None) -> None:
    """Print the drain run's metrics for the invocation's platform. Logs and swallows any failure."""
    try:
        if _disabled():
            return
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        sets = drain_metric_sets(result, _function_name(invocation, "alicom-drain"), now_ms)
        _print(render(sets, invocation.platform, invocation.request_id, now_ms), stream)
    except Exception as exc:  # metrics must never fail a run that stored receipts
        logger.warning("metrics not emitted", extra={"error": f"{type(exc).__name__}: {exc}"})


def emit_reconcile_metrics(invocation: Any, report: Mapping[str, Any], now_ms: Optional[int] = None,
                           stream=None) -> None:
    """Print a reconcile run's counts (every number in `report`). Logs and swallows any failure."""
    try:
        if _disabled():
            return
        sets = reconcile_metric_sets(report, _function_name(invocation, "alicom-reconcile"))
        if not sets[0].metrics:
            return
        _print(render(sets, invocation.platform, invocation.request_id, now_ms), stream)
    except Exception as exc:
        logger.warning("metrics not emitted", extra={"error": f"{type(exc).__name__}: {exc}"})


def emit_failed_run(invocation: Any, error: BaseException, default_function: str = "alicom-drain",
                    set_name: str = DRAIN_RUN_SET, stream=None) -> None:
    """`run_failed = 1` for a run that raised. Logs and swallows any failure of its own."""
    try:
        if _disabled():
            return
        metric_set = failed_run_set(_function_name(invocation, default_function), error, set_name)
        _print(render([metric_set], invocation.platform, invocation.request_id), stream)
    except Exception as exc:
        logger.warning("metrics not emitted", extra={"error": f"{type(exc).__name__}: {exc}"})


@contextmanager
def failure_metric(invocation: Any, default_function: str = "alicom-drain", set_name: str = DRAIN_RUN_SET):
    """Emit `run_failed = 1` if the block raises; the exception goes on to the platform."""
    try:
        yield
    except Exception as exc:
        emit_failed_run(invocation, exc, default_function, set_name)
        raise
