"""Issue 15: a scheduled run that finds its queues behind starts workers through the platform's own
invoke API (FC 3.0 and Lambda, both over real sockets to the emulator, through their real SDKs)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from functions.drain import handler
from scripts.receipts import make_receipts
from shared.sinks.sqlite import SqliteSink
from tests.conftest import AK, SECRET
from tests.contexts import LambdaContext, fc_context

REPO = Path(__file__).resolve().parents[1]
FC_TIMER = json.dumps({"triggerTime": "2026-12-01T02:00:00Z", "triggerName": "drain-timer", "payload": "{}"}).encode()
LAMBDA_TIMER = {"_trigger": "schedule"}


def fill(emulator, per_type: dict[str, int]) -> int:
    for mtype, n in per_type.items():
        for body in make_receipts(mtype, n, seed=5):
            emulator.enqueue_receipt(emulator.queue_name(mtype), body)
    return sum(per_type.values())


@pytest.fixture
def fan_out_env(emulator, drain_env, tmp_path, monkeypatch):
    """Fan-out to 4 runs, every full receive counting as behind; workers recorded, not run."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AK)  # the Lambda invoker signs with boto3's chain
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    db = tmp_path / "r.db"
    drain_env(SINK="sqlite", SINK_PATH=str(db), DRAIN_MAX_WORKERS="4", DRAIN_BACKLOG_SECONDS="0",
              DRAIN_INVOKE_ENDPOINT=emulator.url, ALICOM_MESSAGE_TYPES="SmsReport,SmsUp,VoiceReport")
    for name in ("alicom-drain", "DrainFunction"):
        emulator.register_function(name, lambda payload: b"null")
    return db


@pytest.mark.parametrize("platform", ["fc", "lambda"])
def test_a_backlog_starts_exactly_the_workers_asked_for_naming_the_types_behind(emulator, fan_out_env, platform):
    sent = fill(emulator, {"SmsReport": 200, "SmsUp": 200, "VoiceReport": 5})  # VoiceReport: never a full batch
    if platform == "fc":
        context, event, name, action = fc_context(timeout=30), FC_TIMER, "alicom-drain", "Fc3InvokeFunction"
    else:
        context, event, name, action = LambdaContext(timeout=30), LAMBDA_TIMER, "DrainFunction", "LambdaInvoke"
    result = handler(event, context)
    assert result["ok"] and result["totals"]["stored"] == sent, result
    payloads = [json.loads(p) for p in emulator.invocations(name)]
    assert payloads == [{"worker": True, "message_types": ["SmsReport", "SmsUp"], "parent": result["request_id"]}] * 3
    assert emulator.stats()[action] == 3
    assert result["fan_out"] == {"message_types": ["SmsReport", "SmsUp"], "workers": 3, "invoked": 3, "failed": 0,
                                 "errors": {}}
    types = result["types"]
    assert types["SmsReport"]["backlog"]["detected"] and not types["VoiceReport"]["backlog"]["detected"]


def test_an_empty_queue_or_a_fresh_one_starts_no_worker(emulator, fan_out_env, drain_env):
    result = handler(FC_TIMER, fc_context(timeout=20))  # nothing queued
    assert result["ok"] and result["fan_out"] is None and emulator.invocations("alicom-drain") == []
    drain_env(DRAIN_BACKLOG_SECONDS="3600")  # full batches, but nothing has waited an hour
    fill(emulator, {"SmsReport": 100})
    result = handler(FC_TIMER, fc_context(timeout=20))
    assert result["totals"]["stored"] == 100 and result["fan_out"] is None
    assert emulator.invocations("alicom-drain") == []


def test_workers_and_manual_runs_never_fan_out(emulator, fan_out_env):
    fill(emulator, {"SmsReport": 100})
    worker = handler(json.dumps({"worker": True, "message_types": ["SmsReport"], "parent": "x"}).encode(),
                     fc_context(timeout=20))
    assert worker["totals"]["stored"] == 100 and worker["fan_out"] is None
    fill(emulator, {"SmsUp": 100})
    manual = handler(b'{"message_types": ["SmsUp"]}', fc_context(timeout=20))
    assert manual["totals"]["stored"] == 100 and manual["fan_out"] is None
    assert emulator.invocations("alicom-drain") == []


def test_a_failed_invoke_is_counted_and_the_run_still_stores_what_it_received(emulator, fan_out_env, drain_env):
    drain_env(DRAIN_INVOKE_ENDPOINT=emulator.url)
    emulator.set_faults(throttle=1.0, apis=["functions"])  # the invoke API refuses every call
    sent = fill(emulator, {"SmsReport": 200, "SmsUp": 200})
    result = handler(FC_TIMER, fc_context(timeout=30))
    assert result["ok"] and result["totals"]["stored"] == sent, result
    assert result["fan_out"]["invoked"] == 0 and result["fan_out"]["failed"] == 3
    assert result["fan_out"]["errors"] == {"ResourceThrottled": 3}  # FC's own code, as its answer says
    assert emulator.invocations("alicom-drain") == []
    assert SqliteSink(str(fan_out_env)).count("records") == sent


@pytest.mark.parametrize("platform", ["fc", "lambda"])
def test_an_invoke_api_that_never_answers_costs_the_run_seconds_not_its_receipts(emulator, fan_out_env, platform):
    emulator.set_faults(hang=1.0, apis=["functions"])  # accepts every invoke, answers none
    sent = fill(emulator, {"SmsReport": 200, "SmsUp": 200})
    if platform == "fc":
        context, event = fc_context(timeout=30), FC_TIMER
    else:
        context, event = LambdaContext(timeout=30), LAMBDA_TIMER
    started = time.monotonic()
    result = handler(event, context)
    took = time.monotonic() - started
    assert result["ok"] and result["totals"]["stored"] == sent, result
    assert result["fan_out"]["invoked"] == 0 and result["fan_out"]["failed"] == 3, result["fan_out"]
    # Each invoke is given up after INVOKE_TIMEOUT (5 s), the three at once: the handler returns
    # long before the half of its 30 s that a hung invoke could otherwise hold it.
    assert took < 12, took
    assert SqliteSink(str(fan_out_env)).count("records") == sent


def test_an_invoke_api_that_never_answers_leaves_the_run_its_safety_margin(emulator, fan_out_env, drain_env):
    """Found with the chaos harness (fan-out parents past their deadline): the fan-out was bounded by
    the invocation's deadline itself, not by the safety margin as a sink write is. At the limit, 61
    workers invoked 8 at a time against an invoke API that accepts and never answers, each wave
    waits half the time left, and the run waited for the last wave until 0.4 s before its deadline."""
    # One consumer per queue lets 62 runs stay within the MNS undeleted-message budget.
    drain_env(DRAIN_MAX_WORKERS="62", DRAIN_CONCURRENCY="1", DRAIN_SAFETY_MARGIN_SECONDS="2")
    emulator.set_faults(hang=1.0, apis=["functions"])
    sent = fill(emulator, {"SmsReport": 200, "SmsUp": 200})
    started = time.monotonic()
    result = handler(FC_TIMER, fc_context(timeout=6))
    took = time.monotonic() - started
    assert result["ok"] and result["totals"]["stored"] == sent, result
    assert result["fan_out"]["invoked"] == 0 and result["fan_out"]["workers"] == 61
    # Ended with at least half the margin left (as a sink write must), and says so truly.
    left = result["remaining_seconds_at_exit"]
    assert took <= 6 - 0.6 and left >= 0.8, (took, left)
    assert left <= 6 - took + 0.5, (took, left)  # taken after the wait, not before it
    assert SqliteSink(str(fan_out_env)).count("records") == sent


def test_workers_run_as_processes_of_their_own_and_the_queue_ends_empty(emulator, fan_out_env, tmp_path):
    """The emulator runs each async invocation as a process (scripts.invoke_local), as the platform runs
    each in an instance: the scheduled run and its three workers share the backlog, and every receipt
    is stored once (one row per key in the table sink)."""
    import os

    emulator.register_process_function(
        "alicom-drain", [sys.executable, "-m", "scripts.invoke_local", "drain", "--platform", "fc",
                         "--timeout", "20", "--event"], env=dict(os.environ), cwd=str(REPO), log_dir=str(tmp_path / "logs"))
    emulator.set_latency(0.15)  # a backlog the scheduled run alone would need seconds for
    sent = fill(emulator, {"SmsReport": 2500, "SmsUp": 2500})
    result = handler(FC_TIMER, fc_context(timeout=20))
    assert result["fan_out"]["invoked"] == 3, result["fan_out"]
    assert emulator.wait_async(40)
    assert emulator.exit_codes("alicom-drain") == [0, 0, 0]
    rows = SqliteSink(str(fan_out_env)).count("records")
    assert rows == sent
    for mtype in ("SmsReport", "SmsUp"):
        state = emulator.queue_state(emulator.queue_name(mtype))
        assert state["visible"] + state["in_flight"] == 0
    stored_by_workers = sent - result["totals"]["stored"]
    assert stored_by_workers > 0  # the workers took part


# -- the permission to fan out: this function, and only this one ---------------------------

@pytest.mark.parametrize("workers", [1, 4])
def test_the_drain_role_may_invoke_only_itself_and_only_to_fan_out(workers):
    from scripts.deploy.policies import render
    from tests.templates_tooling import Cfn, load_sam

    template = load_sam()
    cfn = Cfn(template, {"DrainMaxWorkers": workers})
    props = template["Resources"]["DrainFunction"]["Properties"]
    statements = [s for p in cfn.eval(props["Policies"]) if p for s in p["Statement"]]
    invoke = [s for s in statements if "lambda:" in str(s["Action"])]
    name = cfn.eval(props["FunctionName"])
    assert name == "alicom-drain" and cfn.eval(props["ReservedConcurrentExecutions"]) == str(workers)
    if workers == 1:
        assert invoke == []
    else:
        (grant,) = invoke
        arn = f"arn:aws:lambda:ap-southeast-1:123456789012:function:{name}"
        assert grant["Action"] == "lambda:InvokeFunction" and grant["Resource"] == [arn, arn + ":*"]
    reconcile = template["Resources"]["ReconcileFunction"]["Properties"]
    assert "lambda:" not in json.dumps(cfn.eval(reconcile["Policies"]))

    values = {"Region": "cn-hangzhou", "Bucket": "receipts", "Prefix": "alicom/", "LogProject": "logs",
              "LogStore": "functions", "Workers": str(workers)}
    fc = [s for s in render("drain", "oss", values)["Statement"] if str(s["Action"]).startswith("fc:")]
    assert fc == ([] if workers == 1 else [{"Effect": "Allow", "Action": "fc:InvokeFunction",
                                             "Resource": "acs:fc:cn-hangzhou:*:functions/alicom-drain"}])
    assert "fc:" not in json.dumps(render("reconcile", "oss", values))


# -- MNS's limit on received-but-undeleted messages, shared by every run at once -----------

@pytest.mark.parametrize("workers, most", [(1, 4000), (8, 500)])
def test_a_run_holds_no_more_undeleted_messages_than_its_share_of_the_queue_s_limit(emulator, drain_env, workers,
                                                                                       most):
    """MNS throttles a queue holding more than 5,000 received-but-undeleted messages. The file sink
    buffers up to 2,000 per queue; with DRAIN_MAX_WORKERS runs at once, each keeps to its share of
    4,000 (this run alone, no fan-out: its peak is what each of the K runs would hold)."""
    drain_env(ALICOM_MESSAGE_TYPES="SmsReport", DRAIN_MAX_WORKERS=str(workers), DRAIN_BACKLOG_SECONDS="3600",
              DRAIN_COALESCE_SECONDS="30", DRAIN_WAIT_SECONDS="1")
    sent = fill(emulator, {"SmsReport": 6000})
    result = handler(FC_TIMER, fc_context(timeout=60))
    assert result["ok"] and result["totals"]["stored"] == sent, result
    peak = emulator.queue_state(emulator.queue_name("SmsReport"))["undeleted_peak"]
    assert 0 < peak <= most, peak


def test_workers_and_consumers_beyond_the_queue_s_limit_are_refused_naming_both(drain_env):
    from shared.settings import SettingsError, load_settings

    env = drain_env(DRAIN_MAX_WORKERS="42", DRAIN_CONCURRENCY="3")
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert "DRAIN_MAX_WORKERS: 42 runs x (DRAIN_CONCURRENCY 3 + 3) x 16 messages = 4032" in str(err.value)
    assert load_settings(drain_env(DRAIN_MAX_WORKERS="41")).max_workers == 41  # 41 x 6 x 16 = 3,936
    # At the limit each run's buffer is one batch, and the runs together stay within the budget.
    from shared.drain import DrainOptions, coalesce_cap
    from shared.queues import UNDELETED_BUDGET, undeleted_footprint

    for concurrency in (1, 3, 8):
        most = UNDELETED_BUDGET // ((concurrency + 3) * 16)
        assert load_settings(drain_env(DRAIN_MAX_WORKERS=str(most), DRAIN_CONCURRENCY=str(concurrency)))
        with pytest.raises(SettingsError):
            load_settings(drain_env(DRAIN_MAX_WORKERS=str(most + 1), DRAIN_CONCURRENCY=str(concurrency)))
        cap = coalesce_cap(2000, DrainOptions(concurrency=concurrency, runs_at_once=most))
        assert undeleted_footprint(most, concurrency) <= UNDELETED_BUDGET < undeleted_footprint(most + 1, concurrency)
        assert most * (concurrency * 16 + 3 * cap) <= UNDELETED_BUDGET, (concurrency, most, cap)
