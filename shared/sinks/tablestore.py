"""Tablestore (OTS) sink: one row per business key, through the tablestore SDK.

Table schema (see `scripts/create_tables.py`): one primary key column `key` (STRING),
the item's other fields as attribute columns, `max_versions=1`, and the table's own TTL
when `SINK_TTL_DAYS` is set (Tablestore expires data by write time, table-wide; the `ttl`
column the base class adds is informative only).

Why the business key alone is the primary key: `key` is also the partition key, and keys
such as `SmsReport#<biz_id>#<phone>` are high-cardinality, so one busy phone number or one
busy day cannot make a hot partition (a date or a phone number first would).

Dead letters live in the same table under `DLQ#<type>#<message id>` keys (the base class
builds them), so one table and one RAM policy cover everything the drain writes.

Writes: receipts and dead letters with `BatchWriteRow`, at most 200 rows and about 4 MB a
request; rows the service fails one by one with a transient code (OTSServerBusy,
OTSTimeout...) are sent again after exponential backoff with full jitter; rows it refuses
for what they are (OTSParameterInvalid: a key or column over its limit) are named in
`ItemsRefused`, and the base class stores them as dead letters. Every call, its retries
(the SDK's are off) and those backoffs end before the write's deadline: each attempt's
connect/read timeouts come from the time left (shared/sinks/calls.py). The SDK's urllib3
pool tries a failed connect up to 4 times by itself; the timeouts allow for that.

A reconciled send record must not replace a receipt. It is written with
`Condition(IGNORE, source != "receipt", pass_if_missing=True)`: it passes when the row is
missing or holds a reconciled record, and fails with OTSConditionCheckFail when a receipt
is there. Tablestore documents `pass_if_missing` for a missing *column*; how the service
judges a column condition on a missing *row* is not spelled out, so a failed condition is
checked with a GetRow: a receipt there means "skip" (False); no row at all means the
condition was judged as failing on a missing row, and the record is put with
EXPECT_NOT_EXIST. The race between that GetRow and that put is closed by the put itself:
if a receipt arrives in between, EXPECT_NOT_EXIST fails and the loop looks again and
skips; a receipt arriving after our put overwrites it unconditionally, as it should.

Size: a String attribute holds at most 2 MB, a BatchWriteRow carries at most 4 MB;
`max_item_bytes` keeps a row below 2 MB in all, so the base class turns a larger record
into a dead letter. A string primary-key column holds at most 1,024 bytes: a longer
business key is stored under a bounded form, the whole key in `full_key`
(shared/sinks/keys.py).

Credentials: the customer's Alibaba Cloud credentials as `load_credentials` finds them
(explicit keys, the function role's STS key on FC, or a Secrets Manager / SSM secret).
Endpoint: `SINK_ENDPOINT`, e.g. `https://<instance>.cn-hangzhou.ots.aliyuncs.com`.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import urllib3
from tablestore import (
    INF_MAX,
    INF_MIN,
    BatchWriteRowRequest,
    ComparatorType,
    Condition,
    Direction,
    OTSClient,
    OTSClientError,
    OTSServiceError,
    PutRowItem,
    Row,
    RowExistenceExpectation,
    SingleColumnCondition,
    TableInBatchWriteRowItem,
)
from tablestore.retry import NoRetryPolicy

from shared.clock import Deadline
from shared.records import SOURCE_RECEIPT
from shared.retry import Backoff
from shared.sinks.base import ItemsRefused, SinkError, TableSink
from shared.sinks.calls import DEFAULT_ATTEMPT, ClientsByTimeout, Timeouts, call

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.tokens import Credentials

BATCH_ROWS = 200  # BatchWriteRow's row limit
BATCH_BYTES = 4 * 1024 * 1024 - 256 * 1024  # its 4 MB data limit, less room for PlainBuffer overhead
SDK_LOGGER = "shared.sinks.tablestore.sdk"
# Codes worth another try (throttling, a busy or failing server); anything else is final.
TRANSIENT_CODES = {
    "OTSServerBusy", "OTSTimeout", "OTSRowOperationConflict", "OTSNotEnoughCapacityUnit", "OTSPartitionUnavailable",
    "OTSInternalServerError", "OTSServerUnavailable", "OTSOperationThrottled", "OTSQuotaExhausted", "OTSTableNotReady",
}
# A code that refuses a row for what it is (a key or a column over its limit, a bad value).
ITEM_CODES = {"OTSParameterInvalid"}
# The SDK's pool (urllib3's default Retry) tries a failed connect up to 4 times in one attempt.
CONNECT_TRIES = 4

# The SDK logs request headers (the STS token among them) whenever its logger's own level is
# NOTSET or DEBUG, and logs every failed request at ERROR, expected condition failures
# included. SinkError carries what matters, so its logger stays quiet.
logging.getLogger(SDK_LOGGER).setLevel(logging.CRITICAL)


class _RowsFailed(Exception):
    """Rows of a BatchWriteRow failed with transient codes: send them again after a backoff."""

    def __init__(self, failed: int, total: int, codes: list[str]):
        super().__init__(f"{failed} of {total} rows failed with {', '.join(codes)}")


class TablestoreSink(TableSink):
    """Rows in one Tablestore table keyed by the business key."""

    name = "tablestore"
    max_item_bytes = 2 * 1024 * 1024 - 16 * 1024  # a String column's 2 MB, less a margin
    max_key_bytes = 1024  # a string primary-key column
    batch_items = BATCH_ROWS

    def __init__(self, table: str, *, endpoint: str, instance: str, access_key_id: str, access_key_secret: str,
                 sts_token: Optional[str] = None, ttl_days: Optional[int] = None, max_attempts: int = 6,
                 base_delay: float = 0.05, max_delay: float = 2.0, sleep: Callable[[float], None] = time.sleep):
        super().__init__(ttl_days)
        self.table = table
        self.instance = instance

        def build(timeouts: Timeouts) -> OTSClient:
            return OTSClient(endpoint, access_key_id, access_key_secret, instance, sts_token=sts_token,
                             logger_name=SDK_LOGGER, retry_policy=NoRetryPolicy(),
                             socket_timeout=urllib3.Timeout(connect=timeouts.connect, read=timeouts.read))

        self.clients = ClientsByTimeout(build, connects=CONNECT_TRIES)
        self.clients.for_attempt(DEFAULT_ATTEMPT)  # a malformed endpoint fails now, at start-up
        self.backoff, self.sleep = Backoff(max_attempts, base_delay, max_delay), sleep

    @classmethod
    def from_settings(cls, settings: "Settings", credentials: "Optional[Credentials]" = None) -> "TablestoreSink":
        from shared.credentials import load_credentials

        credentials = credentials or load_credentials(settings)
        return cls(settings.required("sink_table"), endpoint=settings.required("sink_endpoint"),
                   instance=settings.required("tablestore_instance"),
                   access_key_id=credentials.access_key_id, access_key_secret=credentials.access_key_secret,
                   sts_token=credentials.security_token, ttl_days=settings.sink_ttl_days)

    # -- the four primitives ----------------------------------------------------------
    def _upsert(self, items: Sequence[dict[str, Any]], deadline: Optional[Deadline] = None) -> int:
        pending = list(items)
        refused: dict[str, str] = {}
        calls = 0

        def attempt(seconds: float) -> None:
            nonlocal pending, calls
            request = BatchWriteRowRequest()
            request.add(TableInBatchWriteRowItem(self.table, [
                PutRowItem(self._row(item), Condition(RowExistenceExpectation.IGNORE)) for item in pending]))
            calls += 1
            try:
                response = self.clients.for_attempt(seconds).batch_write_row(request)
            except OTSServiceError as exc:
                if exc.code in ITEM_CODES:  # the request as a whole (e.g. its size): the base class halves it
                    raise ItemsRefused(self.name, self._service_reason(exc), calls=calls) from None
                raise
            failed = response.get_failed_of_put()
            if not failed:
                return
            busy = [row for row in failed if row.error_code in TRANSIENT_CODES]
            final = [row for row in failed if row.error_code not in TRANSIENT_CODES | ITEM_CODES]
            if final:
                codes = sorted({row.error_code for row in final})
                raise SinkError(self.name, f"BatchWriteRow on table {self.table} (instance {self.instance}): "
                                           f"{len(final)} of {len(pending)} rows failed with {', '.join(codes)}")
            for row in failed:
                if row.error_code in ITEM_CODES:
                    refused[pending[row.index]["key"]] = f"{row.error_code}: {str(row.error_message)[:200]}"
            if busy:
                total = len(pending)
                pending = [pending[row.index] for row in busy]  # only the failed rows go again
                raise _RowsFailed(len(busy), total, sorted({row.error_code for row in busy}))

        self._call("BatchWriteRow", attempt, deadline)
        if refused:
            raise ItemsRefused(self.name, f"{len(refused)} rows refused", refused=refused, calls=calls)
        return calls

    def _put_unless_receipt(self, item: dict[str, Any], deadline: Optional[Deadline] = None) -> bool:
        row = self._row(item)
        not_receipt = Condition(RowExistenceExpectation.IGNORE, SingleColumnCondition(
            "source", SOURCE_RECEIPT, ComparatorType.NOT_EQUAL, pass_if_missing=True))
        for _ in range(3):
            if self._conditional_put(row, not_receipt, deadline):
                return True
            current = self._get_item(item["key"], deadline)
            if current is not None and current.get("source") == SOURCE_RECEIPT:
                return False  # a receipt is there: it wins
            if current is None and self._conditional_put(row, Condition(RowExistenceExpectation.EXPECT_NOT_EXIST),
                                                          deadline):
                return True
            # The row changed between our looks; judge again.
        raise SinkError(self.name, f"PutRow on table {self.table}: the row {item['key']} kept changing")

    def _get_item(self, key: str, deadline: Optional[Deadline] = None) -> Optional[dict[str, Any]]:
        _, row, _ = self._call("GetRow", lambda seconds: self.clients.for_attempt(seconds).get_row(
            self.table, [("key", key)], max_version=1), deadline)
        if row is None:
            return None
        return self._item(row)

    def _scan_items(self) -> Iterator[dict[str, Any]]:
        start: Any = [("key", INF_MIN)]
        while start:
            def get_range(seconds: float, start: Any = start) -> Any:
                return self.clients.for_attempt(seconds).get_range(
                    self.table, Direction.FORWARD, start, [("key", INF_MAX)], max_version=1)

            _, start, rows, _ = self._call("GetRange", get_range)
            for row in rows:
                yield self._item(row)

    # -- helpers ----------------------------------------------------------------------
    def _chunks(self, items: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        chunk: list[dict[str, Any]] = []
        size = 0
        for item in items:
            item_bytes = self.item_size(item) + 32 * len(item)  # PlainBuffer tags, lengths, checksums
            if chunk and (len(chunk) >= BATCH_ROWS or size + item_bytes > BATCH_BYTES):
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += item_bytes
        if chunk:
            yield chunk

    def _conditional_put(self, row: Row, condition: Condition, deadline: Optional[Deadline]) -> bool:
        def attempt(seconds: float) -> bool:
            try:
                self.clients.for_attempt(seconds).put_row(self.table, row, condition)
                return True
            except OTSServiceError as exc:
                if exc.code == "OTSConditionCheckFail":
                    return False
                if exc.code in ITEM_CODES:
                    raise ItemsRefused(self.name, self._service_reason(exc)) from None
                raise

        return self._call("PutRow", attempt, deadline)

    def _call(self, api: str, attempt: Callable[[float], Any], deadline: Optional[Deadline] = None) -> Any:
        return call(self.name, f"{api} on table {self.table} (instance {self.instance})", attempt, deadline=deadline,
                    retryable=is_retryable, describe=describe, backoff=self.backoff, sleep=self.sleep)

    @staticmethod
    def _service_reason(exc: OTSServiceError) -> str:
        return f"{exc.code}: {str(exc.message)[:200]}"

    @staticmethod
    def _row(item: dict[str, Any]) -> Row:
        columns = [(name, bytearray(v) if isinstance(v, bytes) else v)
                   for name, v in item.items() if name != "key" and v is not None]
        return Row([("key", item["key"])], columns)

    @staticmethod
    def _item(row: Row) -> dict[str, Any]:
        item = {name: value for name, value, *_ in row.attribute_columns}
        item["key"] = row.primary_key[0][1]
        return item


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, _RowsFailed):
        return True
    if isinstance(exc, OTSServiceError):
        return exc.code in TRANSIENT_CODES or exc.http_status in (429, 500, 502, 503, 504)
    # Refused or timed-out connections, timeouts while reading, a connection dropped mid-answer.
    return isinstance(exc, (urllib3.exceptions.HTTPError, OSError))


def describe(exc: BaseException) -> str:
    if isinstance(exc, _RowsFailed):
        return str(exc)
    if isinstance(exc, OTSServiceError):
        return f"{exc.code} (HTTP {exc.http_status})"
    if isinstance(exc, OTSClientError):  # the SDK's fixed texts, e.g. "Invalid signature in response."
        return f"client error: {str(exc.message)[:160]}"
    return f"connection error ({type(exc).__name__})"
