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
OTSTimeout...) are sent again after exponential backoff with full jitter, a bounded number
of times, then `SinkError`; a permanent code fails at once. Request-level throttling and
5xx answers are retried by the SDK with a short policy (puts are idempotent here).

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
into a dead letter.

Credentials: on Function Compute the role's `ALIBABA_CLOUD_*` variables (with the STS
token). Endpoint: `SINK_ENDPOINT`, e.g. `https://<instance>.cn-hangzhou.ots.aliyuncs.com`.
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
from tablestore.retry import WriteRetryPolicy

from shared.records import SOURCE_RECEIPT
from shared.sinks.base import backoff_delays, SinkError, TableSink

if TYPE_CHECKING:
    from shared.settings import Settings

BATCH_ROWS = 200  # BatchWriteRow's row limit
BATCH_BYTES = 4 * 1024 * 1024 - 256 * 1024  # its 4 MB data limit, less room for PlainBuffer overhead
SDK_LOGGER = "shared.sinks.tablestore.sdk"
# Per-row codes worth another try; anything else (OTSParameterInvalid, OTSObjectNotExist...) is final.
TRANSIENT_CODES = {
    "OTSServerBusy", "OTSTimeout", "OTSRowOperationConflict", "OTSNotEnoughCapacityUnit", "OTSPartitionUnavailable",
    "OTSInternalServerError", "OTSServerUnavailable", "OTSOperationThrottled", "OTSQuotaExhausted", "OTSTableNotReady",
}

# The SDK logs request headers (the STS token among them) whenever its logger's own level is
# NOTSET or DEBUG, and logs every failed request at ERROR, expected condition failures
# included. SinkError carries what matters, so its logger stays quiet.
logging.getLogger(SDK_LOGGER).setLevel(logging.CRITICAL)


class _ShortRetryPolicy(WriteRetryPolicy):
    """The SDK's write-retry policy, bounded to fit inside a function's deadline."""

    max_retry_times = 3
    max_retry_delay = 1


class TablestoreSink(TableSink):
    """Rows in one Tablestore table keyed by the business key."""

    name = "tablestore"
    max_item_bytes = 2 * 1024 * 1024 - 16 * 1024  # a String column's 2 MB, less a margin

    def __init__(self, table: str, *, client: Optional[OTSClient] = None, endpoint: Optional[str] = None,
                 instance: Optional[str] = None, access_key_id: Optional[str] = None,
                 access_key_secret: Optional[str] = None, sts_token: Optional[str] = None,
                 ttl_days: Optional[int] = None, max_attempts: int = 6, base_delay: float = 0.05,
                 max_delay: float = 2.0, sleep: Callable[[float], None] = time.sleep,
                 connect_timeout: float = 5, read_timeout: float = 30):
        super().__init__(ttl_days)
        self.table = table
        self.instance = instance or "?"
        self.client = client or OTSClient(
            endpoint, access_key_id, access_key_secret, instance, sts_token=sts_token,
            logger_name=SDK_LOGGER, retry_policy=_ShortRetryPolicy(),
            socket_timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        )
        self.max_attempts, self.base_delay, self.max_delay, self.sleep = max_attempts, base_delay, max_delay, sleep

    @classmethod
    def from_settings(cls, settings: "Settings", credentials=None) -> "TablestoreSink":
        from shared.settings import SettingsError

        if not settings.access_key_id or not settings.access_key_secret:
            raise SettingsError("invalid settings: ALIBABA_CLOUD_ACCESS_KEY_ID: SINK=tablestore needs the function "
                                "role's ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET (and _SECURITY_TOKEN)")
        return cls(settings.sink_table, endpoint=settings.sink_endpoint, instance=settings.tablestore_instance,
                   access_key_id=settings.access_key_id, access_key_secret=settings.access_key_secret,
                   sts_token=settings.security_token, ttl_days=settings.sink_ttl_days)

    # -- the four primitives ----------------------------------------------------------
    def _upsert(self, items: Sequence[dict[str, Any]]) -> int:
        unique = list({item["key"]: item for item in items}.values())  # one put per row in a request
        calls = 0
        for chunk in self._chunks(unique):
            calls += self._write_chunk(chunk)
        return calls

    def _put_unless_receipt(self, item: dict[str, Any]) -> bool:
        row = self._row(item)
        not_receipt = Condition(RowExistenceExpectation.IGNORE, SingleColumnCondition(
            "source", SOURCE_RECEIPT, ComparatorType.NOT_EQUAL, pass_if_missing=True))
        for _ in range(3):
            if self._conditional_put(row, not_receipt):
                return True
            current = self._get_item(item["key"])
            if current is not None and current.get("source") == SOURCE_RECEIPT:
                return False  # a receipt is there: it wins
            if current is None and self._conditional_put(row, Condition(RowExistenceExpectation.EXPECT_NOT_EXIST)):
                return True
            # The row changed between our looks; judge again.
        raise SinkError(self.name, f"PutRow on table {self.table}: the row {item['key']} kept changing")

    def _get_item(self, key: str) -> Optional[dict[str, Any]]:
        _, row, _ = self._call("GetRow", self.client.get_row, self.table, [("key", key)], max_version=1)
        if row is None:
            return None
        return self._item(row)

    def _scan_items(self) -> Iterator[dict[str, Any]]:
        start: Any = [("key", INF_MIN)]
        while start:
            _, start, rows, _ = self._call("GetRange", self.client.get_range, self.table, Direction.FORWARD,
                                           start, [("key", INF_MAX)], max_version=1)
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

    def _write_chunk(self, items: list[dict[str, Any]]) -> int:
        delays = backoff_delays(self.max_attempts, self.base_delay, self.max_delay)
        calls = 0
        while True:
            request = BatchWriteRowRequest()
            request.add(TableInBatchWriteRowItem(self.table, [
                PutRowItem(self._row(item), Condition(RowExistenceExpectation.IGNORE)) for item in items]))
            response = self._call("BatchWriteRow", self.client.batch_write_row, request)
            calls += 1
            failed = response.get_failed_of_put()
            if not failed:
                return calls
            codes = sorted({row.error_code for row in failed})
            final = [code for code in codes if code not in TRANSIENT_CODES]
            delay = None if final else next(delays, None)
            if delay is None:
                raise SinkError(self.name, f"BatchWriteRow on table {self.table} (instance {self.instance}): "
                                           f"{len(failed)} of {len(items)} rows failed with {', '.join(codes)}"
                                           f" after {calls} calls")
            items = [items[row.index] for row in failed]  # only the failed rows go again
            self.sleep(delay)

    def _conditional_put(self, row: Row, condition: Condition) -> bool:
        try:
            self.client.put_row(self.table, row, condition)
            return True
        except OTSServiceError as exc:
            if exc.code == "OTSConditionCheckFail":
                return False
            raise SinkError(self.name, self._reason("PutRow", exc)) from None
        except (OTSClientError, urllib3.exceptions.HTTPError, OSError) as exc:
            raise SinkError(self.name, self._reason("PutRow", exc)) from None

    def _call(self, api: str, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except (OTSServiceError, OTSClientError, urllib3.exceptions.HTTPError, OSError) as exc:
            raise SinkError(self.name, self._reason(api, exc)) from None

    def _reason(self, api: str, exc: Exception) -> str:
        where = f"{api} on table {self.table} (instance {self.instance})"
        if isinstance(exc, OTSServiceError):
            return f"{where} failed: {exc.code} (HTTP {exc.http_status})"
        if isinstance(exc, OTSClientError):  # the SDK's fixed texts, e.g. "Invalid signature in response."
            return f"{where} failed: client error: {str(exc.message)[:160]}"
        return f"{where} failed: connection error ({type(exc).__name__})"

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
