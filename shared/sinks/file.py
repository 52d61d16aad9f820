"""Local directory sink: JSONL files in `type=<MessageType>/dt=YYYY-MM-DD/` partitions.

The local default. Files are written to a temporary name, fsynced and renamed, so a
crash never leaves a half-written file under a final name, and a retried batch
replaces its own file (the name derives from the batch's keys). A failed write (disk
full, file too large, fsync error) removes its temporary file and raises SinkError.
A local write has no network to wait for, so it does not look at the deadline.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator, Optional

from shared.clock import Deadline
from shared.sinks.base import ObjectSink, SinkError
from shared.sinks.paths import DIRECTORY_FORM, writable_directory


class FileSink(ObjectSink):
    name = "file"
    compress = False
    hour_partitions = False

    def __init__(self, root: str | os.PathLike, prefix: str = ""):
        super().__init__(prefix)
        self.root = Path(root)

    @classmethod
    def from_settings(cls, settings, credentials=None) -> "FileSink":
        """The sink in SINK_PATH, which must be (or become) a directory it can write in."""
        return cls(writable_directory(Path(settings.sink_path), settings.sink_path, DIRECTORY_FORM), prefix="")

    def _put_object(self, path: str, data: bytes, deadline: Optional[Deadline] = None) -> None:
        target = self.root / path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, target)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            _fsync_dir(target.parent)
        except OSError as exc:
            raise SinkError(self.name, f"cannot write {target}: {exc.strerror or exc}") from None

    def _get_object(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def _list_objects(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix
        # `prefix` may end inside a name ("type="): walk from its directory and filter.
        start = base if prefix.endswith("/") else base.parent
        if not start.exists():
            return
        for path in start.rglob("*" + self.suffix):
            rel = path.relative_to(self.root).as_posix()
            if rel.startswith(prefix) and not path.name.startswith(".tmp-"):
                yield rel

    def _list_prefixes(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix
        start = base if prefix.endswith("/") else base.parent
        if not start.is_dir():
            return
        for path in sorted(start.iterdir()):
            rel = path.relative_to(self.root).as_posix() + "/"
            if path.is_dir() and rel.startswith(prefix):
                yield rel


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every filesystem allows fsync on a directory
    finally:
        os.close(fd)
