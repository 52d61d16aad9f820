"""Keys that always fit a table backend's primary-key limit.

A business key is at most a few hundred characters a part, but escaping and UTF-8 can make
it longer in bytes than a backend allows (DynamoDB: 2,048 bytes for a partition key;
Tablestore: 1,024 bytes for a string primary-key column). Such a key is stored under a
bounded form: a readable prefix of it, cut at a character boundary, then `##` and the
SHA-256 of the whole key. The form is deterministic, so a redelivered message lands on the
same row; the full key is kept in the row's `full_key` attribute and given back on read.

`##` never occurs in a natural key (key parts are non-empty and escape `#`), so a bounded
key can never be mistaken for, or collide with, a key that fits.
"""
from __future__ import annotations

import hashlib
from typing import Any, Optional, overload

FULL_KEY = "full_key"  # the attribute that keeps a bounded row's whole key
MARK = "##"
_DIGEST_CHARS = 64  # hex SHA-256


def key_bytes(key: str) -> int:
    return len(key.encode("utf-8"))


def bounded_key(key: str, limit: Optional[int]) -> str:
    """`key` if it fits in `limit` UTF-8 bytes, else its bounded form (at most `limit` bytes)."""
    data = key.encode("utf-8")
    if limit is None or len(data) <= limit:
        return key
    room = limit - len(MARK) - _DIGEST_CHARS
    if room < 0:
        raise ValueError(f"a key limit of {limit} bytes leaves no room for the bounded form")
    # errors="ignore" drops a character cut in half at the end: the prefix stays valid UTF-8.
    prefix = data[:room].decode("utf-8", "ignore")
    return f"{prefix}{MARK}{hashlib.sha256(data).hexdigest()}"


def bound_item(item: dict[str, Any], limit: Optional[int]) -> dict[str, Any]:
    """The item as stored: under its bounded key, with the whole key kept, when it does not fit."""
    stored = bounded_key(item["key"], limit)
    if stored == item["key"]:
        return item
    return {**item, "key": stored, FULL_KEY: item["key"]}


@overload
def restore_item(item: dict[str, Any]) -> dict[str, Any]: ...


@overload
def restore_item(item: None) -> None: ...


def restore_item(item: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """A stored item with its whole key back under `key`."""
    if item is None or FULL_KEY not in item:
        return item
    restored = dict(item)
    restored["key"] = restored.pop(FULL_KEY)
    return restored
