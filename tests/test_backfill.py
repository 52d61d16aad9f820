"""scripts/backfill.py against the emulator's FC 2.0 and Lambda invoke endpoints (signatures checked),
with the real reconcile handler standing behind them where the test is about results."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from functions.reconcile import handler as reconcile
from scripts.backfill import main, plan
from shared.sinks.sqlite import SqliteSink
from tests.conftest import AK, SECRET
from tests.contexts import LambdaContext

ROOT = Path(__file__).resolve().parents[1]
PHONES = ["13800000101", "13800000102", "13800000103", "13800000104", "13800000105"]


def day(n: int) -> str:
    return (datetime.now(ZoneInfo("Asia/Shanghai")) - timedelta(days=n)).strftime("%Y-%m-%d")


@pytest.fixture
def deployed(emulator, reconcile_env, monkeypatch):
    """The reconcile handler registered as the emulator's function "reconcile" (FC service "alicom")."""
    env = reconcile_env()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AK)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "cn-hangzhou")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for n in (1, 2, 3):
        for phone in PHONES[:3]:
            emulator.add_send_record(phone, day(n).replace("-", ""), f"b{n}", 3)
    faults: dict[int, str] = {}
    lock = threading.Lock()

    def function(payload: bytes) -> bytes:
        with lock:
            number = len(emulator.invocations("reconcile"))  # this call is already counted
        if faults.get(number) == "raise":
            raise RuntimeError(f"injected fault in invocation {number}")
        return json.dumps(reconcile(json.loads(payload), LambdaContext(timeout=30))).encode()

    emulator.register_function("reconcile", function)
    emulator.faults_at = faults
    emulator.env = env
    return emulator


def fc_args(emu, resume: Path, *more: str) -> list[str]:
    return ["fc", "--endpoint", emu.url, "--service", "alicom", "--function", "reconcile",
            "--date-from", day(3), "--date-to", day(1), "--phones", ",".join(PHONES), "--chunk-size", "2",
            "--resume-file", str(resume), "--no-progress", *more]


def lambda_args(emu, resume: Path, *more: str) -> list[str]:
    return ["lambda", "--endpoint", emu.url, "--function", "reconcile", "--region", "cn-hangzhou",
            "--dates", f"{day(3)},{day(2)},{day(1)}", "--phones", ",".join(PHONES), "--chunk-size", "2",
            "--resume-file", str(resume), "--no-progress", *more]


def payloads(emu) -> list[dict]:
    return [json.loads(p) for p in emu.invocations("reconcile")]


def keyed(events: list[dict]) -> Counter:
    return Counter((e["dates"][0], tuple(e["phones"])) for e in events)


def test_plan_splits_days_and_chunks_with_stable_ids():
    first = plan(["2026-11-01", "2026-11-02"], PHONES, 2)
    assert [(i.day, i.payload["phones"]) for i in first] == [
        ("2026-11-01", PHONES[0:2]), ("2026-11-01", PHONES[2:4]), ("2026-11-01", PHONES[4:]),
        ("2026-11-02", PHONES[0:2]), ("2026-11-02", PHONES[2:4]), ("2026-11-02", PHONES[4:])]
    assert [i.id for i in first] == [i.id for i in plan(["2026-11-01", "2026-11-02"], PHONES, 2)]
    assert len({i.id for i in first}) == 6
    assert plan(["2026-11-01"], PHONES, 5, "biz")[0].payload == {"dates": ["2026-11-01"], "phones": PHONES,
                                                                   "biz_id": "biz"}


def test_fc_sync_backfill_stores_results_and_a_rerun_invokes_nothing(deployed, tmp_path, capsys):
    resume = tmp_path / "run.resume.jsonl"
    assert main(fc_args(deployed, resume)) == 0
    assert len(payloads(deployed)) == 9 and deployed.stats()["FcInvokeFunction"] == 9
    assert keyed(payloads(deployed)) == keyed([i.payload for i in plan([day(3), day(2), day(1)], PHONES, 2)])
    out = capsys.readouterr().out
    total = next(line for line in out.splitlines() if line.strip().startswith("total")).split()
    assert total[1:10] == ["9", "0", "0", "15", "15", "9", "0", "0", "6"]  # invocations..not_found
    assert len(resume.read_text().splitlines()) == 9
    rows = list(SqliteSink(deployed.env["SINK_PATH"]).iter_records())
    assert len(rows) == 9 and {r.source for r in rows} == {"send_record"}

    assert main(fc_args(deployed, resume)) == 0  # everything already done
    assert len(payloads(deployed)) == 9
    assert "skipped" in capsys.readouterr().out


def test_lambda_backfill_survives_a_failed_invocation_and_resumes_only_that_one(deployed, tmp_path, capsys):
    resume = tmp_path / "lambda.resume.jsonl"
    deployed.faults_at[4] = "raise"
    assert main(lambda_args(deployed, resume)) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "injected fault in invocation 4" in out
    assert deployed.stats()["LambdaInvoke"] == 9 and len(resume.read_text().splitlines()) == 8
    fourth = payloads(deployed)[3]
    deployed.faults_at.clear()
    assert main(lambda_args(deployed, resume)) == 0
    assert payloads(deployed)[9:] == [fourth]  # only the failed one again
    assert len(resume.read_text().splitlines()) == 9


def test_killed_backfill_resumes_without_reinvoking_completed_days(deployed, tmp_path):
    resume = tmp_path / "killed.resume.jsonl"
    proc_box: list[subprocess.Popen] = []
    original = deployed.backend.functions._functions["reconcile"]

    def killing(payload: bytes) -> bytes:
        if len(deployed.invocations("reconcile")) == 3:
            os.kill(proc_box[0].pid, signal.SIGKILL)  # the operator's laptop dies mid-invocation
            proc_box[0].wait(10)
        return original(payload)

    deployed.register_function("reconcile", killing)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "scripts.backfill", *fc_args(deployed, resume)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc_box.append(proc)
    assert proc.wait(60) == -signal.SIGKILL
    before = payloads(deployed)
    assert len(before) == 3 and len(resume.read_text().splitlines()) == 2
    deployed.register_function("reconcile", original)
    assert main(fc_args(deployed, resume)) == 0
    counts = keyed(payloads(deployed))
    assert sum(counts.values()) == 9 + 1  # the 3rd was never recorded, so it ran again
    assert all(counts[key] == 1 for key in keyed(before[:2]))  # completed ones: never again
    assert counts[next(iter(keyed(before[2:3])))] == 2


def test_unreached_targets_are_requeued_and_a_pending_follow_up_survives_a_restart(emulator, reconcile_env, tmp_path,
                                                                                  capsys):
    reconcile_env()
    seen: list[dict] = []
    follow_up = {"dates": [day(2)], "phones": [PHONES[1]]}
    fail_follow_up = [True]

    def scripted(payload: bytes) -> bytes:
        event = json.loads(payload)
        seen.append(event)
        if event == follow_up and fail_follow_up[0]:
            fail_follow_up[0] = False
            raise RuntimeError("the follow-up failed once")
        if event == {"dates": [day(2)], "phones": PHONES[:2]}:  # ran out of time for one phone
            return json.dumps({"ok": True, "queried": 1, "delivered": 1, "unreached": follow_up,
                               "unreached_count": 1}).encode()
        return json.dumps({"ok": True, "queried": len(event["phones"]), "unreached": None}).encode()

    emulator.register_function("reconcile", scripted)
    resume = tmp_path / "requeue.jsonl"
    args = ["fc", "--endpoint", emulator.url, "--service", "alicom", "--function", "reconcile", "--dates",
            f"{day(2)},{day(1)}", "--phones", ",".join(PHONES[:3]), "--chunk-size", "2", "--resume-file",
            str(resume), "--no-progress"]
    assert main(args) == 1  # the follow-up failed
    assert seen.count(follow_up) == 1 and len(seen) == 5
    assert main(args) == 0  # the restart runs the recorded follow-up, and nothing else
    assert seen[5:] == [follow_up]
    lines = [json.loads(line) for line in resume.read_text().splitlines()]
    assert [line["id"].count("/r") for line in lines] == [0, 0, 0, 0, 1]
    assert next(line for line in lines if line["requeued"])["requeued"]["payload"] == follow_up


def test_lambda_async_and_local_backfills(deployed, tmp_path, capsys):
    resume = tmp_path / "async.jsonl"
    assert main(lambda_args(deployed, resume, "--async")) == 0
    assert deployed.wait_async(10)
    assert len(payloads(deployed)) == 9 and deployed.stats()["LambdaInvoke"] == 9
    assert all(json.loads(line)["result"] is None for line in resume.read_text().splitlines())
    assert "async" in capsys.readouterr().out

    before = deployed.stats()["QuerySendDetails"]
    assert main(["--local", "--dates", day(1), "--phones", ",".join(PHONES), "--no-progress"]) == 0
    assert deployed.stats()["QuerySendDetails"] == before + 5
    assert len(payloads(deployed)) == 9  # in-process: no invoke API


@pytest.mark.parametrize("bad, says", [
    (["--dates", "2020-01-01", "--phones", "13800000000"], "more than 30 days ago"),
    (["--dates", "TODAY", "--phones", "13800000000,12"], "--phones: item 1"),
    (["--date-from", "TODAY"], "--date-to"),
    (["--dates", "TODAY"], "--phones"),
])
def test_bad_arguments_invoke_nothing(deployed, tmp_path, capsys, bad, says):
    bad = [a.replace("TODAY", day(0)) for a in bad]
    assert main(["fc", "--endpoint", deployed.url, "--service", "alicom", "--function", "reconcile",
                 "--no-progress", *bad]) == 2
    assert says in capsys.readouterr().err
    assert deployed.stats()["total"] == 0


def test_targets_still_unreached_after_max_requeue_are_reported(emulator, reconcile_env, tmp_path, capsys):
    reconcile_env()

    def always_short(payload: bytes) -> bytes:
        event = json.loads(payload)
        return json.dumps({"ok": True, "queried": 0, "unreached": event,
                           "unreached_count": len(event["phones"])}).encode()

    emulator.register_function("reconcile", always_short)
    args = ["fc", "--endpoint", emulator.url, "--service", "alicom", "--function", "reconcile", "--dates", day(1),
            "--phones", PHONES[0], "--max-requeue", "2", "--no-progress"]
    assert main(args) == 1
    assert len(emulator.invocations("reconcile")) == 3  # the first, then two re-queues
    out = capsys.readouterr().out
    assert "UNREACHED after 2 re-queues" in out and PHONES[0] not in out


def test_international_numbers_reach_the_function_with_their_plus(deployed, tmp_path, capsys):
    """`+85212345678` is normalised to `85212345678` for de-duplication; the event must carry the
    '+' again, or the function's own check refuses the bare digits (and every such number)."""
    deployed.add_send_record("85212345678", day(1).replace("-", ""), "intl", 3)
    phones_file = tmp_path / "phones.txt"
    phones_file.write_text("+85212345678\n13800000101\n00852 12345678\n")
    assert main(["fc", "--endpoint", deployed.url, "--service", "alicom", "--function", "reconcile", "--dates", day(1),
                 "--phones", "+85212345678,13800000101,0085212345678", "--no-progress"]) == 0
    assert [p["phones"] for p in payloads(deployed)] == [["+85212345678", "13800000101"]]
    rows = {r.body["phone_number"]: r.body["send_status"] for r in SqliteSink(deployed.env["SINK_PATH"]).iter_records()}
    assert rows.get("85212345678") == 3, rows
    phones_file.write_text("+85212345678\n# a comment\n13800000102\n")
    assert main(["fc", "--endpoint", deployed.url, "--service", "alicom", "--function", "reconcile", "--dates", day(2),
                 "--phones-file", str(phones_file), "--no-progress"]) == 0
    assert payloads(deployed)[-1]["phones"] == ["+85212345678", "13800000102"]
