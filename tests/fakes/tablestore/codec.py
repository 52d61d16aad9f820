"""PlainBuffer, the row format inside the protobuf bodies: the SDK's own coder
(`tablestore.plainbuffer`) for rows and keys, a reader taught the INF_MIN / INF_MAX bounds
that only GetRange keys carry (the SDK's reader lacks them), the column values that
condition filters carry, and the size and primary-key order the model judges values by."""
from __future__ import annotations

import struct
from typing import Any

import tablestore.const_module as _const  # the SDK keeps PlainBuffer tags here
import tablestore.plainbuffer.plain_buffer_consts  # noqa: F401  (fills the SDK's `const` module)
from tablestore.plainbuffer.plain_buffer_builder import PlainBufferBuilder
from tablestore.plainbuffer.plain_buffer_coded_stream import PlainBufferCodedInputStream
from tablestore.plainbuffer.plain_buffer_crc8 import PlainBufferCrc8
from tablestore.plainbuffer.plain_buffer_stream import PlainBufferInputStream

from .errors import OTSFault

_INF_MIN, _INF_MAX = object(), object()  # range bounds inside the model


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
