"""Every cloud sink call ends before the write's deadline, retries included, over real sockets:
a hung endpoint (accepts, never answers) gives SinkError in time; throttling that clears is
retried inside the budget; a refusal retrying cannot fix is not retried."""
from __future__ import annotations

import json
import time

import pytest

from scripts.create_tables import create_dynamodb_table, create_tablestore_table
from shared.clock import Deadline
from shared.retry import Backoff
from shared.sinks.base import SinkError
from tests.fakes.moto_server import FaultProxy
from tests.test_sinks_cloud import BUCKET, TABLE, by_key, ddb_sink, ots_client, ots_sink, oss_sink, records, s3_sink

BACKENDS = ["s3", "oss", "dynamodb", "tablestore"]


class Backend:
    """A sink, the stand-in it talks to (whose `hang` switch it may flip), and a request counter."""

    def __init__(self, name, sink, server, count):
        self.name, self.sink, self.server, self.count = name, sink, server, count


@pytest.fixture(params=BACKENDS)
def backend(request, moto):
    name = request.param
    if name in ("s3", "dynamodb"):
        proxy = FaultProxy(moto.endpoint).start()
        request.addfinalizer(proxy.stop)
        count = lambda: len(proxy.requests)  # noqa: E731
        if name == "s3":
            moto.client("s3").create_bucket(Bucket=BUCKET)
            return Backend(name, s3_sink(moto, endpoint_url=proxy.endpoint, base_delay=0.05), proxy, count)
        create_dynamodb_table(moto.client("dynamodb"), TABLE)
        return Backend(name, ddb_sink(moto, endpoint_url=proxy.endpoint, base_delay=0.05), proxy, count)
    if name == "oss":
        moto.client("s3").create_bucket(Bucket=BUCKET)
        gateway = request.getfixturevalue("oss_gateway")
        return Backend(name, oss_sink(gateway, base_delay=0.05), gateway, lambda: len(gateway.requests))
    ots = request.getfixturevalue("ots")
    create_tablestore_table(ots_client(ots), TABLE)
    return Backend(name, ots_sink(ots, base_delay=0.05), ots, lambda: len(ots.requests))


def test_write_to_a_hung_endpoint_raises_before_the_deadline(backend):
    backend.server.hang.on()
    deadline = Deadline(3.0)
    with pytest.raises(SinkError) as err:
        backend.sink.write(records(4), [], deadline=deadline)
    left = deadline.remaining()
    print(f"{backend.name}: a write to a hung endpoint raised {3.0 - left:.2f} s into a 3.00 s deadline "
          f"({backend.server.hang.held} attempts held)")
    assert left > 0, f"{backend.name}: the write ended {-left:.2f} s after its deadline"
    assert backend.server.hang.held >= 2  # it tried again within the budget, each attempt timed out
    assert "timeout" in str(err.value).lower() and "before the write's deadline" in str(err.value)
    backend.server.hang.off()
    backend.sink.write(records(4), [], deadline=Deadline(10.0))  # the same sink works once the endpoint answers
    assert by_key(backend.sink.iter_records()) == by_key(records(4))


def test_write_with_no_time_left_makes_no_call(backend):
    before = backend.count()
    with pytest.raises(SinkError, match="no time left before the write's deadline"):
        backend.sink.write(records(2), [], deadline=Deadline(0.1))
    assert backend.count() == before


def throttled(backend: Backend, request, times: int) -> Backend:
    """The backend, its next `times` write requests answered as the service answers when it throttles."""
    if backend.name == "oss":  # OSS answers throttling with 429 or 503: a fault proxy in front of the gateway
        proxy = FaultProxy(backend.server.endpoint).start()
        request.addfinalizer(proxy.stop)
        backend = Backend("oss", oss_sink(backend.server, endpoint=proxy.endpoint, base_delay=0.05), proxy,
                          lambda: len(proxy.requests))
        proxy.s3_error("PUT", times=times, code="TooManyRequests", status=429)
    elif backend.name == "s3":
        backend.server.s3_error("PUT", times=times)  # 503 SlowDown
    elif backend.name == "dynamodb":
        body = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                           "message": "The level of configured provisioned throughput for the table was exceeded."})
        backend.server.fail(lambda m, p, h: h.get("x-amz-target", "").endswith(".BatchWriteItem"), times, 400,
                            body.encode(), {"Content-Type": "application/x-amz-json-1.0"})
    else:
        backend.server.faults.fail_requests("BatchWriteRow", times, "OTSServerBusy", "Server is busy.", 503)
    return backend


def test_throttling_that_clears_is_retried_inside_the_budget(backend, request):
    backend = throttled(backend, request, 2)
    before = backend.count()
    deadline = Deadline(8.0)
    recs = records(3, tag="t")  # three partitions: three objects in an object store, one batch in a table
    backend.sink.write(recs, [], deadline=deadline)
    assert deadline.remaining() > 0
    assert backend.count() - before == (3 if backend.name in ("s3", "oss") else 1) + 2  # plus the 2 throttled answers
    assert by_key(backend.sink.iter_records()) == by_key(recs)


def test_throttling_that_does_not_clear_ends_before_the_deadline(backend, request):
    backend = throttled(backend, request, 10_000)
    backend.sink.backoff = Backoff(attempts=1000, base=0.2, cap=1.0)
    deadline = Deadline(2.5)
    with pytest.raises(SinkError) as err:
        backend.sink.write(records(2), [], deadline=deadline)
    assert deadline.remaining() > 0
    assert "stopped retrying" in str(err.value) and "before the write's deadline" in str(err.value)


def test_dynamodb_unprocessed_items_backoff_ends_before_the_deadline(moto, fault_proxy):
    # Issue 12: the UnprocessedItems backoff overran an 8 s deadline by 0.77 s.
    create_dynamodb_table(moto.client("dynamodb"), TABLE)
    sink = ddb_sink(moto, endpoint_url=fault_proxy.endpoint, max_attempts=1000, base_delay=0.3, max_delay=2.0)
    fault_proxy.unprocessed(times=10_000, items=24)  # all but one item each round: 24 rounds of backoff for 25
    deadline = Deadline(3.0)
    with pytest.raises(SinkError, match=r"items still unprocessed \(throttled\) after \d+ attempts; stopped retrying"):
        sink.write(records(25), [], deadline=deadline)
    assert deadline.remaining() > 0


@pytest.mark.parametrize("case", ["s3-denied", "dynamodb-no-table", "tablestore-no-table", "oss-denied"])
def test_a_refusal_retrying_cannot_fix_is_not_retried(request, moto, case):
    if case == "s3-denied":
        moto.client("s3").create_bucket(Bucket=BUCKET)
        proxy = FaultProxy(moto.endpoint).start()
        request.addfinalizer(proxy.stop)
        proxy.s3_error("PUT", times=100, code="AccessDenied", status=403)
        sink, count = s3_sink(moto, endpoint_url=proxy.endpoint), lambda: len(proxy.requests)
    elif case == "dynamodb-no-table":
        proxy = FaultProxy(moto.endpoint).start()
        request.addfinalizer(proxy.stop)
        sink, count = ddb_sink(moto, endpoint_url=proxy.endpoint), lambda: len(proxy.requests)
    elif case == "tablestore-no-table":
        ots = request.getfixturevalue("ots")
        sink, count = ots_sink(ots), lambda: len(ots.requests)
    else:
        moto.client("s3").create_bucket(Bucket=BUCKET)
        gateway = request.getfixturevalue("oss_gateway")
        gateway.deny(BUCKET)
        sink, count = oss_sink(gateway), lambda: len(gateway.requests)
    started = time.monotonic()
    with pytest.raises(SinkError) as err:
        sink.write(records(1), [], deadline=Deadline(20.0))
    assert count() == 1, f"{case}: {count()} requests for a refusal that retrying cannot fix"
    assert "attempts" not in str(err.value)
    assert time.monotonic() - started < 5  # an upper bound: it did not wait out the budget


@pytest.mark.parametrize("backend", ["dynamodb", "tablestore"], indirect=True)
def test_ledger_rows_and_set_aside_records_keep_the_deadline_too(backend):
    """put_rows and the dead letters of records too large for a row are written within the deadline."""
    sink = backend.sink
    row = {"key": "SEND#biz-1#13800000099", "kind": "ledger", "message_type": "SmsReport", "source": "ledger",
           "event_time": "2026-11-25 10:00:00", "event_date": "2026-11-25", "body": "{}", "message_id": "",
           "enqueue_time": 0, "dequeue_count": 0}
    big = records(1)[0]
    big = type(big)(big.message_type, big.key, {"content": "x" * sink.max_item_bytes}, big.event_time, mns=big.mns)
    before = backend.count()
    with pytest.raises(SinkError, match="no time left before the write's deadline"):
        sink.put_rows([row], deadline=Deadline(0.1))
    with pytest.raises(SinkError, match="no time left before the write's deadline"):
        sink.write([big], [], deadline=Deadline(0.1))  # set aside as a dead letter: that write has no time either
    assert backend.count() == before
