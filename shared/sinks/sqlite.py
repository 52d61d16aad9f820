"""SQLite sink: one row per business key in `records`, dead letters in `dead_letters`.

The local table default. WAL mode and a busy timeout let two drain processes (two
overlapping schedules) write the same file safely. A write waits for the file lock only
until its deadline (without one, 30 s), then fails cleanly; a failed write rolls back.
"""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from shared.clock import Deadline
from shared.records import SOURCE_RECEIPT
from shared.sinks.base import DEAD_LETTER, SinkError, TableSink
from shared.sinks.paths import DATABASE_FORM, settings_error, writable_directory
from shared.sinks.reads import Selection

RECORD_COLUMNS = ("key", "kind", "message_type", "source", "event_time", "event_date", "body",
                  "message_id", "enqueue_time", "dequeue_count", "stored_at", "ttl")
DEAD_COLUMNS = ("key", "kind", "message_type", "source", "event_time", "event_date", "error", "raw_body",
                "message_id", "enqueue_time", "dequeue_count", "stored_at", "ttl")

# Rows per INSERT: within SQLite's oldest default limit of 999 bound variables. One statement
# for many rows is one sqlite3_step, and so one release of the GIL instead of one per row:
# under a busy drain every release hands the GIL to another thread and waits to get it back.
MAX_VARIABLES = 999
LOCK_WAIT = 30.0  # seconds a write without deadline waits for another writer's lock


def _multi_row(table: str, columns: Sequence[str], rows: list[list[Any]]) -> list[tuple[str, list[list[Any]]]]:
    """INSERT OR REPLACE statements of up to MAX_VARIABLES values each, for executemany."""
    if not rows:
        return []
    per = MAX_VARIABLES // len(columns)
    head = f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES "
    one = f"({', '.join('?' * len(columns))})"
    statements = []
    full, rest = divmod(len(rows), per)
    if full:
        statements.append((head + ", ".join([one] * per),
                           [list(chain.from_iterable(rows[i * per:(i + 1) * per])) for i in range(full)]))
    if rest:
        statements.append((head + ", ".join([one] * rest), [list(chain.from_iterable(rows[full * per:]))]))
    return statements


SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, message_type TEXT NOT NULL, source TEXT NOT NULL,
    event_time TEXT, event_date TEXT, body TEXT NOT NULL, message_id TEXT, enqueue_time INTEGER,
    dequeue_count INTEGER, stored_at INTEGER, ttl INTEGER
);
CREATE INDEX IF NOT EXISTS records_by_date ON records (message_type, event_date);
CREATE TABLE IF NOT EXISTS dead_letters (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, message_type TEXT NOT NULL, source TEXT NOT NULL,
    event_time TEXT, event_date TEXT, error TEXT NOT NULL, raw_body TEXT NOT NULL, message_id TEXT,
    enqueue_time INTEGER, dequeue_count INTEGER, stored_at INTEGER, ttl INTEGER
);
"""


class SqliteSink(TableSink):
    name = "sqlite"
    coalesce_max_messages = 512  # one transaction (one fsync) per coalesced write

    def __init__(self, path: str, ttl_days: Optional[int] = None, read_only: bool = False):
        """`read_only` opens an existing database for reading and changes nothing in it (reports)."""
        super().__init__(ttl_days)
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            if read_only:
                self.db = sqlite3.connect(f"{Path(self.path).resolve().as_uri()}?mode=ro", uri=True,
                                          timeout=LOCK_WAIT, check_same_thread=False, isolation_level=None)
                self.db.execute("SELECT 1 FROM records LIMIT 1")  # not a database, or not ours: fail now
                return
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=LOCK_WAIT, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # durable before we delete from the queue
            self.db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise SinkError(self.name, f"cannot open {self.path}: {exc}") from None

    @classmethod
    def from_settings(cls, settings, credentials=None) -> "SqliteSink":
        """The sink on SINK_PATH, which must be (or become) a database file it can write."""
        path = settings.sink_path
        writable_directory(Path(path).parent, path, DATABASE_FORM)
        if Path(path).is_dir():
            raise settings_error(path, "is a directory", DATABASE_FORM)
        try:
            return cls(path, ttl_days=settings.sink_ttl_days)
        except SinkError as exc:
            raise settings_error(path, f"cannot be opened: {exc.reason.rpartition(': ')[2]}", DATABASE_FORM) from None

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _transaction(self, deadline: Optional[Deadline]) -> Iterator[None]:
        """One write transaction: waits for the connection and the file lock at most until
        `deadline` (another process, e.g. an overlapping run, may hold it); rolls back on error."""
        if deadline is None:  # no deadline (reconcile, tools): the connection's 30 s
            self._lock.acquire()
            wait = LOCK_WAIT
        else:
            if not self._lock.acquire(timeout=max(0.0, deadline.remaining())):
                raise SinkError(self.name, f"write to {self.path} failed: no time left to wait for the database lock")
            # SQLite's busy handler sleeps in steps of up to 100 ms: stop one step early.
            wait = max(0.0, deadline.remaining() - 0.1)
        try:
            try:
                self.db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
                self.db.execute("BEGIN IMMEDIATE")
                yield
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self.db.in_transaction:
                    try:
                        self.db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # SQLite rolls back itself when the connection is next used
                raise SinkError(self.name, f"write to {self.path} failed: {exc}") from None
        finally:
            self._lock.release()

    def _upsert(self, items: Sequence[dict[str, Any]], deadline: Optional[Deadline] = None) -> int:
        records, dead = [], []
        for item in items:
            if item["kind"] == "dead_letter":
                dead.append([item.get(c) for c in DEAD_COLUMNS])
            else:
                records.append([item.get(c) for c in RECORD_COLUMNS])
        with self._transaction(deadline):
            for sql, rows in [*_multi_row("records", RECORD_COLUMNS, records),
                              *_multi_row("dead_letters", DEAD_COLUMNS, dead)]:
                self.db.executemany(sql, rows)
        return 1

    def _put_unless_receipt(self, item: dict[str, Any], deadline: Optional[Deadline] = None) -> bool:
        cols = ", ".join(RECORD_COLUMNS)
        marks = ", ".join("?" for _ in RECORD_COLUMNS)
        updates = ", ".join(f"{c}=excluded.{c}" for c in RECORD_COLUMNS if c != "key")
        sql = (f"INSERT INTO records ({cols}) VALUES ({marks}) ON CONFLICT(key) DO UPDATE SET {updates} "
               f"WHERE records.source != '{SOURCE_RECEIPT}'")
        with self._transaction(deadline):
            cursor = self.db.execute(sql, [item.get(c) for c in RECORD_COLUMNS])
        return cursor.rowcount > 0

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        """Stream rows in chunks from a cursor of its own (whole tables never sit in memory)."""
        with self._lock:
            cursor = self.db.cursor()
            cursor.execute(sql, params)
            names = [d[0] for d in cursor.description]
        try:
            while True:
                with self._lock:
                    rows = cursor.fetchmany(500)
                if not rows:
                    return
                for row in rows:
                    yield dict(zip(names, row, strict=True))
        finally:
            cursor.close()

    def _get_item(self, key: str) -> Optional[dict[str, Any]]:
        table = "dead_letters" if key.startswith("DLQ#") else "records"
        return next(self._rows(f"SELECT * FROM {table} WHERE key = ?", (key,)), None)

    def _scan_items(self) -> Iterator[dict[str, Any]]:
        yield from self._rows("SELECT * FROM records ORDER BY key")
        yield from self._rows("SELECT * FROM dead_letters ORDER BY key")

    def _select(self, kind: str, selection: Selection) -> Iterator[dict[str, Any]]:
        """Narrowed in SQL: by type and date through the (message_type, event_date) index."""
        where, params = ["kind = ?"], [kind]
        if selection.types is not None:
            where.append(f"message_type IN ({', '.join('?' * len(selection.types))})")
            params += sorted(selection.types)
        if selection.date_from is not None:
            where.append("event_date >= ?")
            params.append(selection.date_from)
        if selection.date_to is not None:
            where.append("event_date <= ?")
            params.append(selection.date_to)
        table = "dead_letters" if kind == DEAD_LETTER else "records"
        # Key order for a whole read (the key's own index gives it); a narrowed read follows the
        # date index as it is: ORDER BY key would sort the whole result before the first row.
        order = "" if selection.types is not None or selection.dated else " ORDER BY key"
        yield from self._rows(f"SELECT * FROM {table} WHERE {' AND '.join(where)}{order}", params)

    def count(self, table: str = "records") -> int:
        return next(self._rows(f"SELECT COUNT(*) AS n FROM {table}"))["n"]
