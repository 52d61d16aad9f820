"""Dysmsapi QuerySendDetails on the emulator, through aliyun-python-sdk-dysmsapi."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkdysmsapi.request.v20170525.QuerySendDetailsRequest import QuerySendDetailsRequest

from scripts.emulator import Emulator
from tests.test_emulator import AK, SECRET, acs, admin

PHONE, OTHER = "13800000001", "13900000002"


@pytest.fixture
def emu():
    with Emulator(customer_keys={AK: SECRET}, seed=0) as e:
        yield e


def shanghai_day(days_ago=0) -> str:
    return (datetime.now(ZoneInfo("Asia/Shanghai")) - timedelta(days=days_ago)).strftime("%Y%m%d")


def query(emu, phone=PHONE, send_date=None, page_size=50, page=1, biz_id=None, secret=SECRET):
    req = QuerySendDetailsRequest()
    if phone is not None:
        req.set_PhoneNumber(phone)
    req.set_SendDate(send_date or shanghai_day())
    req.set_PageSize(page_size)
    req.set_CurrentPage(page)
    if biz_id:
        req.set_BizId(biz_id)
    return json.loads(acs(emu, secret=secret, product="Dysmsapi").do_action_with_exception(req))


def seed_rows(emu, day):
    dashed = f"{day[:4]}-{day[4:6]}-{day[6:]}"
    for i in range(120):
        biz = f"biz-{i % 3}"
        emu.add_send_record(PHONE, day, biz, status=3 if i % 4 else 2,
                            err_code="DELIVERED" if i % 4 else "MK:0001", content=f"msg {i} of {biz}",
                            send_time=f"{dashed} 10:{i // 60:02d}:{i % 60:02d}", out_id=f"o{i}")
    emu.add_send_record(OTHER, day, "biz-0", 3)
    emu.add_send_record(PHONE, shanghai_day(1), "biz-0", 3)


def test_paging_120_rows_takes_three_pages(emu):
    day = shanghai_day()
    seed_rows(emu, day)
    pages = [query(emu, page=p) for p in (1, 2, 3, 4)]
    assert [p["Code"] for p in pages] == ["OK"] * 4
    assert [p["TotalCount"] for p in pages] == [120] * 4
    rows = [p["SmsSendDetailDTOs"]["SmsSendDetailDTO"] for p in pages]
    assert [len(r) for r in rows] == [50, 50, 20, 0]
    flat = rows[0] + rows[1] + rows[2]
    assert [r["OutId"] for r in flat] == [f"o{i}" for i in range(120)]
    first = flat[0]
    assert set(first) == {"PhoneNum", "SendStatus", "ErrCode", "TemplateCode", "Content", "SendDate",
                          "ReceiveDate", "OutId"}   # no BizId in the rows
    assert (first["PhoneNum"], first["SendStatus"], first["ErrCode"]) == (PHONE, 2, "MK:0001")
    assert first["SendDate"] == f"{day[:4]}-{day[4:6]}-{day[6:]} 10:00:00"
    assert time.strptime(first["ReceiveDate"], "%Y-%m-%d %H:%M:%S")


def test_biz_id_filter(emu):
    seed_rows(emu, shanghai_day())
    body = query(emu, biz_id="biz-1", page_size=10, page=4)
    assert body["TotalCount"] == 40
    rows = body["SmsSendDetailDTOs"]["SmsSendDetailDTO"]
    assert len(rows) == 10 and all(r["Content"].endswith("of biz-1") for r in rows)
    assert query(emu, biz_id="biz-none")["TotalCount"] == 0


def test_invalid_parameters_and_old_dates(emu):
    assert query(emu, page_size=51)["Code"] == "isv.INVALID_PARAMETERS"
    assert query(emu, page=0)["Code"] == "isv.INVALID_PARAMETERS"
    assert query(emu, send_date="2024-1-1")["Code"] == "isv.INVALID_PARAMETERS"
    assert query(emu, phone="not-a-phone")["Code"] == "isv.INVALID_PARAMETERS"
    assert query(emu, send_date=shanghai_day(40))["Code"] == "isv.QUERY_DATE_OUT_OF_RANGE"
    assert query(emu, send_date=shanghai_day(29))["Code"] == "OK"
    with pytest.raises(ServerException) as exc:
        query(emu, phone=None)
    assert (exc.value.get_http_status(), exc.value.get_error_code()) == (400, "MissingPhoneNumber")


def test_configured_refusal_and_signature_check(emu):
    emu.set_send_details_error("isv.BUSINESS_LIMIT_CONTROL", phones=[PHONE])
    assert query(emu)["Code"] == "isv.BUSINESS_LIMIT_CONTROL"
    assert query(emu, phone=OTHER)["Code"] == "OK"
    emu.set_send_details_error(None)
    assert query(emu)["Code"] == "OK"
    with pytest.raises(ServerException) as exc:
        query(emu, secret="wrong")
    assert exc.value.get_error_code() == "InvalidAccessKeySecret"
    assert emu.stats()["QuerySendDetails"] == 4


def test_send_records_over_admin_http(emu):
    day = shanghai_day()
    status, body = admin(emu, "POST", "/_admin/send-records",
                         {"records": [{"phone": PHONE, "send_date": day, "biz_id": "b1", "status": 1}]})
    assert (status, body) == (200, {"added": 1})
    row = query(emu)["SmsSendDetailDTOs"]["SmsSendDetailDTO"][0]
    assert (row["SendStatus"], row["ReceiveDate"]) == (1, "")
    assert admin(emu, "PUT", "/_admin/send-details-error", {"code": "isv.X"})[0] == 200
    assert query(emu)["Code"] == "isv.X"
