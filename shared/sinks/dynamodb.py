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
backoff with full jitter. Every call, and that backoff, ends before the write's deadline:
each attempt's timeouts come from the time left and botocore's own retries are off
(shared/sinks/calls.py); throttling, 5xx and connection errors are retried, other errors
are final. A `ValidationException` refuses the whole request without naming the item at
fault: the base class writes the request in halves to find it and stores it as a dead
letter (`ItemsRefused`).
A reconciled send record is a `PutItem` with
`attribute_not_exists(#k) OR #s <> :receipt`: it fills a gap or replaces an older
reconciled record, never a receipt; a failed condition is an answer, not an error.

Keys: a partition key holds at most 2,048 bytes; a longer business key is stored under a
bounded form, the whole key in `full_key` (shared/sinks/keys.py).

Item size: DynamoDB's limit is 400 KB including attribute names; `max_item_bytes` keeps a
margin, and the base class turns a larger record into a dead letter. (An MNS message is at
most 64 KB, so only a reconciled or synthetic record can get there.)
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

from botocore.exceptions import ClientError

from shared.clock import Deadline
from shared.retry import Backoff
from shared.sinks._aws import aws_clients, describe, error_code, is_retryable, service_message
from shared.sinks.base import ItemsRefused, TableSink
from shared.sinks.calls import call

if TYPE_CHECKING:
    from shared.settings import Settings

BATCH_ITEMS = 25  # BatchWriteItem's limit
TTL_ATTRIBUTE = "ttl"
# Answers that refuse an item for what it is (its size, a key, a value): retrying cannot help.
ITEM_REFUSALS = frozenset({"ValidationException", "ItemCollectionSizeLimitExceededException"})


class _Unprocessed(Exception):
    """Some items came back in UnprocessedItems (throttled): send them again after a backoff."""

    def __init__(self, left: int):
        super().__init__(f"{left} items still unprocessed (throttled)")
        self.left = left


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
    max_key_bytes = 2048  # a partition key (the table has no sort key)
    batch_items = BATCH_ITEMS
    coalesce_max_messages = 200

    def __init__(self, table: str, *, ttl_days: Optional[int] = None, region: Optional[str] = None,
                 endpoint_url: Optional[str] = None, max_attempts: int = 8, base_delay: float = 0.05,
                 max_delay: float = 2.0, sleep: Callable[[float], None] = time.sleep, **credentials: Any):
        super().__init__(ttl_days)
        self.table = table
        self.clients = aws_clients("dynamodb", region=region, endpoint_url=endpoint_url, **credentials)
        self.backoff, self.sleep = Backoff(max_attempts, base_delay, max_delay), sleep

    @classmethod
    def from_settings(cls, settings: "Settings", credentials=None) -> "DynamoDBSink":
        return cls(settings.required("sink_table"), ttl_days=settings.sink_ttl_days, region=settings.sink_region,
                   endpoint_url=settings.sink_endpoint)

    def _upsert(self, items: Sequence[dict[str, Any]], deadline: Optional[Deadline] = None) -> int:
        pending = {self.table: [{"PutRequest": {"Item": to_item(i)}} for i in items]}
        calls = 0

        def attempt(seconds: float) -> None:
            nonlocal pending, calls
            calls += 1
            try:
                response = self.clients.for_attempt(seconds).batch_write_item(RequestItems=pending)
            except ClientError as exc:
                if error_code(exc) in ITEM_REFUSALS:
                    raise ItemsRefused(self.name, self._refusal(exc), calls=calls) from None
                raise
            pending = response.get("UnprocessedItems") or {}
            if pending:
                raise _Unprocessed(sum(len(w) for w in pending.values()))

        self._call("BatchWriteItem", attempt, deadline)
        return calls

    def _put_unless_receipt(self, item: dict[str, Any], deadline: Optional[Deadline] = None) -> bool:
        def attempt(seconds: float) -> bool:
            try:
                self.clients.for_attempt(seconds).put_item(
                    TableName=self.table,
                    Item=to_item(item),
                    # `key` and `source` are reserved words in DynamoDB expressions.
                    ConditionExpression="attribute_not_exists(#k) OR #s <> :receipt",
                    ExpressionAttributeNames={"#k": "key", "#s": "source"},
                    ExpressionAttributeValues={":receipt": {"S": "receipt"}},
                )
                return True
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return False  # a receipt is already there: it wins
                if error_code(exc) in ITEM_REFUSALS:
                    raise ItemsRefused(self.name, self._refusal(exc)) from None
                raise

        return self._call("PutItem", attempt, deadline)

    def _get_item(self, key: str) -> Optional[dict[str, Any]]:
        response = self._call("GetItem", lambda seconds: self.clients.for_attempt(seconds).get_item(
            TableName=self.table, Key={"key": {"S": key}}, ConsistentRead=True))
        return from_item(response["Item"]) if "Item" in response else None

    def _scan_items(self) -> Iterator[dict[str, Any]]:
        args: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            page = self._call("Scan", lambda seconds: self.clients.for_attempt(seconds).scan(**args))
            for item in page.get("Items") or ():
                yield from_item(item)
            if "LastEvaluatedKey" not in page:
                return
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _call(self, operation: str, attempt: Callable[[float], Any], deadline: Optional[Deadline] = None) -> Any:
        return call(self.name, f"{operation} on table {self.table}", attempt, deadline=deadline,
                    retryable=lambda exc: isinstance(exc, _Unprocessed) or is_retryable(exc),
                    describe=lambda exc: str(exc) if isinstance(exc, _Unprocessed) else describe(exc),
                    backoff=self.backoff, sleep=self.sleep)

    def _refusal(self, exc: ClientError) -> str:
        message = service_message(exc)
        return describe(exc) + (f": {message}" if message else "")

    def close(self) -> None:
        for client in self.clients.all():
            client.close()

