"""Value types on the drain's import path are msgspec Structs, not dataclasses.

A dataclass compiles its methods with `exec` when its module is imported: about 1 ms each
under CPython 3.12, and the drain's handler import made 18 of them (22 ms of 127). A Struct
is built in C in under 0.1 ms, and msgspec is already loaded for the settings. Structs have
no per-field `repr=False`, so a class holding a secret or a phone number says which fields
its repr leaves out with `repr_hiding` (tests/test_security.py holds the secrets to it).
"""
from __future__ import annotations

from typing import Any, Callable


def repr_hiding(*hidden: str) -> Callable[[Any], str]:
    """A `__repr__` for a Struct that leaves the named fields out."""

    def __repr__(self: Any) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__struct_fields__ if name not in hidden)
        return f"{type(self).__name__}({shown})"

    return __repr__
