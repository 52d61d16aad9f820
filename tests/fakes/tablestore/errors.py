"""The service error the fake raises everywhere: `OTSFault(code, message, status)` with the
real service's codes (OTSObjectNotExist 404, OTSConditionCheckFail 403, OTSParameterInvalid
400...). The handler in `server` turns it into the protobuf `Error` the SDK reads; a row
fault inside BatchWriteRow becomes that row's error instead."""
from __future__ import annotations


class OTSFault(Exception):
    """A service error as the real service reports it."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status
