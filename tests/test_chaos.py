"""The chaos harness's CI configuration (scripts/chaos/, preset "ci"): four seeded runs of the
real drain in separate processes, one per sink (sqlite, file, DynamoDB and S3 on moto behind
the fault proxy), SIGKILLed at random and at exact crash points, under every emulator fault
(hung token, receive and delete calls and a throttling token API among them), token expiry,
short visibility timeouts, sink failures (a sink endpoint that never answers among them),
receipts whose keys are at and far over the table backends' key limits, and overlapping runs.
It must fail safe: nothing lost, no duplicate rows, every long key on one row read back by
its full key, no run past its deadline, every exit code as the run's summary says, no secret
or phone number in any output. Preset "ci-workers" does the same on sqlite and DynamoDB with
fan-out to K = 4: drains that meet a backlog start workers through the emulator's invoke API,
each a drain process of its own."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scripts.chaos.config import FAULT_KINDS, HOOKS, PRESETS, REPO, SINKS
from scripts.chaos.results import render, run_config

pytestmark = pytest.mark.slow


def run_preset(name: str, tmp_path_factory) -> dict:
    lines: list[str] = []
    summary = run_config(PRESETS[name], tmp_path_factory.mktemp(f"chaos-{name}"), log=lines.append)
    print("\n".join(lines))
    return summary


@pytest.fixture(scope="module")
def ci(tmp_path_factory):
    return run_preset("ci", tmp_path_factory)


def by_sink(ci, sink: str) -> dict:
    return next(r for r in ci["per_run"] if r["sink"] == sink)


def test_the_drain_fails_safe(ci):
    assert ci["ok"], render(ci)
    assert ci["lost"] == 0 and ci["table_duplicates"] == 0 and ci["body_mismatches"] == 0
    assert ci["left_in_queue"] == 0
    assert ci["stored"] == ci["facts"] and ci["dead_lettered"] > 0
    assert ci["worst_overrun"] is not None and ci["worst_overrun"] <= 0
    assert ci["platform_kills"] == 0 and not ci["tracebacks"]
    assert ci["exit_mismatches"] == 0 and ci["no_result"] == 0


def test_every_fault_kind_struck_at_least_once(ci):
    missing = [kind for kind in FAULT_KINDS if not ci["faults"][kind]]
    assert not missing, f"fault kinds that never struck: {missing}\n{render(ci)}"
    assert ci["runs_by_sink"] == {sink: 1 for sink in SINKS}
    details = ci["fault_details"]
    assert any(details.get(f"hang:{scope}") for scope in ("token", "BatchReceiveMessage", "BatchDeleteMessage"))
    assert any(details.get(f"token_throttle:{code}") for code in ("Throttling.User", "Throttling", "ServiceUnavailable"))


def test_every_drain_ending_is_counted(ci):
    endings = ci["endings"]
    assert sum(endings.values()) == ci["invocations"]
    assert sum(n for e, n in endings.items() if e.startswith("ok:")) > 0
    assert sum(n for e, n in endings.items() if e.startswith("failed:")) > 0  # faults made runs fail, and exit 1
    assert endings.get("killed:chaos", 0) == ci["kills"] and endings.get("killed:crashpoint", 0) == ci["crashpoints"]


def test_long_keys_land_on_one_row_and_read_back_by_their_full_key(ci):
    """8 long-key receipts per run (two delivered twice): 1,024/1,025/1,046/1,811 bytes and
    2,048/2,049/2,067/3,072 bytes. DynamoDB (partition key at most 2,048 bytes) stores the three
    over 2,048 under a bounded key; sqlite keeps every key whole."""
    assert ci["long_keys"]["facts"] == 32 and ci["long_keys"]["stored"] == 32
    dynamodb, sqlite = by_sink(ci, "dynamodb")["long_keys"], by_sink(ci, "sqlite")["long_keys"]
    assert (dynamodb["bounded"], dynamodb["read_back"], dynamodb["longest_stored_key_bytes"]) == (3, 8, 2048)
    assert (sqlite["bounded"], sqlite["read_back"], sqlite["longest_stored_key_bytes"]) == (0, 8, 3072)
    assert by_sink(ci, "dynamodb")["table_duplicates"] == 0


def test_a_hung_sink_was_met_and_its_runs_failed_in_time(ci):
    """Each cloud run ends its fault window with a sink that accepts requests and answers none
    until the drain that meets it has returned: that drain must fail with sink_error (exit 1,
    RunFailed raised) by its deadline, and a later run store everything once."""
    hang = ci["sink_hang"]
    assert ci["faults"]["sink_hang"] > 0 and hang["hung_to_the_end"] >= 1, render(ci)
    assert not hang["wrong_endings"] and hang["endings"].get("failed:sink_error", 0) >= hang["hung_to_the_end"]
    assert ci["worst_overrun"] <= 0 and ci["lost"] == 0 and ci["table_duplicates"] == 0


def test_kills_struck_drains_in_flight(ci):
    in_flight = {"mid_receive", "received_not_written", "mid_write", "between_write_and_delete", "mid_delete"}
    assert ci["kills"] + ci["crashpoints"] >= 3
    assert len(in_flight & set(ci["kills_by_phase"])) >= 2, ci["kills_by_phase"]
    assert ci["redeliveries"] > 0  # kills and faults made messages come back, and they were deduplicated


def test_no_secret_signature_or_phone_number_in_any_output(ci):
    s = ci["security"]
    assert s["secrets_checked"] > 20 and s["output_bytes"] > 10_000  # tokens were issued, drains logged
    assert s["leaked_secrets"] == 0 and s["secrets_in_stored_data"] == 0
    assert s["unmasked_phones"] == 0 and s["phone_like_strings"] == 0
    assert s["masked_phones_seen"] > 0  # debug logs carried masked numbers: the check means something


def test_the_harness_notices_a_drain_that_deletes_before_it_stores(tmp_path):
    """Self-test: the same harness against a drain sabotaged to break invariant 1 reports losses."""
    from dataclasses import replace

    # Every drain started in the chaos window gets an exact crash point (round-robin: receive,
    # received, write, ...), so some crash lands after the sabotaged delete and before the write;
    # at the preset's 30% rate a run could, by luck, have none there.
    summary = run_config(replace(PRESETS["ci"], runs=1, crash_rate=1.0, sabotage="delete_before_write",
                                 name="sabotage"), tmp_path, log=lambda line: None)
    assert summary["runs_by_sink"] == {"sqlite": 1}
    assert not summary["ok"] and summary["lost"] > 0


@pytest.fixture(scope="module")
def fanned(tmp_path_factory):
    return run_preset("ci-workers", tmp_path_factory)


def test_with_four_workers_per_drain_workers_start_and_nothing_is_lost(fanned):
    """Preset "ci-workers": every drain may fan out to 3 workers through the emulator's FC 3.0
    invoke API, each run by the harness as a drain process of its own, killed, crashed and held
    to its deadline like the scheduled ones; sqlite and DynamoDB, where a fact written by two
    workers would show as a second row."""
    assert fanned["ok"], render(fanned)
    assert fanned["runs_by_sink"] == {"sqlite": 1, "dynamodb": 1}
    assert fanned["lost"] == 0 and fanned["table_duplicates"] == 0 and fanned["left_in_queue"] == 0
    assert fanned["stored"] == fanned["facts"] and fanned["body_mismatches"] == 0
    f = fanned["fan_out"]
    assert f["workers_per_drain"] == 4 and f["runs_without_a_worker"] == 0, render(fanned)
    assert f["workers_started"] >= 3 and f["accepted"] == f["workers_started"]  # every accepted invocation ran
    assert f["not_started"] == 0 and f["left_running"] == {"workers": 0, "scheduled": 0}
    assert sum(f["worker_endings"].values()) == f["workers_started"]
    assert f["worker_endings"].get("ok:empty", 0) > 0  # workers drained, not only died
    assert f["workers_that_fanned_out"] == 0 and f["worker_platform_kills"] == 0
    assert f["worker_worst_overrun"] is not None and f["worker_worst_overrun"] <= 0
    assert fanned["worst_overrun"] <= 0 and fanned["exit_mismatches"] == 0 and fanned["no_result"] == 0
    s = fanned["security"]
    assert s["leaked_secrets"] == 0 and s["unmasked_phones"] == 0 and s["phone_like_strings"] == 0


def test_the_harness_notices_a_worker_that_deletes_before_it_stores(tmp_path):
    """Self-test: only the workers are sabotaged (the scheduled drains are sound and neither killed
    nor crashed, so that they live to fan out), and every worker started in the fault window dies
    right after its first receive that returned messages: after the sabotaged delete, before any
    write. Losses can come only from workers, so the harness must have started them and checked
    what they did. (With the crash points in turn, the only worker of a run could be given one
    before its first receive or after its write, lose nothing, and fail this test: seen in CI.)"""
    from dataclasses import replace

    # A longer window and timeouts than the preset's, so that workers start inside the window with
    # time to receive even when a busy host slows their start and their fan-out's SDK import.
    summary = run_config(replace(PRESETS["ci-workers"], runs=1, messages=600, chaos_seconds=12.0, timeout_min=5.0,
                                 timeout_max=8.0, crash_rate=0.0, kill_rate=0.0, worker_crash_rate=1.0,
                                 worker_crash_at="received:1", sabotage="delete_before_write", sabotaged="workers",
                                 name="sabotage-workers"),
                         tmp_path, log=lambda line: None)
    assert summary["runs_by_sink"] == {"sqlite": 1} and summary["fan_out"]["workers_started"] > 0
    assert not summary["ok"] and summary["lost"] > 0, (summary["fan_out"], summary["crashpoints_by_point"])


def test_the_probe_is_inert_without_its_variables():
    code = ("import shared.runtime as r, scripts.chaos.probe as p; "
            "print(r.DrainRuntime.open_queue.__qualname__, r.make_sink.__module__)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALICOM_CHAOS_")}
    env["PYTHONPATH"] = f"{HOOKS}{os.pathsep}{REPO}"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["DrainRuntime.open_queue", "shared.sinks"], out.stderr
    env["ALICOM_CHAOS_CRASH_AT"] = "write:1"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["install.<locals>.probed_open_queue", "scripts.chaos.probe"], out.stderr


def test_the_probe_crashes_an_object_sink_write_after_its_first_object(tmp_path):
    """The "write_part" crash point goes through the object sinks' public `on_object_stored`
    hook: a write of records and dead letters (two objects) dies after the first is stored."""
    code = f"""
from scripts.chaos.probe import Probe
from scripts.receipts import BAD_BODIES, b64json, make_receipts
from shared.decode import decode_message
from shared.records import MnsMeta
from shared.sinks.file import FileSink

records = [decode_message("SmsReport", b64json(b), MnsMeta(message_id=f"m{{i}}"))
           for i, b in enumerate(make_receipts("SmsReport", 3))]
dead = [decode_message("SmsReport", BAD_BODIES[0], MnsMeta(message_id="bad"))]
sink = Probe(None, ("write_part", 1)).wrap_sink(FileSink({str(tmp_path)!r}))
sink.write(records, dead)
print("the write went on")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    stored = sorted(p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*.jsonl"))
    assert out.returncode == -9 and "the write went on" not in out.stdout, (out.returncode, out.stdout, out.stderr)
    assert stored == ["type=SmsReport"]  # the records' object; the dead letters' never written


def test_hung_deletes_do_not_carry_a_run_past_its_deadline(emulator, drain_env):
    """Found by the chaos harness (seed 5, --mns-timeout 4): deletes that hang for the socket
    timeout must not hold the run past its deadline; what they leave comes back and dedupes."""
    import time

    from functions.drain import handler
    from scripts.receipts import make_receipts
    from tests.contexts import fc_context

    drain_env(MNS_TIMEOUT_SECONDS="4", DRAIN_SAFETY_MARGIN_SECONDS="1", DRAIN_COALESCE_SECONDS="0")
    queue = emulator.queue_name("SmsReport")
    for body in make_receipts("SmsReport", 64, seed=9):
        emulator.enqueue_receipt(queue, body)
    emulator.set_faults(slow=1.0, slow_seconds=6.0, apis=["BatchDeleteMessage"])
    started = time.monotonic()
    result = handler(b'{"message_types": ["SmsReport"]}', fc_context(timeout=3.0))
    took = time.monotonic() - started
    assert took < 3.0 and result["remaining_seconds_at_exit"] > 0, (took, result)
    assert result["totals"]["stored"] > 0 and result["totals"]["deleted"] == 0


def test_a_hung_token_api_does_not_carry_a_run_past_its_deadline(emulator, drain_env):
    """Found with the chaos harness's token-scoped slow faults: QueryTokenForMnsQueue that
    hangs for the socket timeout (with SDK retries) must not hold the run past its deadline."""
    import time

    from functions.drain import handler
    from scripts.receipts import make_receipts
    from shared.platform import RunFailed
    from tests.contexts import fc_context

    drain_env(MNS_TIMEOUT_SECONDS="4", DRAIN_SAFETY_MARGIN_SECONDS="1")
    for body in make_receipts("SmsReport", 20, seed=9):
        emulator.enqueue_receipt(emulator.queue_name("SmsReport"), body)
    emulator.set_faults(slow=1.0, slow_seconds=6.0, apis=["token"])
    started = time.monotonic()
    with pytest.raises(RunFailed, match="token_error") as failed:  # nothing was received: a failed run
        handler(b'{"message_types": ["SmsReport"]}', fc_context(timeout=3.0))
    took = time.monotonic() - started
    result = failed.value.summary
    assert took < 3.0 and result["remaining_seconds_at_exit"] > 0, (took, result)
    assert result["totals"]["received"] == 0 and "SDK.HttpError" in result["error"]
