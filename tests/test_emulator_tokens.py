"""Token controls of the emulator: refusal per message type, the OwnerId log, token
expiry triggered by an MNS action, and the function role's STS credentials — through
the real SDKs over real sockets."""
from __future__ import annotations

import json
import urllib.parse
import urllib.request
from xml.etree import ElementTree

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.auth.credentials import StsTokenCredential
from aliyunsdkcore.client import AcsClient
from aliyunsdkdybaseapi.request.v20170525.QueryTokenForMnsQueueRequest import QueryTokenForMnsQueueRequest
from mns.mns_exception import MNSServerException

from scripts.emulator import Emulator
from scripts.emulator.auth import rpc_sign
from tests.test_emulator import (AK, SECRET, acs, admin, make_queue, mns_queue, query_token, raw_rpc,
                                 receive_error, signed_rpc_params)

OWNER = "1234567890123456"


@pytest.fixture
def emu():
    with Emulator(customer_keys={AK: SECRET}, seed=0) as e:
        yield e


def token_call(emu, message_type, owner_id=None, queue_name=True):
    req = QueryTokenForMnsQueueRequest()
    req.set_MessageType(message_type)
    if queue_name:
        req.set_QueueName(emu.queue_name(message_type))
    if owner_id is not None:
        req.set_OwnerId(owner_id)
    return json.loads(acs(emu).do_action_with_exception(req))


def without_time(requests):
    return [{k: v for k, v in r.items() if k != "time"} for r in requests]


def test_one_message_type_refused_while_the_others_get_tokens(emu):
    report, up = make_queue(emu, "SmsReport"), make_queue(emu, "SmsUp")
    earlier_up = mns_queue(emu, up)          # a token issued before the refusal
    emu.refuse_tokens("SmsUp", "Forbidden.NoPermission", "You are not authorized to operate on this queue.")
    with pytest.raises(ServerException) as exc:
        query_token(emu, "SmsUp")
    err = exc.value
    assert (err.get_http_status(), err.get_error_code(), err.get_error_msg()) == (
        403, "Forbidden.NoPermission", "You are not authorized to operate on this queue.")
    # SmsReport is untouched: its token is issued and works on its queue.
    assert query_token(emu, "SmsReport")["Code"] == "OK"
    assert receive_error(mns_queue(emu, report)).type == "MessageNotExist"
    # Tokens already issued keep working until they expire; the refusal stops new ones only.
    assert receive_error(earlier_up).type == "MessageNotExist"
    # status=200 refuses the way business rules do: a 200 whose Code is not OK.
    emu.refuse_tokens("SmsUp", "isv.ACCOUNT_ABNORMAL", status=200)
    body = query_token(emu, "SmsUp")
    assert body["Code"] == "isv.ACCOUNT_ABNORMAL" and "MessageTokenDTO" not in body
    emu.refuse_tokens("SmsUp", None)
    assert query_token(emu, "SmsUp")["Code"] == "OK"
    assert [r["answer"] for r in emu.token_requests()] == [
        "OK", "Forbidden.NoPermission", "OK", "OK", "isv.ACCOUNT_ABNORMAL", "OK"]


def test_owner_id_is_accepted_and_each_call_is_logged_without_secrets(emu):
    make_queue(emu, "SmsReport")
    dto = token_call(emu, "SmsReport", owner_id=OWNER)["MessageTokenDTO"]
    assert receive_error(mns_queue(emu, emu.queue_name("SmsReport"), dto)).type == "MessageNotExist"
    token_call(emu, "SmsUp", queue_name=False)
    with pytest.raises(ServerException) as exc:
        token_call(emu, "SmsReport", owner_id="not-a-number")
    assert (exc.value.get_http_status(), exc.value.get_error_code()) == (400, "InvalidParameter")
    assert "OwnerId" in exc.value.get_error_msg()
    # A call that fails its signature never reached the API, so it is not logged.
    params = signed_rpc_params("QueryTokenForMnsQueue", {"MessageType": "VoiceReport"})
    params["MessageType"] = "SmsUp"
    assert raw_rpc(emu, params)[1]["Code"] == "SignatureDoesNotMatch"
    requests = emu.token_requests()
    assert without_time(requests) == [
        {"message_type": "SmsReport", "queue_name": "Alicom-Queue-1234567890-SmsReport", "owner_id": OWNER,
         "answer": "OK", "region_id": "cn-hangzhou"},
        {"message_type": "SmsUp", "queue_name": None, "owner_id": None, "answer": "OK", "region_id": "cn-hangzhou"},
        {"message_type": "SmsReport", "queue_name": "Alicom-Queue-1234567890-SmsReport",
         "owner_id": "not-a-number", "answer": "InvalidParameter", "region_id": "cn-hangzhou"},
    ]
    assert all(isinstance(r["time"], float) for r in requests)
    logged = json.dumps(requests)
    assert SECRET not in logged and AK not in logged
    for ak_id, secret, token in emu.issued_tokens():
        assert ak_id not in logged and secret not in logged and token not in logged


def test_tokens_expire_when_the_next_delete_arrives(emu):
    name = make_queue(emu)
    for body in ("YQ==", "Yg=="):
        emu.enqueue(name, body)
    queue = mns_queue(emu, name)
    handles = [m.receipt_handle for m in queue.batch_receive_message(16, 0)]
    emu.expire_tokens_on("BatchDeleteMessage")
    with pytest.raises(MNSServerException) as exc:
        queue.batch_delete_message(handles)
    assert exc.value.type == "AccessDenied" and "expired" in exc.value.message
    assert emu.queue_state(name)["in_flight"] == 2          # nothing deleted, handles still good
    # A fresh token deletes with the same handles; the trigger fired once only.
    mns_queue(emu, name).batch_delete_message(handles)
    assert emu.queue_state(name)["deleted"] == 2
    emu.enqueue(name, "Yw==")
    fresh = mns_queue(emu, name)
    fresh.batch_delete_message([m.receipt_handle for m in fresh.batch_receive_message(16, 0)])
    assert emu.queue_state(name)["deleted"] == 3
    with pytest.raises(ValueError, match="BatchDeleteMessage"):
        emu.expire_tokens_on("BatchDelete")


def test_token_controls_over_admin_http(emu):
    assert admin(emu, "PUT", "/_admin/tokens/refusals/SmsUp",
                 {"code": "Forbidden.NoPermission", "status": 403})[0] == 200
    with pytest.raises(ServerException) as exc:
        query_token(emu, "SmsUp")
    assert exc.value.get_error_code() == "Forbidden.NoPermission"
    assert admin(emu, "DELETE", "/_admin/tokens/refusals/SmsUp")[0] == 200
    token_call(emu, "SmsUp", owner_id=OWNER)
    status, body = admin(emu, "GET", "/_admin/tokens/requests")
    assert status == 200 and without_time(body["requests"]) == [
        {"message_type": "SmsUp", "queue_name": "Alicom-Queue-1234567890-SmsUp", "owner_id": None,
         "answer": "Forbidden.NoPermission", "region_id": "cn-hangzhou"},
        {"message_type": "SmsUp", "queue_name": "Alicom-Queue-1234567890-SmsUp", "owner_id": OWNER,
         "answer": "OK", "region_id": "cn-hangzhou"}]
    name = make_queue(emu, "SmsUp")
    emu.enqueue(name, "YQ==")
    queue = mns_queue(emu, name)
    msgs = queue.batch_receive_message(16, 0)
    assert admin(emu, "POST", "/_admin/tokens/expire-on", {"action": "BatchDeleteMessage"})[0] == 200
    with pytest.raises(MNSServerException) as exc2:
        queue.batch_delete_message([m.receipt_handle for m in msgs])
    assert exc2.value.type == "AccessDenied"
    assert admin(emu, "PUT", "/_admin/tokens/refusals/SmsUp", {"code": "X", "status": 302})[0] == 400


# --- the function role's STS credentials (what FC hands a function) -------------------------

def sts_client(emu, creds):
    client = AcsClient(region_id="cn-hangzhou", auto_retry=False, timeout=5, credential=StsTokenCredential(
        creds["access_key_id"], creds["access_key_secret"], creds["security_token"]))
    client.add_endpoint("cn-hangzhou", "Dybaseapi", f"127.0.0.1:{emu.port}")
    return client


def sts_token_call(client, message_type="SmsReport"):
    req = QueryTokenForMnsQueueRequest()
    req.set_MessageType(message_type)
    return json.loads(client.do_action_with_exception(req))


def test_role_credentials_sign_pop_calls_only_with_their_security_token(emu):
    name = make_queue(emu)
    creds = emu.issue_role_credentials(lifetime=900)
    assert creds["access_key_id"].startswith("STS.") and creds["security_token"]
    dto = sts_token_call(sts_client(emu, creds))["MessageTokenDTO"]
    assert receive_error(mns_queue(emu, name, dto)).type == "MessageNotExist"
    ak, secret = creds["access_key_id"], creds["access_key_secret"]
    # Signed correctly, but without the token, or with another role's token.
    status, body = raw_rpc(emu, signed_rpc_params("QueryTokenForMnsQueue", {"MessageType": "SmsReport"},
                                                    ak=ak, secret=secret))
    assert (status, body["Code"]) == (400, "MissingSecurityToken")
    other = emu.issue_role_credentials()["security_token"]
    status, body = raw_rpc(emu, signed_rpc_params("QueryTokenForMnsQueue", {"MessageType": "SmsReport",
                                                                            "SecurityToken": other},
                                                    ak=ak, secret=secret))
    assert (status, body["Code"]) == (400, "InvalidSecurityToken.MismatchWithAccessKey")
    # Long-term keys need no token.
    assert query_token(emu)["Code"] == "OK"
    emu.expire_role_credentials()
    with pytest.raises(ServerException) as exc:
        sts_token_call(sts_client(emu, creds))
    assert (exc.value.get_http_status(), exc.value.get_error_code()) == (400, "InvalidSecurityToken.Expired")
    status, fresh = admin(emu, "POST", "/_admin/role-credentials", {"lifetime": 60})
    assert status == 200 and sts_token_call(sts_client(emu, fresh))["Code"] == "OK"


@pytest.mark.parametrize("fmt", [None, "XML", "xml", "jsonp"])
def test_a_pop_answer_is_xml_unless_the_request_asks_for_json(emu, fmt):
    """POP's default format is XML: only Format=JSON (any case) gets JSON."""
    params = signed_rpc_params("QueryTokenForMnsQueue", {"MessageType": "SmsReport"})
    del params["Format"], params["Signature"]
    if fmt is not None:
        params["Format"] = fmt
    params["Signature"] = rpc_sign("POST", params, SECRET)
    request = urllib.request.Request(f"{emu.url}/?{urllib.parse.urlencode(params)}", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=5) as answer:
        root = ElementTree.fromstring(answer.read())
    assert root.tag == "QueryTokenForMnsQueueResponse" and root.findtext("Code") == "OK"
    assert root.find("MessageTokenDTO/SecurityToken") is not None
    lower = signed_rpc_params("QueryTokenForMnsQueue", {"MessageType": "SmsReport", "Format": "json"})
    assert raw_rpc(emu, lower)[1]["Code"] == "OK"  # JSON, parsed as such
