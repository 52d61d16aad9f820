"""Run metrics and correlation ids on both clouds: EMF on Lambda, one JSON line per set on FC.

A real drain (emulator + file sink) runs through the real handler; everything it prints is
captured (log lines included) and parsed. The numbers are checked against the run
summary and the summary against what the sink holds.
"""
from __future__ import annotations

import json
import sys
import time
import uuid
from collections import Counter
from types import SimpleNamespace

import pytest

from functions.drain import handler
from scripts.receipts import BAD_BODIES, make_receipts
from shared import metrics
from shared.logs import get_logger, is_lambda_context
from shared.platform import Invocation, RunFailed
from shared.clock import Deadline
from shared.sinks.file import FileSink
from tests.conftest import TYPES
from tests.contexts import fc_context

COUNTS = ("received", "stored", "dead_lettered", "deleted", "delete_failures")


class FullLambdaContext:
    """Every field the Lambda runtime's context has that Powertools reads."""

    def __init__(self, timeout: float = 60.0, name: str = "alicom-DrainFunction-AbC123"):
        self.aws_request_id = f"aws-{uuid.uuid4()}"
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:ap-southeast-1:123456789012:function:{name}"
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "2026/11/25/[$LATEST]abc"
        self._end = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return int((self._end - time.monotonic()) * 1000)


def fill(emulator, per_type: dict[str, int], bad: int = len(BAD_BODIES)) -> None:
    for mtype, n in per_type.items():
        for body in make_receipts(mtype, n, seed=5):
            emulator.enqueue_receipt(emulator.queue_name(mtype), body)
    for raw in BAD_BODIES[:bad]:
        emulator.enqueue(emulator.queue_name("SmsReport"), raw)


def output_objects(text: str) -> list[dict]:
    """Every JSON object line of the captured output (log lines, EMF blobs, metric lines)."""
    objects = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                objects.append(json.loads(line))
            except ValueError:
                pass
    return objects


def check_emf(blob: dict) -> dict:
    """The EMF specification's structural rules; returns the directive."""
    aws = blob["_aws"]
    assert isinstance(aws["Timestamp"], int) and aws["Timestamp"] > 1_600_000_000_000
    (directive,) = aws["CloudWatchMetrics"]
    assert isinstance(directive["Namespace"], str) and directive["Namespace"]
    for dimension_set in directive["Dimensions"]:
        assert 1 <= len(dimension_set) <= 30
        for name in dimension_set:
            assert isinstance(blob[name], str) and blob[name], name
    assert 1 <= len(directive["Metrics"]) <= 100
    for metric in directive["Metrics"]:
        assert isinstance(blob[metric["Name"]], (int, float, list)), metric
        assert metric["Unit"] in ("Count", "Seconds"), metric
    return directive


def metric_values(blob: dict) -> dict[str, float]:
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    values = {}
    for metric in directive["Metrics"]:
        value = blob[metric["Name"]]
        values[metric["Name"]] = value[0] if isinstance(value, list) else value
    return values


def sink_counts(path: str) -> tuple[Counter, int]:
    sink = FileSink(path)
    keys = {(r.message_type, r.key) for r in sink.iter_records()}
    return Counter(t for t, _ in keys), len(list(sink.iter_dead_letters()))


# -- Lambda: EMF ------------------------------------------------------------------------------

def test_lambda_run_prints_emf_that_matches_the_summary_and_the_sink(emulator, drain_env, captured, monkeypatch):
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE", raising=False)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "alicom-drain")  # as template.yml sets it
    env = drain_env()
    per_type = {"SmsReport": 37, "SmsUp": 20, "VoiceReport": 9}  # VoiceCallReport: nothing
    fill(emulator, per_type)
    context = FullLambdaContext()
    captured.readouterr()
    started_ms = time.time() * 1000
    result = handler({}, context)
    finished_ms = time.time() * 1000
    out = output_objects(captured.readouterr().out)

    blobs = [o for o in out if "_aws" in o]
    assert len(blobs) == len(TYPES) + 1, "one EMF blob per message type and one for the run"
    by_type = {b["message_type"]: b for b in blobs if "message_type" in b}
    assert set(by_type) == set(TYPES)
    (run_blob,) = [b for b in blobs if "message_type" not in b]
    for blob in blobs:
        directive = check_emf(blob)
        assert directive["Namespace"] == "AlicomDrain"
        assert blob["function"] == context.function_name
        assert "service" not in blob  # POWERTOOLS_SERVICE_NAME must not add a dimension the alarms don't name

    for mtype, blob in by_type.items():
        directive = blob["_aws"]["CloudWatchMetrics"][0]
        assert directive["Dimensions"] == [["function", "message_type"], ["function"]]
        stats = result["types"][mtype]
        values = metric_values(blob)
        for name in COUNTS:
            assert values[name] == stats[name], (mtype, name)
        for api, calls in stats["api_calls"].items():
            assert values[f"api_calls_{api}"] == calls
        units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
        if stats["received"]:
            lag = values["queue_lag_seconds"]
            assert units["queue_lag_seconds"] == "Seconds"
            # Enqueued just before the run: lag between "enqueue" and "emitted", within the test's own clock.
            assert 0 <= lag <= (finished_ms - stats["oldest_enqueue_ms"]) / 1000 + 0.01
            assert lag >= (started_ms - stats["oldest_enqueue_ms"]) / 1000 - 0.01
        else:
            assert "queue_lag_seconds" not in values, "no lag when nothing was received"

    assert run_blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["function"]]
    run = metric_values(run_blob)
    assert run["run_duration_seconds"] == result["elapsed_seconds"]
    assert run["time_left_at_exit_seconds"] == result["remaining_seconds_at_exit"]
    assert run["run_failed"] == 0
    assert run["api_calls_QueryTokenForMnsQueue"] == result["totals"]["api_calls"]["QueryTokenForMnsQueue"] >= 1

    # The summary's counts are what the sink holds.
    stored, dead = sink_counts(env["SINK_PATH"])
    assert {t: result["types"][t]["stored"] for t in TYPES} == {t: stored.get(t, 0) for t in TYPES}
    assert {t: n for t, n in stored.items()} == per_type
    assert result["totals"]["dead_lettered"] == dead == len(BAD_BODIES)
    assert result["types"]["SmsReport"]["received"] == per_type["SmsReport"] + len(BAD_BODIES)

    # One log line per run with the summary, correlated by the Lambda request id through
    # Powertools' inject_lambda_context (function_request_id, cold_start come from it).
    (finished,) = [o for o in out if o.get("message") == "drain run finished"]
    assert finished["correlation_id"] == context.aws_request_id == finished["function_request_id"]
    assert finished["function_name"] == context.function_name and "cold_start" in finished
    assert finished["summary"]["totals"]["stored"] == sum(per_type.values())


def test_fc_line_carries_the_same_numbers_as_the_emf_blobs(emulator, drain_env, captured):
    drain_env()
    fill(emulator, {"SmsReport": 20, "SmsUp": 5}, bad=2)
    context = FullLambdaContext()
    captured.readouterr()
    result = handler({}, context)
    blobs = [o for o in output_objects(captured.readouterr().out) if "_aws" in o]
    now_ms = blobs[0]["_aws"]["Timestamp"]
    invocation = SimpleNamespace(platform="fc", request_id=result["request_id"], function_name=context.function_name)
    sets = metrics.drain_metric_sets(result, invocation.function_name, now_ms)
    lines = [metrics.to_line(s, "fc", invocation.request_id, now_ms) for s in sets]
    emf_by_key = {b.get("message_type", "*"): metric_values(b) for b in blobs}
    for line in lines:
        numbers = {k: v for k, v in line.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and k != "timestamp_ms"}
        assert numbers == emf_by_key[line.get("message_type", "*")], line


def test_fc_run_prints_one_line_per_type_and_correlates_logs_by_request_id(emulator, drain_env, captured):
    env = drain_env()
    fill(emulator, {"SmsReport": 18, "VoiceCallReport": 4}, bad=1)
    context = fc_context(timeout=30)
    captured.readouterr()
    result = handler(b'{"message_types": ["SmsReport", "VoiceCallReport"]}', context)
    out = output_objects(captured.readouterr().out)
    assert not [o for o in out if "_aws" in o], "no EMF off Lambda"
    lines = [o for o in out if o.get("metric_set") == metrics.DRAIN_TYPE_SET]
    assert sorted(line["message_type"] for line in lines) == ["SmsReport", "VoiceCallReport"]
    for line in lines:
        stats = result["types"][line["message_type"]]
        assert line["platform"] == "fc" and line["request_id"] == context.request_id
        assert line["function"] == "alicom-drain"
        assert {k: line[k] for k in COUNTS} == {k: stats[k] for k in COUNTS}
        assert line["api_calls_BatchReceiveMessage"] == stats["api_calls"]["BatchReceiveMessage"]
        assert line["queue_lag_seconds"] >= 0
    (total,) = [o for o in out if o.get("metric_set") == metrics.DRAIN_RUN_SET]
    assert total["run_failed"] == 0 and total["ok"] is True
    assert total["run_duration_seconds"] == result["elapsed_seconds"]
    stored, dead = sink_counts(env["SINK_PATH"])
    assert stored == Counter({"SmsReport": 18, "VoiceCallReport": 4}) and dead == 1
    assert sum(line["stored"] for line in lines) == sum(stored.values())
    # Every log line of the invocation carries FC's request id as the correlation id.
    logs = [o for o in out if "level" in o]
    assert logs and all(o.get("correlation_id") == context.request_id for o in logs)
    assert not is_lambda_context(context)


def test_a_partial_lambda_like_context_falls_back_to_our_adapter(emulator, drain_env, captured):
    from tests.contexts import LambdaContext  # no memory size / ARN: the decorator would raise

    drain_env()
    context = LambdaContext(timeout=20)
    assert not is_lambda_context(context)
    captured.readouterr()
    result = handler({"message_types": ["SmsUp"]}, context)
    out = output_objects(captured.readouterr().out)
    (finished,) = [o for o in out if o.get("message") == "drain run finished"]
    assert finished["correlation_id"] == context.aws_request_id == result["request_id"]
    assert [o for o in out if "_aws" in o], "still a Lambda invocation: EMF"


# -- failures -----------------------------------------------------------------------------------

def test_a_failed_run_reports_run_failed(emulator, drain_env, tmp_path, captured):
    blocker = tmp_path / "blocker"  # a usable SINK_PATH whose partition cannot be created
    blocker.mkdir()
    (blocker / "type=SmsReport").write_text("a file where the sink wants a directory")
    drain_env(SINK_PATH=str(blocker))
    fill(emulator, {"SmsReport": 3}, bad=0)
    captured.readouterr()
    with pytest.raises(RunFailed):
        handler({}, FullLambdaContext())
    blobs = [o for o in output_objects(captured.readouterr().out) if "_aws" in o]
    (run_blob,) = [b for b in blobs if "message_type" not in b]
    assert metric_values(run_blob)["run_failed"] == 1


def test_a_run_that_raises_reports_run_failed_and_still_raises(emulator, drain_env, monkeypatch, captured):
    from shared.settings import SettingsError

    drain_env()
    monkeypatch.delenv("SINK")
    captured.readouterr()
    with pytest.raises(SettingsError):
        handler(b"{}", fc_context())
    out = output_objects(captured.readouterr().out)
    (line,) = [o for o in out if o.get("metric_set") == metrics.DRAIN_RUN_SET]
    assert line["run_failed"] == 1 and line["error_type"] == "SettingsError" and line["ok"] is False


def test_a_metrics_failure_is_logged_and_swallowed(emulator, drain_env, monkeypatch, captured):
    drain_env()
    fill(emulator, {"SmsReport": 4}, bad=0)

    def broken(*args, **kwargs):
        raise RuntimeError("metrics backend exploded")

    monkeypatch.setattr(metrics, "drain_metric_sets", broken)
    captured.readouterr()
    result = handler({}, FullLambdaContext())
    assert result["ok"] and result["totals"]["stored"] == 4
    out = output_objects(captured.readouterr().out)
    (warning,) = [o for o in out if o.get("message") == "metrics not emitted"]
    assert "exploded" in warning["error"] and warning["level"] == "WARNING"


def test_powertools_metrics_disabled_silences_both_shapes(emulator, drain_env, monkeypatch, captured):
    drain_env()
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    captured.readouterr()
    handler({}, FullLambdaContext())
    handler(b"{}", fc_context())
    out = output_objects(captured.readouterr().out)
    assert not [o for o in out if "_aws" in o or "metric_set" in o]


def test_namespace_comes_from_powertools_variable(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "AlicomDrainStaging")
    result = {"ok": True, "elapsed_seconds": 1.5, "remaining_seconds_at_exit": 40.0,
              "totals": {"api_calls": {}}, "types": {}}
    (run,) = metrics.drain_metric_sets(result, "f", 1_800_000_000_000)
    assert metrics.to_emf(run)["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "AlicomDrainStaging"


# -- reconcile -----------------------------------------------------------------------------------

RECONCILE_REPORT = {
    "ok": True, "stop_reason": "done", "request_id": "r-1",
    "targets": 12, "found": 9, "still_unknown": 3, "written": 9,
    "api_calls": {"QuerySendDetails": 14}, "elapsed_seconds": 2.25,
    "unknown": {"13812345678": 1},  # data keyed by phone: never a metric name
    "errors": {"isv.BUSINESS_LIMIT_CONTROL": 2},
}


def invocation(platform: str) -> Invocation:
    return Invocation(platform=platform, trigger="timer", payload={}, deadline=Deadline(10),
                      request_id=f"{platform}-req-1", function_name="alicom-reconcile")


def test_reconcile_counts_as_emf_on_lambda(capsys):
    metrics.emit_reconcile_metrics(invocation("lambda"), RECONCILE_REPORT)
    (blob,) = output_objects(capsys.readouterr().out)
    directive = check_emf(blob)
    assert directive["Dimensions"] == [["function"]] and blob["function"] == "alicom-reconcile"
    values = metric_values(blob)
    assert values == {"targets": 12, "found": 9, "still_unknown": 3, "written": 9,
                      "api_calls_QuerySendDetails": 14, "elapsed_seconds": 2.25,
                      "errors_isv.BUSINESS_LIMIT_CONTROL": 2, "run_failed": 0}
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]}["elapsed_seconds"] == "Seconds"
    assert "13812345678" not in json.dumps(blob)


def test_reconcile_counts_as_one_line_on_fc(capsys):
    metrics.emit_reconcile_metrics(invocation("fc"), dict(RECONCILE_REPORT, ok=False))
    (line,) = output_objects(capsys.readouterr().out)
    assert line["metric_set"] == metrics.RECONCILE_RUN_SET and line["platform"] == "fc"
    assert line["request_id"] == "fc-req-1" and line["found"] == 9 and line["run_failed"] == 1
    assert line["stop_reason"] == "done"


def test_reconcile_metrics_never_raise(captured):
    metrics.emit_reconcile_metrics(invocation("lambda"), None)  # not even a mapping
    out = output_objects(captured.readouterr().out)
    assert [o for o in out if o.get("message") == "metrics not emitted"]


# -- the alarm fragment ------------------------------------------------------------------------

def merged_template() -> dict:
    """template.yml, which carries the alarm fragment (scripts/deploy/alarms-aws.yml) merged in."""
    from samtranslator.yaml_helper import yaml_parse

    from tests.templates_tooling import TEMPLATE

    template = yaml_parse(TEMPLATE.read_text())
    fragment = yaml_parse((TEMPLATE.parent / "scripts" / "deploy" / "alarms-aws.yml").read_text())
    for section in ("Parameters", "Conditions", "Resources"):
        missing = set(fragment[section]) - set(template.get(section, {}))
        assert not missing, f"template.yml lacks the alarm fragment's {section}: {sorted(missing)}"
    return template


def test_alarm_fragment_merges_into_template_and_lints_clean():
    from cfnlint.api import ManualArgs, lint

    text = json.dumps(merged_template(), indent=1)
    matches = lint(text, config=ManualArgs(regions=["us-east-1", "ap-southeast-1", "cn-north-1"]))
    assert not matches, "cfn-lint:\n" + "\n".join(f"{m.rule.id} {m.path}: {m.message}" for m in matches)


@pytest.mark.parametrize("parameters, topic", [
    ({}, None),
    ({"AlarmEmail": "ops@example.com"}, "created"),
    ({"AlarmTopicArn": "arn:aws:sns:ap-southeast-1:123456789012:ops"}, "arn:aws:sns:ap-southeast-1:123456789012:ops"),
    ({"AlarmEmail": "ops@example.com", "AlarmTopicArn": "arn:aws:sns:ap-southeast-1:123456789012:ops"},
     "arn:aws:sns:ap-southeast-1:123456789012:ops"),
])
def test_alarms_watch_what_the_code_emits_and_notify_the_chosen_topic(parameters, topic):
    from tests.templates_tooling import Cfn

    template = merged_template()
    cfn = Cfn(template, parameters)
    emitted = {"dead_lettered", "queue_lag_seconds", "run_failed"}  # names shared/metrics.py emits
    result = {"ok": True, "elapsed_seconds": 1, "remaining_seconds_at_exit": 1, "totals": {"api_calls": {}},
              "types": {"SmsReport": {"received": 1, "oldest_enqueue_ms": 1, "api_calls": {}}}}
    names = {n for s in metrics.drain_metric_sets(result, "f", 2) for n in s.metrics}
    assert emitted <= names
    namespace = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    alarms = {k: r for k, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    ours = {k: r["Properties"] for k, r in alarms.items() if r["Properties"]["Namespace"] != "AWS/Lambda"}
    assert {p["MetricName"] for p in ours.values()} == emitted
    for props in ours.values():
        assert props["Namespace"] == namespace == metrics.DEFAULT_NAMESPACE
        # The [function] roll-up dimension set: one alarm covers every message type.
        assert props["Dimensions"] == [{"Name": "function", "Value": {"Ref": "DrainFunction"}}]
    assert cfn.eval(alarms["QueueLagAlarm"]["Properties"]["Threshold"]) == "600"
    actions = cfn.eval(alarms["DeadLettersAlarm"]["Properties"]["AlarmActions"])
    if topic is None:
        assert actions is None and not cfn.condition("CreateAlarmTopic")
    elif topic == "created":
        assert cfn.condition("CreateAlarmTopic") and actions == [cfn.ref("AlarmTopic")]
    else:
        assert not cfn.condition("CreateAlarmTopic") and actions == [topic]
    assert cfn.condition("HasAlarmEmail") == ("AlarmEmail" in parameters)
