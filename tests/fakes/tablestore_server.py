"""A wire-level Tablestore (OTS) fake on loopback, for tests.

No Tablestore emulator exists, so this speaks the real protocol to the real SDK:
`POST /<ApiName>` with a protobuf body (the SDK's own `table_store_pb2`), rows in
PlainBuffer (decoded and encoded with the SDK's own `tablestore.plainbuffer` coder).

Like moto's per-service layout it keeps three things apart:

- `TablestoreModel`: tables, rows, row-existence and column conditions, size limits,
  TTL, GetRange paging. Errors are `OTSFault(code, message, status)` with the service's
  real codes (OTSObjectNotExist 404, OTSConditionCheckFail 403, OTSParameterInvalid 400...).
- the `_api_*` functions: decode a request body, call the model, encode the response.
- `_Handler`: HTTP/1.1 keep-alive, request checks (x-ots-date skew, content MD5, instance,
  STS token, the V2 request signature: a wrong secret gets OTSAuthFailed 403 as from the
  real service) and the response signature the SDK verifies (`authorization: OTS ak:sig`,
  HMAC-SHA1 over the sorted `x-ots-*` response headers and the URI). Each response goes
  out in one socket write (headers and body apart would meet the client's delayed ACK).

Test hooks: `server.requests` records (api, headers) of every request; `server.faults`
injects per-row or per-request errors, or refuses the rows whose key holds a marker;
`server.hang.on()` accepts requests and never answers them (tests/fakes/hang.py);
`model.missing_row_condition` chooses how a column
condition is judged on a row that does not exist ("evaluate": as a row with no columns,
so `pass_if_missing` decides; "fail": the condition fails), so a sink can be tested under
either reading of the service's semantics.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

import tablestore.protobuf.table_store_filter_pb2 as filter_pb2
import tablestore.protobuf.table_store_pb2 as pb2
from tablestore.plainbuffer.plain_buffer_builder import PlainBufferBuilder
from tablestore.plainbuffer.plain_buffer_coded_stream import PlainBufferCodedInputStream
import tablestore.plainbuffer.plain_buffer_consts  # noqa: F401  (fills the SDK's `const` module)
from tablestore.plainbuffer.plain_buffer_crc8 import PlainBufferCrc8
from tablestore.plainbuffer.plain_buffer_stream import PlainBufferInputStream

import tablestore.const_module as _const  # the SDK keeps PlainBuffer tags here

from scripts.stand_ins.hang import Hang

API_VERSION = "2015-12-31"
MAX_COLUMN_BYTES = 2 * 1024 * 1024  # String/Binary attribute value
MAX_PK_BYTES = 1024  # String/Binary primary key value
MAX_BATCH_ROWS = 200
MAX_WRITE_BYTES = 4 * 1024 * 1024  # data of one PutRow / BatchWriteRow
MAX_RANGE_ROWS = 5000  # rows one GetRange returns at most
MAX_SKEW_SECONDS = 15 * 60
_INF_MIN, _INF_MAX = object(), object()  # range bounds inside the model


class OTSFault(Exception):
    """A service error as the real service reports it."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


def _not_exist() -> OTSFault:
    return OTSFault("OTSObjectNotExist", "Requested table does not exist.", 404)


# -- PlainBuffer helpers (the SDK's coder, plus the INF bounds its reader lacks) ---------


class _RangeKeyInputStream(PlainBufferCodedInputStream):
    """The SDK reader, taught the INF_MIN / INF_MAX values that only GetRange bounds carry."""

    def read_primary_key_value(self, cell_check_sum):
        stream = self.input_stream
        if stream.last_tag == _const.TAG_CELL_VALUE:
            start = stream.cur_pos
            size = stream.read_raw_little_endian32()
            vtype = ord(stream.read_raw_byte())
            if size == 1 and vtype in (_const.VT_INF_MIN, _const.VT_INF_MAX):
                stream.read_tag()
                marker = _INF_MIN if vtype == _const.VT_INF_MIN else _INF_MAX
                return marker, PlainBufferCrc8.crc_int8(cell_check_sum, vtype)
            stream.cur_pos = start
        return super().read_primary_key_value(cell_check_sum)


def decode_row(data: bytes) -> tuple[list, list]:
    """(primary key [(name, value)], attributes [(name, value, timestamp)]) of one row."""
    return PlainBufferCodedInputStream(PlainBufferInputStream(bytes(data))).read_row()


def decode_range_key(data: bytes) -> list:
    return _RangeKeyInputStream(PlainBufferInputStream(bytes(data))).read_row()[0]


def encode_rows(rows: list[tuple[list, list]]) -> bytes:
    """Rows as GetRange returns them: one header, then the rows."""
    out = b""
    for i, (pk, attrs) in enumerate(rows):
        data = bytes(PlainBufferBuilder.serialize_for_put_row(pk, attrs))
        out += data if i == 0 else data[4:]  # only the first row keeps the 4-byte header
    return out


def decode_column_value(data: bytes) -> Any:
    """A column value as condition filters carry it (type byte + value)."""
    vtype, rest = data[0], data[1:]
    if vtype == 0x0:  # VT_INTEGER
        return struct.unpack("<q", rest[:8])[0]
    if vtype == 0x1:  # VT_DOUBLE
        return struct.unpack("<d", rest[:8])[0]
    if vtype == 0x2:  # VT_BOOLEAN
        return bool(rest[0])
    if vtype in (0x3, 0x7):  # VT_STRING, VT_BLOB
        size = struct.unpack("<i", rest[:4])[0]
        raw = rest[4 : 4 + size]
        return raw.decode("utf-8") if vtype == 0x3 else bytearray(raw)
    raise OTSFault("OTSParameterInvalid", f"Unsupported column value type {vtype}.")


def _value_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return 8


def _sort_key(value: Any) -> tuple:
    # Tablestore orders primary keys by type, then by value (strings by their bytes).
    if value is _INF_MIN:
        return (0,)
    if value is _INF_MAX:
        return (9,)
    if isinstance(value, bool):
        return (4, value)
    if isinstance(value, int):
        return (1, value)
    if isinstance(value, str):
        return (2, value.encode("utf-8"))
    return (3, bytes(value))


# -- the model ------------------------------------------------------------------------


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
        for (name, value), (_, ptype) in zip(pk, table.pk_schema):
            ok = {pb2.STRING: isinstance(value, str), pb2.INTEGER: isinstance(value, int) and not isinstance(value, bool),
                  pb2.BINARY: isinstance(value, (bytes, bytearray))}.get(ptype, False)
            if not ok and value not in (_INF_MIN, _INF_MAX):
                raise OTSFault("OTSParameterInvalid", f"Validate PK type fail for column {name}.")
            if _value_size(value) > MAX_PK_BYTES and value not in (_INF_MIN, _INF_MAX):
                raise OTSFault("OTSParameterInvalid", f"The length of primary key column: '{name}' exceeds the MaxLength:{MAX_PK_BYTES}.")
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
                    raise OTSFault("OTSParameterInvalid", "The length of attribute column: '%s' exceeds the MaxLength:%d with CurrentLength:%d." % (
                        name, MAX_COLUMN_BYTES, _value_size(value)))
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
            limit = min(req.limit, self.max_range_rows) if req.HasField("limit") and req.limit > 0 else self.max_range_rows
            out, size, next_key = [], 0, None
            for key in keys:
                row = self._live(table, key)
                if row is None:
                    continue
                if len(out) >= limit or size > MAX_WRITE_BYTES:
                    next_key = [(name, value) for (name, _), value in zip(table.pk_schema, key)]
                    break
                out.append(self._row_out(table, key, row))
                size += sum(_value_size(v) for v, _ in row.values())
            return out, next_key

    def _row_out(self, table: Table, key: tuple, row: dict) -> tuple[list, list]:
        pk = [(name, value) for (name, _), value in zip(table.pk_schema, key)]
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


# -- the APIs: protobuf in, protobuf out ------------------------------------------------


def _consumed(msg, read: int = 0, write: int = 0) -> None:
    msg.capacity_unit.read = read
    msg.capacity_unit.write = write


def _api_create_table(model: TablestoreModel, body: bytes, faults) -> bytes:
    req = pb2.CreateTableRequest()
    req.ParseFromString(body)
    model.create_table(req)
    return pb2.CreateTableResponse().SerializeToString()


def _api_delete_table(model: TablestoreModel, body: bytes, faults) -> bytes:
    req = pb2.DeleteTableRequest()
    req.ParseFromString(body)
    model.delete_table(req.table_name)
    return pb2.DeleteTableResponse().SerializeToString()


def _api_list_table(model: TablestoreModel, body: bytes, faults) -> bytes:
    resp = pb2.ListTableResponse()
    resp.table_names.extend(sorted(model.tables))
    return resp.SerializeToString()


def _api_describe_table(model: TablestoreModel, body: bytes, faults) -> bytes:
    req = pb2.DescribeTableRequest()
    req.ParseFromString(body)
    table = model.table(req.table_name)
    resp = pb2.DescribeTableResponse()
    resp.table_meta.table_name = table.name
    for name, ptype in table.pk_schema:
        col = resp.table_meta.primary_key.add()
        col.name, col.type = name, ptype
    details = resp.reserved_throughput_details
    details.capacity_unit.read, details.capacity_unit.write = table.read_cu, table.write_cu
    details.last_increase_time = table.created
    resp.table_options.time_to_live = table.ttl_seconds
    resp.table_options.max_versions = table.max_versions
    resp.table_options.deviation_cell_version_in_sec = 86400
    return resp.SerializeToString()


def _api_put_row(model: TablestoreModel, body: bytes, faults) -> bytes:
    req = pb2.PutRowRequest()
    req.ParseFromString(body)
    if len(req.row) > MAX_WRITE_BYTES:
        raise OTSFault("OTSParameterInvalid", "The total data size of the request exceeds the limit.")
    faults.row_fault(req.row)
    model.put_row(req.table_name, req.row, req.condition)
    resp = pb2.PutRowResponse()
    _consumed(resp.consumed, write=1)
    return resp.SerializeToString()


def _api_get_row(model: TablestoreModel, body: bytes, faults) -> bytes:
    req = pb2.GetRowRequest()
    req.ParseFromString(body)
    row = model.get_row(req.table_name, req.primary_key)
    resp = pb2.GetRowResponse()
    _consumed(resp.consumed, read=1)
    resp.row = bytes(PlainBufferBuilder.serialize_for_put_row(*row)) if row else b""
    return resp.SerializeToString()


def _api_get_range(model: TablestoreModel, body: bytes, faults) -> bytes:
    req = pb2.GetRangeRequest()
    req.ParseFromString(body)
    rows, next_key = model.get_range(req)
    resp = pb2.GetRangeResponse()
    _consumed(resp.consumed, read=max(1, len(rows)))
    resp.rows = encode_rows(rows)
    if next_key:
        resp.next_start_primary_key = bytes(PlainBufferBuilder.serialize_primary_key(next_key))
    return resp.SerializeToString()


def _api_batch_write_row(model: TablestoreModel, body: bytes, faults) -> bytes:
    req = pb2.BatchWriteRowRequest()
    req.ParseFromString(body)
    if sum(len(t.rows) for t in req.tables) > MAX_BATCH_ROWS:
        raise OTSFault("OTSParameterInvalid", f"Rows count exceeds the upper limit: {MAX_BATCH_ROWS}.")
    if sum(len(r.row_change) for t in req.tables for r in t.rows) > MAX_WRITE_BYTES:
        raise OTSFault("OTSParameterInvalid", "The total data size of BatchWriteRow request exceeds the limit.")
    faults.request_refusal([r.row_change for t in req.tables for r in t.rows])
    resp = pb2.BatchWriteRowResponse()
    for table_req in req.tables:
        table_resp = resp.tables.add()
        table_resp.table_name = table_req.table_name
        for row_req in table_req.rows:
            row_resp = table_resp.rows.add()
            try:
                if row_req.type != pb2.PUT:
                    raise OTSFault("OTSParameterInvalid", "This fake supports only PUT in BatchWriteRow.")
                faults.row_fault(row_req.row_change)
                model.put_row(table_req.table_name, row_req.row_change, row_req.condition)
                row_resp.is_ok = True
                _consumed(row_resp.consumed, write=1)
            except OTSFault as fault:
                row_resp.is_ok = False
                row_resp.error.code, row_resp.error.message = fault.code, fault.message
    return resp.SerializeToString()


APIS: dict[str, Callable[[TablestoreModel, bytes, Any], bytes]] = {
    "CreateTable": _api_create_table,
    "DeleteTable": _api_delete_table,
    "ListTable": _api_list_table,
    "DescribeTable": _api_describe_table,
    "PutRow": _api_put_row,
    "GetRow": _api_get_row,
    "GetRange": _api_get_range,
    "BatchWriteRow": _api_batch_write_row,
}


# -- faults ----------------------------------------------------------------------------


class Faults:
    """Errors to inject: the next `n` row writes, or the next `n` requests to an API."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows: list[OTSFault] = []
        self.requests: dict[str, list[OTSFault]] = {}
        self.refused: list[tuple[str, OTSFault, bool]] = []  # (key marker, fault, whole request?)

    def fail_rows(self, n: int, code: str = "OTSServerBusy", message: str = "Server is busy.", status: int = 503) -> None:
        with self.lock:
            self.rows.extend(OTSFault(code, message, status) for _ in range(n))

    def fail_requests(self, api: str, n: int, code: str = "OTSServerBusy", message: str = "Server is busy.", status: int = 503) -> None:
        with self.lock:
            self.requests.setdefault(api, []).extend(OTSFault(code, message, status) for _ in range(n))

    def refuse_keys(self, marker: str, code: str = "OTSParameterInvalid", message: str = "Refused by the test.",
                    status: int = 400, whole_request: bool = False) -> None:
        """Refuse every row whose primary key holds `marker`: that row alone in a BatchWriteRow
        (or, with `whole_request`, the whole request, as the service does for some checks)."""
        with self.lock:
            self.refused.append((marker, OTSFault(code, message, status), whole_request))

    def row_fault(self, row_data: bytes = b"") -> None:
        with self.lock:
            fault = self.rows.pop(0) if self.rows else None
            refused = list(self.refused)
        if fault:
            raise fault
        for marker, refusal, _ in refused if row_data else ():
            if marker in _key_text(row_data):
                raise refusal

    def request_refusal(self, rows: list[bytes]) -> None:
        """Raise the fault of a whole-request refusal if a key in `rows` holds its marker."""
        with self.lock:
            whole = [(m, f) for m, f, w in self.refused if w]
        for marker, refusal in whole:
            if any(marker in _key_text(row) for row in rows):
                raise refusal

    def request_fault(self, api: str) -> None:
        with self.lock:
            queue = self.requests.get(api) or []
            fault = queue.pop(0) if queue else None
        if fault:
            raise fault

    def clear(self) -> None:
        with self.lock:
            self.rows.clear()
            self.requests.clear()
            self.refused.clear()


def _key_text(row_data: bytes) -> str:
    """The string primary-key values of a PlainBuffer row, joined."""
    return "\n".join(str(value) for _, value in decode_row(row_data)[0])


# -- signing ---------------------------------------------------------------------------


def _hmac_sha1_b64(secret: str, text: str) -> str:
    return base64.b64encode(hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha1).digest()).decode("ascii")


def _ots_headers_string(headers: dict[str, str], skip: tuple[str, ...] = ()) -> str:
    items = sorted(f"{k}:{v.strip()}" for k, v in headers.items() if k.startswith("x-ots-") and k not in skip)
    return "\n".join(items)


def request_signature(secret: str, uri: str, headers: dict[str, str]) -> str:
    """V2 request signature: URI, verb, (empty) sorted query, sorted x-ots-* headers."""
    text = f"{uri}\nPOST\n\n{_ots_headers_string(headers, skip=('x-ots-signature',))}\n"
    return _hmac_sha1_b64(secret, text)


def response_signature(secret: str, uri: str, headers: dict[str, str]) -> str:
    return _hmac_sha1_b64(secret, f"{_ots_headers_string(headers)}\n{uri}")


# -- HTTP ------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's urllib3 pool expects
    server: "_HTTPServer"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args) -> None:  # quiet: tests read server.requests instead
        pass

    def do_POST(self) -> None:
        fake: TablestoreServer = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        uri = self.path.split("?", 1)[0]
        api = uri.lstrip("/")
        fake.requests.append((api, headers))
        if fake.hang.hold(self, api, headers):
            return
        secret: Optional[str] = None
        try:
            secret = fake.check_request(uri, headers, body)
            handler = APIS.get(api)
            if handler is None:
                raise OTSFault("OTSUnsupportOperation", f"Unsupported operation: '{api}'.", 400)
            fake.faults.request_fault(api)
            payload, status = handler(fake.model, body, fake.faults), 200
        except OTSFault as fault:
            err = pb2.Error()
            err.code, err.message = fault.code, fault.message
            payload, status = err.SerializeToString(), fault.status
            if fault.code == "OTSAuthFailed":
                secret = None  # the client skips the check on auth failures; we cannot sign for it
        self._send(status, payload, uri, headers.get("x-ots-accesskeyid", ""), secret)

    def _send(self, status: int, payload: bytes, uri: str, access_key_id: str, secret: Optional[str]) -> None:
        out = {
            "x-ots-contentmd5": base64.b64encode(hashlib.md5(payload).digest()).decode("ascii"),
            "x-ots-requestid": str(uuid.uuid4()),
            "x-ots-date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "x-ots-contenttype": "protocol buffer",
        }
        if secret is not None:
            out["authorization"] = f"OTS {access_key_id}:{response_signature(secret, uri, out)}"
        reason = self.responses.get(status, ("Error",))[0]
        head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/x-protobuf", f"Content-Length: {len(payload)}"]
        head += [f"{k}: {v}" for k, v in out.items()]
        # One write for status, headers and body (a split write meets the client's delayed ACK).
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: "TablestoreServer"


class TablestoreServer:
    """The fake on 127.0.0.1: `with TablestoreServer(...) as ots: OTSClient(ots.endpoint, ...)`."""

    def __init__(self, instance: str = "test-instance", access_key_id: str = "test-ak",
                 access_key_secret: str = "test-secret", sts_token: Optional[str] = None,
                 max_range_rows: int = MAX_RANGE_ROWS):
        self.instance = instance
        self.credentials = {access_key_id: (access_key_secret, sts_token)}
        self.model = TablestoreModel(max_range_rows=max_range_rows)
        self.faults = Faults()
        self.hang = Hang()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # requests
    def check_request(self, uri: str, headers: dict[str, str], body: bytes) -> str:
        """Authenticate a request as the service does; return the secret to sign the answer with."""
        for name in ("x-ots-date", "x-ots-apiversion", "x-ots-accesskeyid", "x-ots-instancename",
                     "x-ots-contentmd5", "x-ots-signature"):
            if name not in headers:
                raise OTSFault("OTSAuthFailed", f"Missing header: '{name}'.", 403)
        if headers["x-ots-apiversion"] != API_VERSION:
            raise OTSFault("OTSParameterInvalid", "Unsupported API version.", 400)
        sent = dt.datetime.strptime(headers["x-ots-date"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
        if abs((dt.datetime.now(dt.timezone.utc) - sent).total_seconds()) > MAX_SKEW_SECONDS:
            raise OTSFault("OTSAuthFailed", "Mismatch between system time and x-ots-date.", 403)
        if headers["x-ots-contentmd5"] != base64.b64encode(hashlib.md5(body).digest()).decode("ascii"):
            raise OTSFault("OTSAuthFailed", "Mismatch between MD5 value of request body and x-ots-contentmd5 in header.", 403)
        known = self.credentials.get(headers["x-ots-accesskeyid"])
        if known is None:
            raise OTSFault("OTSAuthFailed", "The AccessKeyID is disabled or does not exist.", 403)
        secret, token = known
        if token is not None and headers.get("x-ots-ststoken") != token:
            raise OTSFault("OTSAuthFailed", "The security token is invalid or expired.", 403)
        if not hmac.compare_digest(headers["x-ots-signature"], request_signature(secret, uri, headers)):
            raise OTSFault("OTSAuthFailed", "Signature mismatch.", 403)
        if headers["x-ots-instancename"] != self.instance:
            raise OTSFault("OTSAuthFailed", "The instance is not found.", 403)
        return secret

    def api_calls(self, api: Optional[str] = None) -> int:
        return sum(1 for name, _ in self.requests if api is None or name == api)

    # lifecycle
    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "start() first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "TablestoreServer":
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="tablestore-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.hang.off()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def reset(self) -> None:
        """Forget tables, faults and recorded requests (between tests)."""
        with self.model.lock:
            self.model.tables.clear()
            self.model.missing_row_condition = "evaluate"
        self.faults.clear()
        self.hang.off()
        self.requests.clear()

    def __enter__(self) -> "TablestoreServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- fixtures (import into a test module, or expose them from conftest.py) -------------

try:
    import pytest
except ImportError:  # the fake itself needs no pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def tablestore_server():
        server = TablestoreServer().start()
        yield server
        server.stop()

    @pytest.fixture
    def ots(tablestore_server):
        """The session's Tablestore fake, emptied before the test (instance test-instance, test-ak / test-secret)."""
        tablestore_server.reset()
        return tablestore_server
