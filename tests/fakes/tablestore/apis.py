"""The APIs, protobuf in, protobuf out: one `_api_*` function per API the sinks call decodes
the request body (the SDK's own `table_store_pb2`), checks the request-wide limits, lets
the injected faults act, calls the model and encodes the response; `APIS` maps each
`POST /<ApiName>` to its function."""
from __future__ import annotations

from typing import Any, Callable

import tablestore.protobuf.table_store_pb2 as pb2
from tablestore.plainbuffer.plain_buffer_builder import PlainBufferBuilder

from .codec import encode_rows
from .errors import OTSFault
from .model import MAX_BATCH_ROWS, MAX_WRITE_BYTES, TablestoreModel


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
