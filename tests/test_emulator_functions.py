"""FC 2.0 and Lambda invoke on the emulator, through aliyun-fc2 and boto3."""
from __future__ import annotations

import json
import threading

import boto3
import fc2
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from scripts.emulator import Emulator
from tests.test_emulator import AK, SECRET, admin


@pytest.fixture
def emu():
    with Emulator(customer_keys={AK: SECRET}, seed=0) as e:
        ran = []
        done = threading.Event()

        def backfill(payload: bytes) -> bytes:
            event = json.loads(payload)
            if event.get("explode"):
                raise ValueError("asked to explode")
            ran.append(event)
            done.set()
            return json.dumps({"ok": True, "echo": event}).encode()

        e.register_function("backfill", backfill)
        e.ran, e.done = ran, done
        yield e


def fc_client(emu, secret=SECRET, ak=AK):
    return fc2.Client(endpoint=emu.url, accessKeyID=ak, accessKeySecret=secret, Timeout=5)


def lambda_client(emu, secret=SECRET, ak=AK, region="cn-hangzhou"):
    return boto3.client("lambda", endpoint_url=emu.url, region_name=region, aws_access_key_id=ak,
                        aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}, read_timeout=5, connect_timeout=5))


def test_fc_sync_and_async_invoke(emu):
    client = fc_client(emu)
    resp = client.invoke_function("alicom-drain", "backfill", payload=b'{"day": "20250101"}')
    assert json.loads(resp.data) == {"ok": True, "echo": {"day": "20250101"}}
    assert resp.headers["X-Fc-Request-Id"]
    resp = client.invoke_function("alicom-drain", "backfill", payload=b'{"day": "20250102"}',
                                  headers={"x-fc-invocation-type": "Async"})
    assert resp.data == b""
    assert emu.wait_async(5) and emu.ran[-1] == {"day": "20250102"}
    assert emu.invocations("backfill") == [b'{"day": "20250101"}', b'{"day": "20250102"}']
    assert emu.stats()["FcInvokeFunction"] == 2


def test_fc_function_error_and_refusals(emu):
    with pytest.raises(fc2.fc_exceptions.FcError) as exc:
        fc_client(emu).invoke_function("svc", "backfill", payload=b'{"explode": true}')
    assert "asked to explode" in exc.value.message
    with pytest.raises(fc2.fc_exceptions.FcError) as exc:
        fc_client(emu, secret="wrong").invoke_function("svc", "backfill", payload=b"{}")
    assert (exc.value.status_code, exc.value.err_code) == (403, "SignatureNotMatch")
    with pytest.raises(fc2.fc_exceptions.FcError) as exc:
        fc_client(emu, ak="LTAInobody").invoke_function("svc", "backfill", payload=b"{}")
    assert (exc.value.status_code, exc.value.err_code) == (403, "InvalidAccessKeyID")
    with pytest.raises(fc2.fc_exceptions.FcError) as exc:
        fc_client(emu).invoke_function("svc", "nothing", payload=b"{}")
    assert (exc.value.status_code, exc.value.err_code) == (404, "FunctionNotFound")
    assert emu.ran == []


def test_lambda_sync_async_and_function_error(emu):
    client = lambda_client(emu)
    resp = client.invoke(FunctionName="backfill", Payload=b'{"day": "20250103"}')
    assert (resp["StatusCode"], resp["ExecutedVersion"]) == (200, "$LATEST")
    assert "FunctionError" not in resp
    assert json.loads(resp["Payload"].read()) == {"ok": True, "echo": {"day": "20250103"}}
    resp = client.invoke(FunctionName="arn:aws:lambda:us-east-1:123456789012:function:backfill",
                         InvocationType="Event", Payload=b'{"day": "20250104"}')
    assert resp["StatusCode"] == 202
    assert emu.wait_async(5) and emu.ran[-1] == {"day": "20250104"}
    resp = client.invoke(FunctionName="backfill", Payload=b'{"explode": true}')
    assert (resp["StatusCode"], resp["FunctionError"]) == (200, "Unhandled")
    assert json.loads(resp["Payload"].read())["errorMessage"] == "asked to explode"
    assert lambda_client(emu, region="us-east-1").invoke(FunctionName="backfill", InvocationType="DryRun",
                                                         Payload=b"{}")["StatusCode"] == 204
    assert len(emu.invocations("backfill")) == 3


def test_lambda_refusals(emu):
    with pytest.raises(ClientError) as exc:
        lambda_client(emu, secret="wrong").invoke(FunctionName="backfill", Payload=b"{}")
    assert exc.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as exc:
        lambda_client(emu, ak="AKIAnobody").invoke(FunctionName="backfill", Payload=b"{}")
    assert exc.value.response["Error"]["Code"] == "UnrecognizedClientException"
    with pytest.raises(ClientError) as exc:
        lambda_client(emu).invoke(FunctionName="nothing", Payload=b"{}")
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert emu.invocations("backfill") == []


def test_invocations_over_admin_http(emu):
    fc_client(emu).invoke_function("svc", "backfill", payload=b'{"a": 1}')
    status, body = admin(emu, "GET", "/_admin/functions/backfill/invocations")
    assert (status, body) == (200, {"payloads_b64": ["eyJhIjogMX0="]})
