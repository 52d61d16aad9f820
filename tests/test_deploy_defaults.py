"""Each template, deployed with its defaults, has no scheduled function that fails.

Nothing is deployed: each template's environment is resolved with its own parameter/var
defaults (plus the one value a user must give, the account id that names the queues), and
only endpoints and credentials are replaced: Alicom's APIs by the emulator, S3/DynamoDB/
Secrets Manager by moto, OSS by the signature-checking gateway, Tablestore by its fake. The
bucket/table the template would create is created. Then every function whose schedule the
template leaves enabled is invoked with the event from `events/` exactly as its platform
would (FC: bytes and an FC context; Lambda: a dict and a Lambda context).
"""
from __future__ import annotations

import functools
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest

from functions.drain import handler as drain_handler
from functions.reconcile import handler as reconcile_handler
from scripts.create_tables import create_dynamodb_table, create_tablestore_table
from scripts.receipts import make_receipts
from shared.ledger import Send, record_sends
from shared.runtime import reset_reconcile_runtime, reset_runtime
from shared.settings import VARIABLES, load_settings
from shared.sinks import make_sink
from tests.conftest import AK, SECRET, UID
import tests.contexts
from tests.contexts import LambdaContext
from tests.fakes.moto_server import CREDENTIALS
from tests.fakes.oss_gateway import OssGateway
from tests.fakes.tablestore import TablestoreServer
from tests.templates_tooling import (FC_FUNCTIONS, SAM_FUNCTIONS, Cfn, load_s_yaml, load_sam, s_resources,
                                     sam_environment)

EVENTS = Path(__file__).resolve().parents[1] / "events"
HANDLERS = {"drain": drain_handler, "reconcile": reconcile_handler}
REGION = "ap-southeast-1"  # the pseudo-region tests.templates_tooling.Cfn resolves AWS::Region to
ENDPOINTS = ("ALICOM_MNS_ENDPOINT", "ALICOM_TOKEN_ENDPOINT", "ALICOM_SMS_ENDPOINT")


def event_file(name: str) -> Any:
    return json.loads((EVENTS / name).read_text())


def use_environment(monkeypatch, env: dict[str, str]) -> None:
    """Exactly this environment for the settings: nothing left over from the host or other tests."""
    for name in set(VARIABLES.values()) | {"POWERTOOLS_LOG_LEVEL", "POWERTOOLS_SERVICE_NAME"}:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_runtime()
    reset_reconcile_runtime()


def enqueue(emulator, message_types: str, per_type: int = 30) -> int:
    total = 0
    for mtype in message_types.split(","):
        emulator.create_queue(emulator.queue_name(mtype))
        for body in make_receipts(mtype, per_type, seed=13):
            emulator.enqueue_receipt(emulator.queue_name(mtype), body)
            total += 1
    return total


def record_a_late_send(emulator, env: dict[str, str]) -> None:
    """One ledger send two hours old with no receipt, which the scheduled reconcile must ask about."""
    sent = datetime.now(timezone.utc) - timedelta(hours=2)
    record_sends(make_sink(load_settings(env)), [Send(biz_id="biz-late-1", phone_number="13800000042", send_time=sent)])
    beijing = sent.astimezone(timezone(timedelta(hours=8)))
    emulator.add_send_record("13800000042", beijing.strftime("%Y%m%d"), "biz-late-1", 3,
                             send_time=beijing.strftime("%Y-%m-%d %H:%M:%S"))


def check_runs(emulator, results: dict[str, dict], enqueued: int) -> None:
    drain = results["drain"]
    assert drain["ok"] and drain["stop_reason"] == "empty", drain
    assert drain["totals"]["stored"] == enqueued and drain["totals"]["deleted"] == enqueued
    if "reconcile" in results:
        reconcile = results["reconcile"]
        assert reconcile["ok"] and reconcile["trigger"] == "timer", reconcile
        assert reconcile["queried"] == 1 and reconcile["delivered"] == 1, reconcile


# -- AWS SAM ---------------------------------------------------------------------------------

def sam_scheduled(parameters: dict[str, Any]) -> dict[str, Any]:
    """function -> the event its enabled schedule sends (the Scheduler's Input)."""
    template = load_sam()
    cfn = Cfn(template, parameters)
    out = {}
    for function, resource in SAM_FUNCTIONS.items():
        schedule = template["Resources"][resource]["Properties"]["Events"]["Schedule"]["Properties"]
        if cfn.eval(schedule["State"]) == "ENABLED":
            out[function] = json.loads(schedule["Input"])
    return out


def aws_process_environment(moto) -> dict[str, str]:
    """What boto3 finds in a Lambda (the role's keys, the region), pointed at moto."""
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto.endpoint}


def sam_stand_ins(emulator, moto, parameters: dict[str, Any]) -> tuple[dict[str, str], int]:
    """What the stack would create, on the stand-ins (the secret holding the AccessKey, the bucket
    or table), and receipts in the queues: (the variables that point the template's environment
    there, receipts enqueued)."""
    client = functools.partial(boto3.client, endpoint_url=moto.endpoint, region_name=REGION, **CREDENTIALS)
    arn = client("secretsmanager").create_secret(Name=f"AlicomCredentialsSecret-{time.monotonic_ns()}",
                                SecretString=json.dumps({"access_key_id": AK, "access_key_secret": SECRET}))["ARN"]
    env = sam_environment("drain", parameters)
    assert env["SINK_REGION"] == REGION and env["SINK"] == parameters.get("Sink", "s3")
    if env["SINK"] == "s3":
        client("s3").create_bucket(Bucket=env["SINK_BUCKET"], CreateBucketConfiguration={"LocationConstraint": REGION})
    else:
        create_dynamodb_table(client("dynamodb"), env["SINK_TABLE"], ttl=True)
    overrides = dict({name: emulator.url for name in ENDPOINTS}, SINK_ENDPOINT=moto.endpoint,
                     ALICOM_CREDENTIALS_SECRET=arn)
    return overrides, enqueue(emulator, env["ALICOM_MESSAGE_TYPES"])


@pytest.mark.parametrize("parameters, scheduled", [
    ({}, ["drain"]),  # the default: Sink=s3, the reconcile schedule ships disabled
    ({"Sink": "dynamodb"}, ["drain", "reconcile"]),
])
def test_sam_stack_with_its_defaults_runs_every_schedule_green(emulator, moto, monkeypatch, parameters, scheduled):
    parameters = dict(parameters, AlicomUid=UID)  # the one value without a default
    assert sorted(sam_scheduled(parameters)) == scheduled
    for name, value in aws_process_environment(moto).items():
        monkeypatch.setenv(name, value)
    from aws_lambda_powertools.utilities import parameters as powertools_parameters

    powertools_parameters.clear_caches()
    overrides, enqueued = sam_stand_ins(emulator, moto, parameters)
    results = {}
    for function in scheduled:
        env = dict(sam_environment(function, parameters), **overrides)
        use_environment(monkeypatch, env)
        if function == "reconcile":
            record_a_late_send(emulator, env)
        event = sam_scheduled(parameters)[function]
        assert event == event_file("schedule-eventbridge.json")
        timeout = float(load_sam()["Parameters"][f"{function.title()}Timeout"]["Default"])
        results[function] = HANDLERS[function](event_file("schedule-eventbridge.json"), LambdaContext(timeout=timeout))
    check_runs(emulator, results, enqueued)
    reset_runtime()
    reset_reconcile_runtime()


# -- Serverless Devs (fc3) -------------------------------------------------------------------

@pytest.mark.parametrize("variables, scheduled", [
    ({}, ["drain"]),  # the default: sink oss, the reconcile timer ships disabled
    ({"sink": "tablestore", "reconcileScheduleEnabled": True}, ["drain", "reconcile"]),
])
def test_fc_project_with_its_defaults_runs_every_timer_green(emulator, moto, monkeypatch, variables, scheduled):
    variables = dict(variables, uid=UID)
    resources = s_resources(variables)
    enabled = sorted(f for f, name in FC_FUNCTIONS.items() if resources[name]["triggers"][0]["triggerConfig"]["enable"])
    assert enabled == scheduled
    defaults = load_s_yaml()["vars"]
    results, enqueued = {}, None
    with TablestoreServer(defaults["tablestoreInstance"], AK, SECRET) as ots:
        gateway = OssGateway(moto.endpoint, AK, SECRET).start()  # checks the role's signature
        try:
            for function in scheduled:
                props = resources[FC_FUNCTIONS[function]]
                env = fc_environment(function, variables, emulator, {"oss": gateway.endpoint, "tablestore": ots.endpoint})
                if enqueued is None:
                    enqueued = fc_stand_ins(emulator, moto, env, ots)
                use_environment(monkeypatch, env)
                if function == "reconcile":
                    record_a_late_send(emulator, env)
                trigger = props["triggers"][0]
                event = event_file(f"timer-fc-{function}.json")
                # What FC's timer sends: its name and the configured payload, in an envelope.
                assert (event["triggerName"], event["payload"]) == (trigger["triggerName"], trigger["triggerConfig"]["payload"])
                context = fc_context(FC_FUNCTIONS[function], props["timeout"])
                results[function] = HANDLERS[function]((EVENTS / f"timer-fc-{function}.json").read_bytes(), context)
        finally:
            gateway.stop()
    check_runs(emulator, results, enqueued)
    reset_runtime()
    reset_reconcile_runtime()


def fc_environment(function: str, variables: dict[str, Any], emulator, sink_endpoints: dict[str, str]) -> dict[str, str]:
    """The function's environment as s.yaml sets it (PYTHONPATH aside), pointed at the stand-ins,
    with the function role's credentials where FC puts them."""
    props = s_resources(variables)[FC_FUNCTIONS[function]]
    env = {k: v for k, v in props["environmentVariables"].items() if k != "PYTHONPATH"}
    env.update({name: emulator.url for name in ENDPOINTS})
    env.update(ALIBABA_CLOUD_ACCESS_KEY_ID=AK, ALIBABA_CLOUD_ACCESS_KEY_SECRET=SECRET)
    env["SINK_ENDPOINT"] = sink_endpoints[env["SINK"]]
    return env


def fc_stand_ins(emulator, moto, env: dict[str, str], ots=None) -> int:
    """The bucket or table the sink writes to, and receipts in the queues: receipts enqueued."""
    if env["SINK"] == "oss":
        moto.client("s3").create_bucket(Bucket=env["SINK_BUCKET"])
    else:
        from tablestore import OTSClient

        create_tablestore_table(OTSClient(ots.endpoint, AK, SECRET, env["TABLESTORE_INSTANCE"]), env["SINK_TABLE"])
    return enqueue(emulator, env["ALICOM_MESSAGE_TYPES"])


def fc_context(name: str, timeout: float):
    context = tests.contexts.fc_context(timeout)
    context.function.name = name
    return context


# -- the manual events ------------------------------------------------------------------------

def test_manual_drain_event_file_narrows_a_run(emulator, drain_env):
    drain_env(ALICOM_MESSAGE_TYPES="SmsReport,SmsUp")
    for mtype in ("SmsReport", "SmsUp"):
        for body in make_receipts(mtype, 20, seed=4):
            emulator.enqueue_receipt(emulator.queue_name(mtype), body)
    event = (EVENTS / "drain-manual.json").read_bytes()  # FC delivers a manual invoke's body as bytes
    result = drain_handler(event, fc_context("alicom-drain", 55))
    assert result["ok"] and list(result["types"]) == ["SmsReport"] and result["totals"]["stored"] == 20
    assert emulator.queue_state(emulator.queue_name("SmsUp"))["visible"] == 20


def shifted(event: dict, days_ago: int) -> dict:
    """The file's example dates moved to recent days: QuerySendDetails answers for 30 days only."""
    today = datetime.now(timezone(timedelta(hours=8))).date()
    day = lambda n: (today - timedelta(days=n)).isoformat()  # noqa: E731
    out = dict(event)
    if "dates" in out:
        out["dates"] = [day(days_ago)]
    if "date_from" in out:
        out["date_from"], out["date_to"] = day(days_ago + 2), day(days_ago)
    return out


@pytest.mark.parametrize("name, queried", [("reconcile-targets.json", 2), ("reconcile-backfill.json", 9)])
def test_manual_reconcile_event_files_run_with_an_object_sink(emulator, reconcile_env, tmp_path, name, queried):
    """Explicit targets need no ledger: they work with the file sink (an object sink) too."""
    reconcile_env(SINK="file", SINK_PATH=str(tmp_path / "receipts"))
    event = shifted(event_file(name), days_ago=1)
    result = reconcile_handler(event, LambdaContext(timeout=60))
    assert result["ok"] and result["queried"] == queried and result["errors"] == [], result

