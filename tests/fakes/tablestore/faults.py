"""Test hooks for errors: `Faults` (a server's `server.faults`) fails the next `n` row writes
or the next `n` requests to an API, or refuses the rows whose primary key holds a marker
(that row alone in a BatchWriteRow, or the whole request)."""
from __future__ import annotations

import threading

from .codec import decode_row
from .errors import OTSFault


class Faults:
    """Errors to inject: the next `n` row writes, or the next `n` requests to an API."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows: list[OTSFault] = []
        self.requests: dict[str, list[OTSFault]] = {}
        self.refused: list[tuple[str, OTSFault, bool]] = []  # (key marker, fault, whole request?)

    def fail_rows(self, n: int, code: str = "OTSServerBusy", message: str = "Server is busy.",
                  status: int = 503) -> None:
        with self.lock:
            self.rows.extend(OTSFault(code, message, status) for _ in range(n))

    def fail_requests(self, api: str, n: int, code: str = "OTSServerBusy", message: str = "Server is busy.",
                      status: int = 503) -> None:
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
