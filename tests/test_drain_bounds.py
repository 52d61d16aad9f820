"""Issue 12 at the drain's edges: failures that reach the platform, settings that cannot silently
do nothing, a real coalesce bound, errors that are retried. Real SDKs, real sockets, the emulator."""
from __future__ import annotations

import json
import threading
import time

import pytest

from functions.drain import handler
from scripts.receipts import make_receipts
from shared import metrics
from shared.clock import SYSTEM_CLOCK
from shared.decode import decode_message
from shared.platform import EventError, RunFailed
from shared.runtime import drain_runtime
from shared.settings import SettingsError
from shared.sinks.base import Sink, SinkError
from shared.sinks.sqlite import SqliteSink
from shared.tokens import TokenCache
from tests.conftest import TYPES
from tests.contexts import LambdaContext, fc_context


def api_calls(emulator) -> int:
    return sum(v for v in emulator.stats().values() if isinstance(v, int))


def enqueue(emulator, mtype: str, n: int, seed: int = 0) -> list[dict]:
    bodies = make_receipts(mtype, n, seed)
    for body in bodies:
        emulator.enqueue_receipt(emulator.queue_name(mtype), body)
    return bodies


def metric_lines(out: str) -> list[dict]:
    lines = []
    for line in out.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            lines.append(obj)
    return lines


# -- a failed run is a failed invocation ----------------------------------------------------

@pytest.mark.parametrize("platform", ["fc", "lambda"])
def test_a_failing_sink_raises_after_the_summary_is_logged_and_run_failed_emitted(
        emulator, drain_env, tmp_path, captured, platform):
    blocker = tmp_path / "blocker"  # the partition is a file: the write fails, start-up does not
    blocker.mkdir()
    (blocker / "type=SmsReport").write_text("a file where the sink wants a directory")
    drain_env(SINK_PATH=str(blocker))
    enqueue(emulator, "SmsReport", 5)
    event, context = (b"{}", fc_context(timeout=20)) if platform == "fc" else ({}, LambdaContext(timeout=20))
    captured.readouterr()
    with pytest.raises(RunFailed) as failed:
        handler(event, context)
    assert str(failed.value).startswith("drain run failed: sink_error: ")
    summary = failed.value.summary
    assert summary["ok"] is False and summary["totals"]["deleted"] == 0
    out = metric_lines(captured.readouterr().out)
    logged = [o for o in out if o.get("message") == "drain run finished"]
    assert logged and logged[0]["summary"]["stop_reason"] == "sink_error"
    if platform == "fc":
        (run,) = [o for o in out if o.get("metric_set") == metrics.DRAIN_RUN_SET]
        assert run["run_failed"] == 1 and run["ok"] is False
    else:
        (run,) = [o for o in out if "_aws" in o and "message_type" not in o]
        assert run["run_failed"] in (1, [1])  # EMF: a value or a list of values
    assert emulator.queue_state(emulator.queue_name("SmsReport"))["deleted"] == 0


def test_an_event_nested_too_deep_fails_the_run_with_a_clear_error(emulator, drain_env, captured):
    drain_env()
    emulator.reset_stats()
    captured.readouterr()
    with pytest.raises(EventError, match="nested more than 16 levels deep"):
        handler(b"[" * 100_000 + b"]" * 100_000, fc_context())
    (run,) = [o for o in metric_lines(captured.readouterr().out) if o.get("metric_set") == metrics.DRAIN_RUN_SET]
    assert run["run_failed"] == 1 and run["error_type"] == "EventError"
    assert api_calls(emulator) == 0


def test_duplicate_message_types_in_an_event_are_refused(emulator, drain_env):
    drain_env()
    with pytest.raises(EventError, match="message_types: SmsUp listed more than once"):
        handler({"message_types": ["SmsUp", "SmsUp"]}, LambdaContext())


# -- settings that cannot silently do nothing -----------------------------------------------

def test_a_margin_at_or_above_the_timeout_is_refused_at_start_up_naming_it(emulator, drain_env):
    drain_env(DRAIN_SAFETY_MARGIN_SECONDS="60")
    enqueue(emulator, "SmsReport", 3)
    emulator.reset_stats()
    with pytest.raises(SettingsError, match=r"DRAIN_SAFETY_MARGIN_SECONDS: 60 s is at or above the function's 55 s"):
        handler(b"{}", fc_context(timeout=55))
    assert api_calls(emulator) == 0
    with pytest.raises(SettingsError, match="DRAIN_SAFETY_MARGIN_SECONDS"):
        handler({}, LambdaContext(timeout=60))  # equal to the time left: refused too


def test_a_run_whose_budget_is_gone_before_the_first_receive_fails(emulator, drain_env):
    drain_env(DRAIN_SAFETY_MARGIN_SECONDS="2.8")
    enqueue(emulator, "SmsReport", 3)
    with pytest.raises(RunFailed, match="no_time") as failed:
        handler(b'{"message_types": ["SmsReport"]}', fc_context(timeout=3))
    summary = failed.value.summary
    assert summary["totals"]["received"] == 0 and summary["failed_types"] == ["SmsReport"]
    assert "DRAIN_SAFETY_MARGIN_SECONDS" in summary["error"]
    assert emulator.queue_state(emulator.queue_name("SmsReport"))["visible"] == 3


# -- a real coalesce bound -------------------------------------------------------------------

def trickle(emulator, mtype: str, bodies: list[dict], every: float) -> threading.Thread:
    def feed() -> None:
        for body in bodies:
            emulator.enqueue_receipt(emulator.queue_name(mtype), body)
            time.sleep(every)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def test_a_trickle_with_a_long_poll_is_written_and_deleted_inside_the_visibility_timeout(emulator, drain_env, tmp_path):
    """Coalesce 1 s, long poll 8 s, visibility 3 s: each batch must be written and deleted before
    its messages reappear, although a receive may wait 8 s for the next message."""
    db = tmp_path / "r.db"
    drain_env(SINK="sqlite", SINK_PATH=str(db), DRAIN_COALESCE_SECONDS="1", DRAIN_WAIT_SECONDS="8",
              DRAIN_SAFETY_MARGIN_SECONDS="0.5")
    queue = emulator.queue_name("SmsReport")
    emulator.create_queue(queue, visibility_timeout=3)
    bodies = make_receipts("SmsReport", 12, seed=21)
    feeder = trickle(emulator, "SmsReport", bodies, every=0.7)
    result = handler(b'{"message_types": ["SmsReport"]}', fc_context(timeout=14))
    feeder.join()
    assert result["ok"], result
    assert result["totals"]["delete_failures"] == 0
    assert result["totals"]["received"] == result["totals"]["stored"] == result["totals"]["deleted"] == 12
    stored = list(SqliteSink(str(db)).iter_records())
    assert len(stored) == 12 and {r.mns.dequeue_count for r in stored} == {1}  # each received once
    state = emulator.queue_state(queue)
    assert state["visible"] + state["in_flight"] == 0


def test_the_coalesce_window_is_kept_within_a_third_of_the_visibility_timeout(emulator, drain_env, tmp_path):
    """The default 5 s window on a queue whose messages come back after 1.5 s: the drain reads the
    visibility timeout off the first receive (NextVisibleTime - FirstDequeueTime) and writes sooner."""
    db = tmp_path / "r.db"
    drain_env(SINK="sqlite", SINK_PATH=str(db), DRAIN_WAIT_SECONDS="3", DRAIN_CONCURRENCY="1")
    queue = emulator.queue_name("SmsUp")
    emulator.create_queue(queue, visibility_timeout=1.5)
    feeder = trickle(emulator, "SmsUp", make_receipts("SmsUp", 6, seed=5), every=0.4)
    result = handler(b'{"message_types": ["SmsUp"]}', fc_context(timeout=12))
    feeder.join()
    assert result["ok"] and result["totals"]["delete_failures"] == 0, result
    assert result["totals"]["stored"] == 6 and {r.mns.dequeue_count for r in SqliteSink(str(db)).iter_records()} == {1}


# -- errors that are retried, not fatal ---------------------------------------------------------

@pytest.mark.parametrize("fault,share", [("server_error", 0.5), ("drop", 0.75)])
def test_failed_receives_are_retried_and_the_run_succeeds(emulator, drain_env, fault, share):
    """The emulator's faults are seeded and, with one consumer, meet the receives in a fixed order.
    (The SDK resends a request once after a dropped connection, so drops need a larger share to
    reach the drain.)"""
    drain_env(DRAIN_CONCURRENCY="1")
    bodies = enqueue(emulator, "SmsReport", 40)
    emulator.set_faults(**{fault: share}, apis=["BatchReceiveMessage"])
    result = handler({"message_types": ["SmsReport"]}, LambdaContext(timeout=30))
    assert result["ok"], result
    assert result["totals"]["stored"] == len(bodies)
    errors = result["types"]["SmsReport"]["errors"]
    assert sum(errors.values()) >= 1, errors  # faults met, and survived
    assert emulator.queue_state(emulator.queue_name("SmsReport"))["visible"] == 0


def test_the_token_is_refreshed_exactly_at_the_buffer_boundary(emulator, drain_env):
    """TOKEN_REFRESH_BUFFER_SECONDS is a boundary to the second: a token with the buffer and half a
    second left is kept; with half a second less than the buffer it is replaced."""
    from tests.test_mns_queue import ShiftedClock

    drain_env()
    clock = ShiftedClock()
    cache = TokenCache(drain_runtime().tokens.source, clock, refresh_buffer=120)
    first = cache.get("SmsReport", timeout=5)
    to_expiry = first.seconds_left(clock.now())
    clock.ahead = to_expiry - 120.5  # 120.5 s left: kept
    assert cache.get("SmsReport", timeout=5) is first and cache.fetches == 1
    clock.ahead = to_expiry - 119.5  # 119.5 s left: inside the buffer, replaced
    assert cache.get("SmsReport", timeout=5) is not first and cache.fetches == 2


def test_a_token_refusal_is_asked_once_per_type_not_once_per_consumer(emulator, drain_env):
    """Twelve consumers (4 types x 3) and a wrong secret: one refused call per type, then every
    consumer of the type knows (the root of an old flaky 'retry storm' test)."""
    drain_env(ALIBABA_CLOUD_ACCESS_KEY_SECRET="wrong-secret-value")
    for mtype in TYPES:
        enqueue(emulator, mtype, 3)
    emulator.reset_stats()
    with pytest.raises(RunFailed, match="token_error"):
        handler(b"{}", fc_context())
    assert emulator.stats().get("QueryTokenForMnsQueue", 0) == len(TYPES)


# -- business keys, written out -------------------------------------------------------------------

def test_business_key_parts_escape_percent_and_hash():
    body = {"biz_id": "12%#34", "phone_number": "13800000000", "report_time": "2026-11-25 10:00:00"}
    import base64

    raw = base64.b64encode(json.dumps(body).encode()).decode()
    record = decode_message("SmsReport", raw)
    assert record.key == "SmsReport#12%25%2334#13800000000"
    other = decode_message("SmsReport", base64.b64encode(json.dumps(
        dict(body, biz_id="12%25#34")).encode()).decode())
    assert other.key == "SmsReport#12%2525%2334#13800000000"  # no two ids share a key


# -- throttling retried, failures isolated --------------------------------------------------------

def test_a_token_api_throttling_a_third_of_its_calls_costs_nothing(emulator, drain_env, tmp_path):
    """400 Throttling.User ("user flow control") to 30% of the token calls: eight cold runs (each
    fetches a token per type) all succeed and store everything; the throttled calls were retried."""
    from shared.runtime import reset_runtime

    db = tmp_path / "r.db"
    drain_env(SINK="sqlite", SINK_PATH=str(db))
    emulator.set_faults(throttle=0.3, throttle_code="Throttling.User", apis=["token"])
    throttled = sent = 0
    for run in range(8):
        reset_runtime()  # a cold container: no cached token
        sent += sum(len(enqueue(emulator, t, 20, seed=run)) for t in TYPES)
        result = handler(b"{}", fc_context(timeout=30))
        assert result["ok"], result
        throttled += sum(t["errors"].get("Throttling.User", 0) for t in result["types"].values())
        assert SqliteSink(str(db)).count("records") == sent
    assert throttled >= 1  # the fault struck (seeded: the same calls every time)


def test_one_type_refused_its_token_does_not_stop_the_others(emulator, drain_env):
    """SmsUp's token is refused for good; SmsReport's (and the rest) work: they are stored and
    deleted in that same run, and the run fails naming SmsUp."""
    drain_env(DRAIN_CONCURRENCY="1")
    emulator.set_latency(0.02)  # more receives than one refused token call lasts
    sent = {t: enqueue(emulator, t, 200, seed=8) for t in TYPES}
    emulator.refuse_tokens("SmsUp", "Forbidden.NoPermission", "not subscribed to SmsUp")
    with pytest.raises(RunFailed, match="token_error: SmsUp: .*Forbidden.NoPermission") as failed:
        handler(b"{}", fc_context(timeout=30))
    summary = failed.value.summary
    assert summary["failed_types"] == ["SmsUp"] and summary["types"]["SmsUp"]["stop_reason"] == "token_error"
    for mtype in TYPES:
        state = emulator.queue_state(emulator.queue_name(mtype))
        if mtype == "SmsUp":
            assert summary["types"][mtype]["received"] == 0 and state["visible"] == len(sent[mtype])
        else:
            assert summary["types"][mtype]["stored"] == summary["types"][mtype]["deleted"] == len(sent[mtype])
            assert state["visible"] + state["in_flight"] == 0
    # One refused call for the type, not one per consumer.
    assert [r["answer"] for r in emulator.token_requests() if r["message_type"] == "SmsUp"] == ["Forbidden.NoPermission"]


def test_a_hung_queue_endpoint_fails_the_run_in_time_and_deletes_nothing(emulator, drain_env):
    drain_env(MNS_TIMEOUT_SECONDS="30", DRAIN_SAFETY_MARGIN_SECONDS="1")
    enqueue(emulator, "SmsReport", 10)
    emulator.set_faults(hang=1.0, apis=["BatchReceiveMessage"])
    started = time.monotonic()
    with pytest.raises(RunFailed, match="queue_error"):
        handler(b'{"message_types": ["SmsReport"]}', fc_context(timeout=6))
    assert time.monotonic() - started < 6 - 0.5
    emulator.set_faults()
    assert emulator.queue_state(emulator.queue_name("SmsReport"))["visible"] == 10


# -- what the queue says back -------------------------------------------------------------------

def test_a_partly_failed_batch_delete_is_counted_and_its_messages_come_back_once(emulator, drain_env, tmp_path):
    db = tmp_path / "r.db"
    drain_env(SINK="sqlite", SINK_PATH=str(db), DRAIN_CONCURRENCY="1")
    queue = emulator.queue_name("SmsReport")
    emulator.create_queue(queue, visibility_timeout=1)
    bodies = enqueue(emulator, "SmsReport", 16, seed=12)
    emulator.fail_deletes(queue, handles=3)
    first = handler({"message_types": ["SmsReport"]}, LambdaContext(timeout=20))
    assert first["ok"] and first["totals"]["stored"] == 16
    assert (first["totals"]["deleted"], first["totals"]["delete_failures"]) == (13, 3), first
    assert first["types"]["SmsReport"]["errors"] == {"delete:ReceiptHandleError": 3}
    time.sleep(1.2)
    second = handler({"message_types": ["SmsReport"]}, LambdaContext(timeout=20))
    assert (second["totals"]["received"], second["totals"]["deleted"]) == (3, 3)
    assert SqliteSink(str(db)).count("records") == len(bodies)  # no second row for the three


def test_a_delete_refused_for_its_token_is_retried_once_with_a_fresh_one(emulator, drain_env):
    drain_env(DRAIN_CONCURRENCY="1")
    enqueue(emulator, "SmsReport", 16, seed=13)
    emulator.expire_tokens_on("BatchDeleteMessage")
    result = handler({"message_types": ["SmsReport"]}, LambdaContext(timeout=20))
    assert result["ok"], result
    assert (result["totals"]["deleted"], result["totals"]["delete_failures"]) == (16, 0)
    assert result["totals"]["api_calls"]["QueryTokenForMnsQueue"] == 2  # the first, then the fresh one
    assert result["totals"]["api_calls"]["BatchDeleteMessage"] == 2  # refused, then done
    assert emulator.queue_state(emulator.queue_name("SmsReport"))["visible"] == 0


@pytest.mark.parametrize("field,mode", [("MessageId", "empty"), ("ReceiptHandle", "missing"),
                                        ("EnqueueTime", "empty"), ("MessageBodyMD5", "missing")])
def test_a_receive_answer_with_a_broken_field_is_retried_not_stored(emulator, drain_env, tmp_path, field, mode):
    db = tmp_path / "r.db"
    drain_env(SINK="sqlite", SINK_PATH=str(db), DRAIN_CONCURRENCY="1")
    queue = emulator.queue_name("SmsReport")
    bodies = enqueue(emulator, "SmsReport", 5, seed=14)
    emulator.malform_receives(queue, field=field, mode=mode, count=2)
    result = handler({"message_types": ["SmsReport"]}, LambdaContext(timeout=20))
    assert result["ok"], result
    assert result["types"]["SmsReport"]["errors"] == {"RespDataDamaged": 2}
    assert result["totals"]["stored"] == len(bodies) and result["totals"]["dead_lettered"] == 0
    assert SqliteSink(str(db)).count("dead_letters") == 0 and emulator.queue_state(queue)["visible"] == 0


# -- credentials and OwnerId --------------------------------------------------------------------

def test_the_function_roles_sts_credentials_sign_the_token_calls(emulator, drain_env):
    role = emulator.issue_role_credentials()
    drain_env(ALIBABA_CLOUD_ACCESS_KEY_ID=role["access_key_id"], ALIBABA_CLOUD_ACCESS_KEY_SECRET=role["access_key_secret"],
              ALIBABA_CLOUD_SECURITY_TOKEN=role["security_token"])
    enqueue(emulator, "SmsReport", 4)
    assert handler(b'{"message_types": ["SmsReport"]}', fc_context())["totals"]["stored"] == 4
    drain_env(ALIBABA_CLOUD_SECURITY_TOKEN="CAISnot-the-role-token")
    with pytest.raises(RunFailed, match="InvalidSecurityToken"):
        handler(b'{"message_types": ["SmsReport"]}', fc_context())


def test_owner_id_is_sent_on_every_token_call(emulator, drain_env):
    drain_env(ALICOM_OWNER_ID="1234567890123")
    for mtype in ("SmsReport", "SmsUp"):
        enqueue(emulator, mtype, 2)
    handler({"message_types": ["SmsReport", "SmsUp"]}, LambdaContext())
    requests = emulator.token_requests()
    assert sorted(r["message_type"] for r in requests) == ["SmsReport", "SmsUp"]
    assert {r["owner_id"] for r in requests} == {"1234567890123"}
    with pytest.raises(SettingsError, match="ALICOM_OWNER_ID"):
        drain_env(ALICOM_OWNER_ID="reseller-7")
        handler({}, LambdaContext())


def test_a_receive_that_keeps_failing_is_tried_six_times_then_fails_the_type(emulator, drain_env):
    """ERROR_BACKOFF: a 5xx is retried, five times, with backoff; then the type fails, in time."""
    drain_env(DRAIN_CONCURRENCY="1")
    enqueue(emulator, "SmsReport", 5)
    emulator.set_faults(server_error=1.0, apis=["BatchReceiveMessage"])
    emulator.reset_stats()
    with pytest.raises(RunFailed, match="queue_error: SmsReport: MNS BatchReceiveMessage failed: InternalError") as failed:
        handler({"message_types": ["SmsReport"]}, LambdaContext(timeout=30))
    summary = failed.value.summary
    assert summary["types"]["SmsReport"]["errors"] == {"InternalError": 6}
    assert emulator.stats()["BatchReceiveMessage"] == 6
    assert emulator.queue_state(emulator.queue_name("SmsReport"))["visible"] == 5


class _SinkThatIgnoresItsDeadline(Sink):
    """A backend whose write outlives every timeout (a server trickling bytes), until released."""

    name = "stuck"

    def __init__(self) -> None:
        self.release = threading.Event()

    @classmethod
    def from_settings(cls, settings, credentials=None):
        return cls()

    def write(self, records, dead_letters, deadline=None):
        self.release.wait(30)
        raise SinkError(self.name, "released by the test")

    def iter_records(self, message_types=None, date_from=None, date_to=None):
        return iter(())

    def iter_dead_letters(self, message_types=None, date_from=None, date_to=None):
        return iter(())


def test_a_consumer_stuck_past_the_deadline_ends_the_run_in_time_as_a_failure(emulator, drain_env):
    """The backstop: the run returns at the deadline less a quarter of the margin (1 s of a 4 s
    margin), failed as 'stuck', although a consumer is still inside a call; nothing it holds is
    deleted."""
    from shared.clock import Deadline
    from shared.drain import Drain, DrainOptions

    drain_env()
    enqueue(emulator, "SmsReport", 5)
    runtime, sink = drain_runtime(), _SinkThatIgnoresItsDeadline()
    drain = Drain(runtime.tokens, runtime.open_queue, sink,
                  DrainOptions(wait_seconds=0, safety_margin=4.0, concurrency=1, coalesce_seconds=0))
    deadline = Deadline(6.0)
    try:
        summary = drain.run(["SmsReport"], deadline)
        left = deadline.remaining()
    finally:
        sink.release.set()
    assert 0.85 < left <= 1.0, f"the run returned with {left:.2f} s left (a fifth of the margin: 0.8)"
    assert (summary.ok, summary.stop_reason) == (False, "stuck")
    assert summary.error == ("1 consumer(s) still inside a call at the deadline; their messages come back after "
                             "the visibility timeout")
    assert emulator.queue_state(emulator.queue_name("SmsReport"))["deleted"] == 0


class _QuickSleepClock:
    """The system clock, but back-off sleeps take a fiftieth of their length (the injected clock)."""

    def now(self):
        return SYSTEM_CLOCK.now()

    def monotonic(self) -> float:
        return SYSTEM_CLOCK.monotonic()

    def sleep(self, seconds: float) -> None:
        SYSTEM_CLOCK.sleep(seconds / 50)


@pytest.mark.parametrize("fault,tries", [({"server_error": 1.0}, 6), ({"throttle": 1.0}, 16)],
                         ids=["server-error", "throttled"])
def test_a_throttled_receive_is_tried_longer_than_a_failing_one(emulator, drain_env, fault, tries):
    """ERROR_BACKOFF gives a 5xx six tries; THROTTLE_BACKOFF gives "slow down" sixteen."""
    from shared.clock import Deadline
    from shared.drain import Drain, DrainOptions

    drain_env()
    enqueue(emulator, "SmsReport", 5)
    emulator.set_faults(apis=["BatchReceiveMessage"], **fault)
    emulator.reset_stats()
    runtime = drain_runtime()
    drain = Drain(runtime.tokens, runtime.open_queue, runtime.sink, DrainOptions(wait_seconds=0, concurrency=1),
                  clock=_QuickSleepClock())
    summary = drain.run(["SmsReport"], Deadline(60.0))
    assert (summary.ok, summary.stop_reason) == (False, "queue_error")
    assert list(summary.types["SmsReport"].errors.values()) == [tries]
    assert emulator.stats()["BatchReceiveMessage"] == tries
