"""DynamoDB sink: one item per business key, through boto3.

Table schema (see `scripts/create_tables.py`): partition key `key` (S), no sort key,
on-demand capacity, optional TTL on the attribute `ttl` (epoch seconds, set by the base
class when `SINK_TTL_DAYS` is given).

Why the business key alone is the partition key: keys such as
`SmsReport#<biz_id>#<phone>` or `VoiceCallReport#<call_id>#<status>#<time>` are
high-cardinality and spread evenly over partitions, so neither one busy phone number nor
one busy day concentrates writes on a partition (a date or a phone number as partition
key would). Queries by day or type go through a scan or an export, not the key.

Dead letters live in the same table under `DLQ#<type>#<message id>` keys (the base class
builds them), so one table and one IAM policy cover everything the drain writes.

Writes: receipts and dead letters with `BatchWriteItem` in chunks of 25; items the
service leaves in `UnprocessedItems` (throttling) are sent again after exponential
backoff with full jitter, a bounded number of times, then `SinkError`. Botocore's
"standard" retry mode already retries throttled and failed requests themselves.
A reconciled send record is a `PutItem` with
`attribute_not_exists(#k) OR #s <> :receipt`: it fills a gap or replaces an older
reconciled record, never a receipt; a failed condition is an answer, not an error.

Item size: DynamoDB's limit is 400 KB including attribute names; `max_item_bytes` keeps a
margin, and the base class turns a larger record into a dead letter. (An MNS message is at
most 64 KB, so only a reconciled or synthetic record can get there.)
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

from botocore.exceptions import BotoCoreError, ClientError

from shared.sinks.base import backoff_delays, SinkError, TableSink
from shared.sinks.s3 import aws_client, client_error_reason

if TYPE_CHECKING:
    from shared.settings import Settings

BATCH_ITEMS = 25  # BatchWriteItem's limit
TTL_ATTRIBUTE = "ttl"


def to_attr(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value (the item shapes the base class builds)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, float)):
        return {"N": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"B": bytes(value)}
    return {"S": str(value)}


def from_attr(attr: dict[str, Any]) -> Any:
    (kind, value), = attr.items()
    if kind == "N":
        return int(value) if value.lstrip("-").isdigit() else float(value)
    if kind == "NULL":
        return None
    return value  # S, B, BOOL


def to_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: to_attr(value) for name, value in item.items()}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: from_attr(value) for name, value in item.items()}


class DynamoDBSink(TableSink):
    """Rows in one DynamoDB table keyed by the business key."""

    name = "dynamodb"
    max_item_bytes = 400_000  # 400 KB (409,600 bytes) less a margin; item_size() already over-counts numbers

    def __init__(self, table: str, *, client=None, ttl_days: Optional[int] = None, region: Optional[str] = None,
                 endpoint_url: Optional[str] = None, max_attempts: int = 8, base_delay: float = 0.05,
                 max_delay: float = 2.0, sleep: Callable[[float], None] = time.sleep, **client_options: Any):
        super().__init__(ttl_days)
        self.table = table
        self.client = client or aws_client("dynamodb", region=region, endpoint_url=endpoint_url, **client_options)
        self.max_attempts, self.base_delay, self.max_delay, self.sleep = max_attempts, base_delay, max_delay, sleep

    @classmethod
    def from_settings(cls, settings: "Settings", credentials=None) -> "DynamoDBSink":
        return cls(settings.sink_table, ttl_days=settings.sink_ttl_days, region=settings.sink_region,
                   endpoint_url=settings.sink_endpoint)

    def _upsert(self, items: Sequence[dict[str, Any]]) -> int:
        # BatchWriteItem refuses two puts of one key in a request; the last one wins.
        unique = list({item["key"]: item for item in items}.values())
        calls = 0
        for start in range(0, len(unique), BATCH_ITEMS):
            calls += self._write_chunk([{"PutRequest": {"Item": to_item(i)}} for i in unique[start:start + BATCH_ITEMS]])
        return calls

    def _write_chunk(self, writes: list[dict[str, Any]]) -> int:
        pending = {self.table: writes}
        delays = backoff_delays(self.max_attempts, self.base_delay, self.max_delay)
        calls = 0
        while True:
            response = self._call("BatchWriteItem", self.client.batch_write_item, RequestItems=pending)
            calls += 1
            pending = response.get("UnprocessedItems") or {}
            if not pending:
                return calls
            delay = next(delays, None)
            if delay is None:
                left = sum(len(w) for w in pending.values())
                raise SinkError(self.name, f"table {self.table}: {left} items still unprocessed (throttled) "
                                           f"after {calls} BatchWriteItem calls")
            self.sleep(delay)

    def _put_unless_receipt(self, item: dict[str, Any]) -> bool:
        try:
            self.client.put_item(
                TableName=self.table,
                Item=to_item(item),
                # `key` and `source` are reserved words in DynamoDB expressions.
                ConditionExpression="attribute_not_exists(#k) OR #s <> :receipt",
                ExpressionAttributeNames={"#k": "key", "#s": "source"},
                ExpressionAttributeValues={":receipt": {"S": "receipt"}},
            )
            return True
        except ClientError as exc:
            if (exc.response.get("Error") or {}).get("Code") == "ConditionalCheckFailedException":
                return False  # a receipt is already there: it wins
            raise SinkError(self.name, client_error_reason(exc, f"PutItem on table {self.table}")) from None
        except BotoCoreError as exc:
            raise SinkError(self.name, client_error_reason(exc, f"PutItem on table {self.table}")) from None

    def _get_item(self, key: str) -> Optional[dict[str, Any]]:
        response = self._call("GetItem", self.client.get_item, TableName=self.table,
                              Key={"key": {"S": key}}, ConsistentRead=True)
        return from_item(response["Item"]) if "Item" in response else None

    def _scan_items(self) -> Iterator[dict[str, Any]]:
        args: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            page = self._call("Scan", self.client.scan, **args)
            for item in page.get("Items") or ():
                yield from_item(item)
            if "LastEvaluatedKey" not in page:
                return
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _call(self, operation: str, method, **kwargs):
        try:
            return method(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise SinkError(self.name, client_error_reason(exc, f"{operation} on table {self.table}")) from None

    def close(self) -> None:
        self.client.close()
