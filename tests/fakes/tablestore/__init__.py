"""A wire-level Tablestore (OTS) fake on loopback, for tests.

No Tablestore emulator exists, so this speaks the real protocol to the real SDK:
`POST /<ApiName>` with a protobuf body (the SDK's own `table_store_pb2`), rows in
PlainBuffer (decoded and encoded with the SDK's own `tablestore.plainbuffer` coder).

Like moto's per-service layout (and scripts/emulator) it keeps the backend state apart
from the wire format, one concern a module:

- `model`: `TablestoreModel`, tables, rows, row-existence and column conditions, size
  limits, TTL, GetRange paging.
- `errors`: `OTSFault(code, message, status)`, with the service's real codes
  (OTSObjectNotExist 404, OTSConditionCheckFail 403, OTSParameterInvalid 400...).
- `codec`: PlainBuffer rows and keys, and the column values of condition filters.
- `apis`: the `_api_*` functions: decode a request body, call the model, encode the response.
- `faults`: `Faults`, the errors a test injects.
- `signing`: the V2 request signature (a wrong secret gets OTSAuthFailed 403 as from the
  real service) and the response signature the SDK verifies (`authorization: OTS ak:sig`,
  HMAC-SHA1 over the sorted `x-ots-*` response headers and the URI).
- `server`: `TablestoreServer` and its HTTP/1.1 keep-alive handler, with the request
  checks (x-ots-date skew, content MD5, instance, STS token, the request signature). Each
  response goes out in one socket write (headers and body apart would meet the client's
  delayed ACK).
- `fixtures`: the pytest fixtures `tablestore_server` (session) and `ots` (per test).

Test hooks: `server.requests` records (api, headers) of every request; `server.faults`
injects per-row or per-request errors, or refuses the rows whose key holds a marker;
`server.hang.on()` accepts requests and never answers them (scripts/stand_ins/hang.py);
`model.missing_row_condition` chooses how a column
condition is judged on a row that does not exist ("evaluate": as a row with no columns,
so `pass_if_missing` decides; "fail": the condition fails), so a sink can be tested under
either reading of the service's semantics.
"""
from .errors import OTSFault
from .fixtures import ots, tablestore_server
from .server import TablestoreServer
from .signing import request_signature, response_signature

__all__ = ["TablestoreServer", "OTSFault", "request_signature", "response_signature", "ots", "tablestore_server"]
