"""The backend state, no wire format: `TablestoreModel` holds tables and rows in memory with
the semantics the sinks rely on (row-existence and column conditions, size limits, TTL,
GetRange paging) and the service's limits. `model.missing_row_condition` chooses how a
column condition is judged on a row that does not exist ("evaluate": as a row with no
columns, so `pass_if_missing` decides; "fail": the condition fails), so a sink can be
tested under either reading of the service's semantics."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import tablestore.protobuf.table_store_filter_pb2 as filter_pb2
import tablestore.protobuf.table_store_pb2 as pb2

from .codec import _INF_MAX, _INF_MIN, _sort_key, _value_size, decode_column_value, decode_range_key, decode_row
from .errors import OTSFault

MAX_COLUMN_BYTES = 2 * 1024 * 1024  # String/Binary attribute value
MAX_PK_BYTES = 1024  # String/Binary primary key value
MAX_BATCH_ROWS = 200
MAX_WRITE_BYTES = 4 * 1024 * 1024  # data of one PutRow / BatchWriteRow
MAX_RANGE_ROWS = 5000  # rows one GetRange returns at most


def _not_exist() -> OTSFault:
    return OTSFault("OTSObjectNotExist", "Requested table does not exist.", 404)


@dataclass
class Table:
    name: str
    pk_schema: list[tuple[str, int]]  # (name, pb2.PrimaryKeyType)
    ttl_seconds: int = -1
    max_versions: int = 1
    read_cu: int = 0
    write_cu: int = 0
    created: int = field(default_factory=lambda: int(time.time()))
    rows: dict[tuple, dict[str, tuple[Any, int]]] = field(default_factory=dict)  # pk -> col -> (value, ts ms)


class TablestoreModel:
    """Tables and rows in memory, with the semantics the sinks rely on."""

    def __init__(self, max_range_rows: int = MAX_RANGE_ROWS):
        self.tables: dict[str, Table] = {}
        self.lock = threading.RLock()
        self.max_range_rows = max_range_rows
        self.missing_row_condition = "evaluate"  # or "fail"; see the module docstring

    # tables
    def create_table(self, req: pb2.CreateTableRequest) -> None:
        meta = req.table_meta
        if not 1 <= len(meta.primary_key) <= 4:
            raise OTSFault("OTSParameterInvalid", "The number of primary key columns must be in range: [1, 4].")
        with self.lock:
            if meta.table_name in self.tables:
                raise OTSFault("OTSObjectAlreadyExist", "Requested table already exists.", 409)
            opts = req.table_options
            self.tables[meta.table_name] = Table(
                name=meta.table_name,
                pk_schema=[(c.name, c.type) for c in meta.primary_key],
                ttl_seconds=opts.time_to_live if opts.HasField("time_to_live") else -1,
                max_versions=opts.max_versions if opts.HasField("max_versions") else 1,
                read_cu=req.reserved_throughput.capacity_unit.read,
                write_cu=req.reserved_throughput.capacity_unit.write,
            )

    def table(self, name: str) -> Table:
        table = self.tables.get(name)
        if table is None:
            raise _not_exist()
        return table

    def delete_table(self, name: str) -> None:
        with self.lock:
            self.table(name)
            del self.tables[name]

    # rows
    def _pk_tuple(self, table: Table, pk: list) -> tuple:
        names = [name for name, _ in pk]
        if names != [name for name, _ in table.pk_schema]:
            raise OTSFault("OTSParameterInvalid", "Validate PK name fail. Input: %s, Meta: %s." % (
                ",".join(names), ",".join(n for n, _ in table.pk_schema)))
        values = []
        for (name, value), (_, ptype) in zip(pk, table.pk_schema, strict=False):
            ok = {pb2.STRING: isinstance(value, str),
                  pb2.INTEGER: isinstance(value, int) and not isinstance(value, bool),
                  pb2.BINARY: isinstance(value, (bytes, bytearray))}.get(ptype, False)
            if not ok and value not in (_INF_MIN, _INF_MAX):
                raise OTSFault("OTSParameterInvalid", f"Validate PK type fail for column {name}.")
            if _value_size(value) > MAX_PK_BYTES and value not in (_INF_MIN, _INF_MAX):
                raise OTSFault("OTSParameterInvalid",
                               f"The length of primary key column: '{name}' exceeds the MaxLength:{MAX_PK_BYTES}.")
            values.append(value if not isinstance(value, bytearray) else bytes(value))
        return tuple(values)

    def _live(self, table: Table, pk: tuple) -> Optional[dict[str, tuple[Any, int]]]:
        row = table.rows.get(pk)
        if row is None or table.ttl_seconds <= 0:
            return row
        horizon = int(time.time() * 1000) - table.ttl_seconds * 1000
        live = {k: v for k, v in row.items() if v[1] >= horizon}
        return live or None

    def put_row(self, table_name: str, row_data: bytes, condition: pb2.Condition) -> None:
        pk, attrs = decode_row(row_data)
        with self.lock:
            table = self.table(table_name)
            key = self._pk_tuple(table, pk)
            for name, value, _ts in attrs:
                if _value_size(value) > MAX_COLUMN_BYTES:
                    raise OTSFault("OTSParameterInvalid", "The length of attribute column: '%s' exceeds the "
                                   "MaxLength:%d with CurrentLength:%d." % (name, MAX_COLUMN_BYTES, _value_size(value)))
            self.check_condition(self._live(table, key), condition)
            now = int(time.time() * 1000)
            # PutRow replaces the whole row (max_versions=1 keeps one version per column).
            table.rows[key] = {name: (value, ts if ts is not None else now) for name, value, ts in attrs}

    def get_row(self, table_name: str, pk_data: bytes) -> Optional[tuple[list, list]]:
        pk, _ = decode_row(pk_data)
        with self.lock:
            table = self.table(table_name)
            key = self._pk_tuple(table, pk)
            row = self._live(table, key)
            return None if row is None else self._row_out(table, key, row)

    def get_range(self, req: pb2.GetRangeRequest) -> tuple[list, Optional[list]]:
        with self.lock:
            table = self.table(req.table_name)
            start = self._pk_tuple(table, decode_range_key(req.inclusive_start_primary_key))
            end = self._pk_tuple(table, decode_range_key(req.exclusive_end_primary_key))
            order = lambda k: tuple(_sort_key(v) for v in k)  # noqa: E731
            forward = req.direction == pb2.FORWARD
            keys = sorted(table.rows, key=order, reverse=not forward)
            if forward:
                keys = [k for k in keys if order(start) <= order(k) < order(end)]
            else:
                keys = [k for k in keys if order(end) < order(k) <= order(start)]
            limit = (min(req.limit, self.max_range_rows) if req.HasField("limit") and req.limit > 0
                     else self.max_range_rows)
            out, size, next_key = [], 0, None
            for key in keys:
                row = self._live(table, key)
                if row is None:
                    continue
                if len(out) >= limit or size > MAX_WRITE_BYTES:
                    next_key = [(name, value) for (name, _), value in zip(table.pk_schema, key, strict=False)]
                    break
                out.append(self._row_out(table, key, row))
                size += sum(_value_size(v) for v, _ in row.values())
            return out, next_key

    def _row_out(self, table: Table, key: tuple, row: dict) -> tuple[list, list]:
        pk = [(name, value) for (name, _), value in zip(table.pk_schema, key, strict=False)]
        return pk, [(name, value, ts) for name, (value, ts) in sorted(row.items())]

    # conditions
    def check_condition(self, row: Optional[dict], condition: pb2.Condition) -> None:
        exists = row is not None
        if condition.row_existence == pb2.EXPECT_EXIST and not exists:
            raise OTSFault("OTSConditionCheckFail", "Condition check failed.", 403)
        if condition.row_existence == pb2.EXPECT_NOT_EXIST and exists:
            raise OTSFault("OTSConditionCheckFail", "Condition check failed.", 403)
        if not condition.HasField("column_condition") or not condition.column_condition:
            return
        if not exists and self.missing_row_condition == "fail":
            raise OTSFault("OTSConditionCheckFail", "Condition check failed.", 403)
        columns = {name: value for name, (value, _ts) in (row or {}).items()}
        flt = filter_pb2.Filter()
        flt.ParseFromString(condition.column_condition)
        if not _evaluate(flt, columns):
            raise OTSFault("OTSConditionCheckFail", "Condition check failed.", 403)


def _evaluate(flt: filter_pb2.Filter, columns: dict[str, Any]) -> bool:
    if flt.type == filter_pb2.FT_COMPOSITE_COLUMN_VALUE:
        comp = filter_pb2.CompositeColumnValueFilter()
        comp.ParseFromString(flt.filter)
        results = [_evaluate(sub, columns) for sub in comp.sub_filters]
        if comp.combinator == filter_pb2.LO_NOT:
            if len(results) != 1:
                raise OTSFault("OTSParameterInvalid", "NOT takes exactly one sub condition.")
            return not results[0]
        return all(results) if comp.combinator == filter_pb2.LO_AND else any(results)
    if flt.type != filter_pb2.FT_SINGLE_COLUMN_VALUE:
        raise OTSFault("OTSParameterInvalid", "Unsupported filter type in a condition.")
    single = filter_pb2.SingleColumnValueFilter()
    single.ParseFromString(flt.filter)
    if single.column_name not in columns:
        return not single.filter_if_missing
    have, want = columns[single.column_name], decode_column_value(single.column_value)
    cmp = single.comparator
    if type(have) is not type(want) and not (isinstance(have, (int, float)) and isinstance(want, (int, float))):
        return cmp == filter_pb2.CT_NOT_EQUAL
    return {
        filter_pb2.CT_EQUAL: have == want,
        filter_pb2.CT_NOT_EQUAL: have != want,
        filter_pb2.CT_GREATER_THAN: have > want,
        filter_pb2.CT_GREATER_EQUAL: have >= want,
        filter_pb2.CT_LESS_THAN: have < want,
        filter_pb2.CT_LESS_EQUAL: have <= want,
    }[cmp]
