"""Every action a role holds is one its code calls, and every call the code makes is granted.

CALLS below declares, per function and sink, the storage actions the code performs. Two
checks hold it honest from both sides:
- the roles: template.yml's IAM statements (AWS) and scripts/deploy's RAM documents (FC)
  grant exactly CALLS on the sink, nothing more;
- the wire: the drain and reconcile run for real against the stand-ins, every request is
  recorded where it crosses a socket (a recording proxy in front of moto and behind the OSS
  gateway, the Tablestore fake's own request log), mapped to the action the platform would
  authorise, and the set must equal CALLS: a grant nobody uses, or a call nobody granted,
  fails here.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest

from functions.drain import handler as drain
from functions.reconcile import handler as reconcile
from scripts.create_tables import create_dynamodb_table, create_tablestore_table
from scripts.deploy import policies
from scripts.receipts import BAD_BODIES, make_receipts
from shared.ledger import Send, record_sends
from shared.runtime import reset_reconcile_runtime, reset_runtime
from shared.settings import load_settings
from shared.sinks import make_sink
from tests.conftest import AK, SECRET
from tests.contexts import fc_context
from tests.fakes.moto_server import FaultProxy
from tests.fakes.oss_gateway import OssGateway
from tests.fakes.tablestore import TablestoreServer
from tests.templates_tooling import Cfn, as_list, load_s_yaml, load_sam

CALLS = {
    ("drain", "s3"): {"s3:PutObject"},
    ("reconcile", "s3"): {"s3:PutObject", "s3:GetObject"},  # GetObject: a "sink:<key>" phones_file
    ("drain", "dynamodb"): {"dynamodb:BatchWriteItem"},
    ("reconcile", "dynamodb"): {"dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Scan"},
    ("drain", "oss"): {"oss:PutObject"},
    ("reconcile", "oss"): {"oss:PutObject", "oss:GetObject"},
    ("drain", "tablestore"): {"ots:BatchWriteRow"},
    ("reconcile", "tablestore"): {"ots:BatchWriteRow", "ots:PutRow", "ots:GetRow", "ots:GetRange"},
}
STORAGE = ("s3:", "dynamodb:", "oss:", "ots:")
BUCKET, TABLE, INSTANCE = "alicom-receipts", "alicom_receipts", "lp-ots"


# -- the roles ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sink", ["s3", "dynamodb"])
def test_template_roles_grant_exactly_the_calls(sink):
    template = load_sam()
    cfn = Cfn(template, {"Sink": sink})
    for function, resource in (("drain", "DrainFunction"), ("reconcile", "ReconcileFunction")):
        granted = {a for document in filter(None, cfn.eval(template["Resources"][resource]["Properties"]["Policies"]))
                   for statement in document["Statement"] for a in as_list(statement["Action"]) if a.startswith(STORAGE)}
        assert granted == CALLS[(function, sink)], (function, sink)


@pytest.mark.parametrize("sink", ["oss", "tablestore"])
def test_ram_policies_grant_exactly_the_calls(sink):
    values = policies.values_from_vars(load_s_yaml()["vars"])
    for function in policies.FUNCTIONS:
        document = policies.render(function, sink, values)
        granted = {a for s in document["Statement"] for a in as_list(s["Action"]) if a.startswith(STORAGE)}
        assert granted == CALLS[(function, sink)], (function, sink)


# -- the wire ----------------------------------------------------------------------------------

def aws_action(method: str, path: str, headers: dict, service: str) -> str:
    if "x-amz-target" in headers:
        return "dynamodb:" + headers["x-amz-target"].rsplit(".", 1)[1]
    parts = urlsplit(path)
    is_object = parts.path.strip("/").count("/") >= 1
    if not is_object:
        return f"{service}:ListObjects" if service == "oss" else "s3:ListBucket"
    return {"PUT": f"{service}:PutObject", "GET": f"{service}:GetObject",
            "HEAD": f"{service}:GetObject", "DELETE": f"{service}:DeleteObject"}[method]


@pytest.fixture
def recorded(request, emulator, reconcile_env, moto, monkeypatch):
    """(sink, settings for it, a function returning the actions recorded since the last call)."""
    sink = request.param
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    proxy = FaultProxy(moto.endpoint).start()
    servers = [proxy]
    if sink in ("s3", "oss"):
        moto.client("s3").create_bucket(Bucket=BUCKET)
    if sink == "s3":
        env = {"SINK": "s3", "SINK_BUCKET": BUCKET, "SINK_ENDPOINT": proxy.endpoint, "SINK_REGION": "us-east-1"}
    elif sink == "dynamodb":
        create_dynamodb_table(moto.client("dynamodb"), TABLE)
        env = {"SINK": "dynamodb", "SINK_TABLE": TABLE, "SINK_ENDPOINT": proxy.endpoint, "SINK_REGION": "us-east-1"}
    elif sink == "oss":
        gateway = OssGateway(proxy.endpoint, AK, SECRET).start()
        servers.append(gateway)
        env = {"SINK": "oss", "SINK_BUCKET": BUCKET, "SINK_ENDPOINT": gateway.endpoint}
    else:
        ots = TablestoreServer(INSTANCE, AK, SECRET).start()
        servers.append(ots)
        from tablestore import OTSClient

        create_tablestore_table(OTSClient(ots.endpoint, AK, SECRET, INSTANCE), TABLE)
        env = {"SINK": "tablestore", "SINK_TABLE": TABLE, "SINK_ENDPOINT": ots.endpoint, "TABLESTORE_INSTANCE": INSTANCE}
    env = reconcile_env(**env)
    seen = {"proxy": len(proxy.requests), "ots": len(servers[-1].requests) if sink == "tablestore" else 0}

    def since_last() -> set[str]:
        actions = {aws_action(m, p, h, "oss" if sink == "oss" else "s3") for m, p, h in proxy.requests[seen["proxy"]:]}
        seen["proxy"] = len(proxy.requests)
        if sink == "tablestore":
            actions |= {"ots:" + api for api, _ in servers[-1].requests[seen["ots"]:]}
            seen["ots"] = len(servers[-1].requests)
        return actions

    yield sink, env, since_last
    reset_runtime()
    reset_reconcile_runtime()
    for server in servers:
        server.stop()


@pytest.mark.parametrize("recorded", ["s3", "dynamodb", "oss", "tablestore"], indirect=True)
def test_what_the_code_calls_on_the_wire_is_exactly_what_is_granted(recorded, emulator):
    sink, env, since_last = recorded
    for mtype in ("SmsReport", "SmsUp"):
        for body in make_receipts(mtype, 10, seed=2):
            emulator.enqueue_receipt(emulator.queue_name(mtype), body)
    emulator.enqueue(emulator.queue_name("SmsReport"), BAD_BODIES[0])
    since_last()  # set-up traffic (bucket/table creation) is not the functions'
    result = drain(json.dumps({"triggerTime": "2026-11-25T02:00:00Z", "triggerName": "t", "payload": ""}).encode(),
                   fc_context(timeout=30))
    assert result["ok"] and result["totals"]["stored"] == 20 and result["totals"]["dead_lettered"] == 1
    assert since_last() == CALLS[("drain", sink)]

    yesterday = (datetime.now(timezone(timedelta(hours=8))) - timedelta(days=1))
    emulator.add_send_record("13800000077", yesterday.strftime("%Y%m%d"), "biz-lp", 3)
    if sink in ("dynamodb", "tablestore"):
        # The scheduled run: the ledger (scan, read the receipt row, write the send record unless
        # a receipt is there, update the entry).
        record_sends(make_sink(load_settings(env)), [Send(biz_id="biz-lp", phone_number="13800000077",
                                                         send_time=yesterday.replace(tzinfo=None))])
        since_last()
        report = reconcile(json.dumps({"triggerTime": "2026-11-25T18:00:00Z", "triggerName": "t", "payload": ""}).encode(),
                           fc_context(timeout=30))
        assert report["ok"] and report["queried"] == 1, report
    else:
        # By hand with explicit targets, the phones read from the sink itself.
        make_sink(load_settings(env))._put_object("alicom/reconcile/phones.txt", b"13800000077\n")
        since_last()
        report = reconcile({"dates": [yesterday.strftime("%Y-%m-%d")], "phones_file": "sink:reconcile/phones.txt"},
                           fc_context(timeout=30))
        assert report["ok"] and report["queried"] == 1 and report["records_written"] == 1, report
    assert since_last() == CALLS[("reconcile", sink)]
