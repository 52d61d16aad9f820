"""The sink interface and the two algorithms every backend shares.

Like Powertools' idempotency persistence layer, the abstract bases own the whole
algorithm (grouping, naming, serialising, size and key limits, the merge rule, setting
aside what a backend refuses) and each backend implements a few small storage primitives
and nothing else:

- `ObjectSink` backends (file, s3, oss) implement `_put_object`, `_get_object`, `_list_objects`,
  `_list_prefixes`.
- `TableSink` backends (sqlite, dynamodb, tablestore) implement `_upsert`, `_put_unless_receipt`,
  `_get_item`, `_scan_items`, and declare their limits (`max_key_bytes`, `max_item_bytes`,
  `batch_items`); one that can narrow a read itself overrides `_select` (sqlite, by its index).

The read side is public and the same on every sink: `iter_records` and `iter_dead_letters`
by message types and an inclusive range of event dates (object sinks list only the `dt=`
partitions inside the range), `read_object` for one object of an object sink, and on table
sinks rows of other kinds by key (`put_rows`, `get`, `iter_rows`: the send ledger's).

A write either stores the whole batch or raises `SinkError`; the drain deletes messages
only after `write` returned (docs/ARCHITECTURE.md, invariant 1). "The whole batch" counts a record the
backend cannot hold as stored when it is stored as a dead letter instead (invariant 4):
one message never blocks the others. Writes are idempotent (invariant 2): object names
derive from the batch's keys, table rows are keyed by them. With a deadline, a write
returns or raises before it, retries included.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Optional, Sequence

import msgspec

from shared.clock import Deadline
from shared.records import SOURCE_RECEIPT, DeadLetter, MnsMeta, Record, canonical_json
from shared.sinks.keys import bound_item, bounded_key, restore_item
from shared.sinks.reads import DateBound, Selection

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.tokens import Credentials

RECORD, DEAD_LETTER = "record", "dead_letter"  # the `kind` of a table row the drain writes


class SinkError(Exception):
    """The sink did not durably store a batch. Nothing of that batch may be deleted."""

    def __init__(self, backend: str, reason: str):
        super().__init__(f"{backend} sink: {reason}")
        self.backend = backend
        self.reason = reason


class NoObjects(SinkError):
    """The sink keeps rows, not objects: there is no object to read by key."""


class ItemsRefused(SinkError):
    """The backend refused items for a reason retrying cannot fix (a key, a size, a validation
    error). `refused` maps the stored keys it named to its reason, and then it stored the rest
    of the request; empty, it refused the whole request without saying which item was at fault.
    """

    def __init__(self, backend: str, reason: str, refused: Optional[dict[str, str]] = None, calls: int = 1):
        super().__init__(backend, reason)
        self.refused = refused or {}
        self.calls = calls


class CoalesceLimits(msgspec.Struct, frozen=True):
    """How much the drain may gather into one `write` call (bounded further by time)."""

    messages: int
    bytes: int


class WriteReport(msgspec.Struct):
    """What one `Sink.write` stored."""

    records: int = 0
    dead_letters: int = 0  # includes records diverted because they were too large
    write_calls: int = 0  # objects put, or batch-write calls made


class Sink(ABC):
    """Durable, idempotent storage of records and dead letters."""

    name: ClassVar[str] = "sink"
    # One write per received batch of 16 unless a backend gains from larger writes.
    coalesce_max_messages: ClassVar[int] = 16
    coalesce_max_bytes: ClassVar[int] = 8 * 1024 * 1024
    # True when the sink holds at most one record per key (a reader need not deduplicate).
    unique_keys: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: "Settings", credentials: "Optional[Credentials]" = None) -> "Sink":
        """The sink the settings describe; a bad setting raises SettingsError naming its variable.
        `credentials` are the customer's Alibaba Cloud credentials (`load_credentials`), if found."""

    def coalesce_limits(self) -> CoalesceLimits:
        return CoalesceLimits(self.coalesce_max_messages, self.coalesce_max_bytes)

    @abstractmethod
    def write(self, records: Sequence[Record], dead_letters: Sequence[DeadLetter],
              deadline: Optional[Deadline] = None) -> WriteReport:
        """Store the whole batch or raise SinkError; with `deadline`, return or raise before it,
        retries included (every network call's timeouts and retry budget come from the time left)."""

    @abstractmethod
    def iter_records(self, message_types: Optional[Iterable[str]] = None, date_from: DateBound = None,
                     date_to: DateBound = None) -> Iterator[Record]:
        """The stored records of these types (None: all) whose event date lies in date_from..date_to
        (dates or 'YYYY-MM-DD', both included; None: open), streamed. Object sinks may repeat a key
        (see `unique_keys`)."""

    @abstractmethod
    def iter_dead_letters(self, message_types: Optional[Iterable[str]] = None, date_from: DateBound = None,
                          date_to: DateBound = None) -> Iterator[dict[str, Any]]:
        """The stored dead-letter entries, as stored dicts, selected as `iter_records` selects."""

    def read_object(self, key: str) -> bytes:
        """The bytes of the object `key` (below the sink's prefix). Raises NoObjects on a sink
        that keeps rows, SinkError (or the backend's not-found error) when it cannot be read."""
        raise NoObjects(self.name, f"SINK={self.name} keeps rows, not objects")

    def close(self) -> None:  # noqa: B027 -- an optional hook, not abstract: most sinks hold nothing
        """Release connections; the default has nothing to release."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def batch_name(keys: Iterable[str]) -> str:
    """A deterministic object name for a set of keys: a retried batch rewrites the same object."""
    digest = hashlib.sha256("\n".join(sorted(set(keys))).encode("utf-8")).hexdigest()
    return f"part-{digest[:24]}"


def _dedupe_last(items: Iterable[Any]) -> list[Any]:
    """One entry per key (the last one wins), sorted by key so content is deterministic."""
    by_key = {item.key: item for item in items}
    return [by_key[k] for k in sorted(by_key)]


def _by_source(records: Iterable[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for record in records:
        out.setdefault(record.source, []).append(record)
    return out


class ObjectSink(Sink):
    """Records as JSONL objects in Hive-style partitions, one object per batch and partition.

    Layout: `<prefix>type=<MessageType>/dt=YYYY-MM-DD/[hour=HH/]part-<hash>.jsonl[.gz]`,
    dead letters under `<prefix>dead_letters/type=<MessageType>/dt=.../`.
    """

    compress: ClassVar[bool] = True
    hour_partitions: ClassVar[bool] = True
    # Objects are billed per PUT and read best when large: gather many batches into one.
    coalesce_max_messages: ClassVar[int] = 2000
    coalesce_max_bytes: ClassVar[int] = 16 * 1024 * 1024
    # An observer told each object's path once it is stored, while the write goes on (a
    # development harness uses it to stop a process inside a write); None calls nothing.
    on_object_stored: Optional[Callable[[str], None]] = None

    def __init__(self, prefix: str = ""):
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    # -- backend primitives -------------------------------------------------
    @abstractmethod
    def _put_object(self, path: str, data: bytes, deadline: Optional[Deadline] = None) -> None:
        """Store `data` at `path` (overwriting), before `deadline`. Raise SinkError on failure."""

    @abstractmethod
    def _get_object(self, path: str) -> bytes:
        """Return the bytes stored at `path`."""

    @abstractmethod
    def _list_objects(self, prefix: str) -> Iterator[str]:
        """Every object path under `prefix`."""

    @abstractmethod
    def _list_prefixes(self, prefix: str) -> Iterator[str]:
        """The distinct "directories" just below `prefix`: each path under it cut after the first
        "/" that follows `prefix` (what a listing with delimiter "/" calls common prefixes)."""

    # -- the algorithm ------------------------------------------------------
    @property
    def suffix(self) -> str:
        return ".jsonl.gz" if self.compress else ".jsonl"

    def _partition(self, root: str, message_type: str, date: str, hour: str) -> str:
        path = f"{self.prefix}{root}type={message_type}/dt={date}/"
        return path + (f"hour={hour}/" if self.hour_partitions else "")

    def _encode(self, entries: Sequence[dict[str, Any]]) -> bytes:
        text = "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in entries)
        raw = text.encode("utf-8")
        # mtime=0 keeps the bytes identical for an identical batch (deterministic retries).
        return gzip.compress(raw, mtime=0) if self.compress else raw

    def _decode(self, data: bytes) -> Iterator[dict[str, Any]]:
        if self.compress:
            data = gzip.decompress(data)
        # Split on "\n" only: json.dumps(ensure_ascii=False) leaves U+2028, U+2029 and U+0085
        # unescaped inside strings, and str.splitlines() would cut a record there.
        for line in data.decode("utf-8").split("\n"):
            if line.strip():
                yield json.loads(line)

    def object_paths(self, records: Sequence[Record], dead_letters: Sequence[DeadLetter]) -> dict[str, list]:
        """Group a batch into the objects it becomes: path -> entries (deterministic).

        Receipts and reconciled send records go to separate objects whose names include the
        source, so a reconcile batch can never overwrite the receipt object with the same keys.
        """
        groups: dict[tuple[str, str, str, str, str], list] = {}
        for source, items in sorted(_by_source(records).items()):
            for item in _dedupe_last(items):
                groups.setdefault(("", item.message_type, item.event_date, item.event_hour, source), []).append(item)
        for item in _dedupe_last(dead_letters):
            groups.setdefault(("dead_letters/", item.message_type, item.event_date, item.event_hour, SOURCE_RECEIPT),
                              []).append(item)
        out = {}
        for (root, mtype, date, hour, source), items in sorted(groups.items()):
            keys = [i.key for i in items]
            name = batch_name(keys if source == SOURCE_RECEIPT else [f"{source}:{k}" for k in keys])
            out[self._partition(root, mtype, date, hour) + name + self.suffix] = items
        return out

    def write(self, records: Sequence[Record], dead_letters: Sequence[DeadLetter],
              deadline: Optional[Deadline] = None) -> WriteReport:
        report = WriteReport()
        for path, items in self.object_paths(records, dead_letters).items():
            self._put_object(path, self._encode([i.as_dict() for i in items]), deadline)
            report.write_calls += 1
            if self.on_object_stored is not None:
                self.on_object_stored(path)
        report.records = len({r.key for r in records})
        report.dead_letters = len({d.key for d in dead_letters})
        return report

    def iter_records(self, message_types: Optional[Iterable[str]] = None, date_from: DateBound = None,
                     date_to: DateBound = None) -> Iterator[Record]:
        for entry in self._read("", Selection.of(message_types, date_from, date_to)):
            yield Record.from_dict(entry)

    def iter_dead_letters(self, message_types: Optional[Iterable[str]] = None, date_from: DateBound = None,
                          date_to: DateBound = None) -> Iterator[dict[str, Any]]:
        yield from self._read("dead_letters/", Selection.of(message_types, date_from, date_to))

    def read_object(self, key: str) -> bytes:
        return self._get_object(self.prefix + key)

    def _read(self, root: str, selection: Selection) -> Iterator[dict[str, Any]]:
        for prefix in self._partitions(root, selection):
            for path in sorted(self._list_objects(prefix)):
                yield from self._decode(self._get_object(path))

    def _partitions(self, root: str, selection: Selection) -> Iterator[str]:
        """The prefixes a read lists objects under: all of `type=` at once, one per type, or,
        for a date range, only the `dt=` partitions inside it (found by listing their names)."""
        base = f"{self.prefix}{root}type="
        if selection.types is None and not selection.dated:
            yield base
            return
        types = (sorted(self._list_prefixes(base)) if selection.types is None
                 else [f"{base}{t}/" for t in sorted(selection.types)])
        for type_prefix in types:
            if not selection.dated:
                yield type_prefix
                continue
            for partition in sorted(self._list_prefixes(type_prefix + "dt=")):
                if selection.has_day(partition[len(type_prefix) + len("dt="):-1]):
                    yield partition


class TableSink(Sink):
    """Records as rows keyed by their business key; dead letters as rows keyed `DLQ#...`; rows
    of other kinds (the send ledger's) beside them, which record reads never yield.

    Merge rule (one row per business key): a receipt always overwrites (a redelivery is
    the same fact; a receipt is the authority over a reconciled send record); a send
    record from reconcile is written only where no receipt row exists yet.

    Limits: a key longer than `max_key_bytes` is stored under a bounded form (shared/sinks/
    keys.py); a record over `max_item_bytes` becomes a dead letter before any write; a record
    the backend refuses anyway (`ItemsRefused`) is found by writing its request in halves and
    becomes a dead letter, and the rest of the batch is stored. A dead letter the backend
    refuses fails the write: there is nowhere left to put it.
    """

    # Largest item the backend accepts, in bytes of its stored form (None: no limit).
    max_item_bytes: ClassVar[Optional[int]] = None
    # Longest primary key the backend accepts, in UTF-8 bytes (None: no limit).
    max_key_bytes: ClassVar[Optional[int]] = None
    # Items per `_upsert` call (the backend's batch-write limit; None: all in one).
    batch_items: ClassVar[Optional[int]] = None
    # Rows per coalesced write; backends set their batch-write size (DynamoDB 25, Tablestore 200).
    coalesce_max_messages: ClassVar[int] = 200
    unique_keys: ClassVar[bool] = True

    def __init__(self, ttl_days: Optional[int] = None):
        self.ttl_days = ttl_days

    # -- backend primitives -------------------------------------------------
    @abstractmethod
    def _upsert(self, items: Sequence[dict[str, Any]], deadline: Optional[Deadline] = None) -> int:
        """Write (overwrite) one batch of at most `batch_items` items with unique keys, before
        `deadline`; return the backend write calls made. Raise ItemsRefused for items the
        backend will never take, SinkError for anything else."""

    @abstractmethod
    def _put_unless_receipt(self, item: dict[str, Any], deadline: Optional[Deadline] = None) -> bool:
        """Write `item` unless a row with its key and source=receipt exists. True if written.
        Raise ItemsRefused if the backend will never take it."""

    @abstractmethod
    def _get_item(self, key: str) -> Optional[dict[str, Any]]:
        """The stored item under the stored `key`, or None."""

    @abstractmethod
    def _scan_items(self) -> Iterator[dict[str, Any]]:
        """Every stored item (records, dead letters, other rows), as stored."""

    def _select(self, kind: str, selection: Selection) -> Iterator[dict[str, Any]]:
        """The stored items of `kind` the selection takes, as stored. This default scans the
        whole table; a backend that can narrow the read itself overrides it."""
        for item in self._scan_items():
            if item.get("kind") == kind and selection.matches(item):
                yield item

    def _chunks(self, items: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        """The items in `_upsert`-sized batches (backends with a byte limit too override this)."""
        size = self.batch_items or max(1, len(items))
        for start in range(0, len(items), size):
            yield items[start:start + size]

    # -- the algorithm ------------------------------------------------------
    def record_item(self, record: Record, now: float) -> dict[str, Any]:
        item = {
            "key": record.key,
            "kind": RECORD,
            "message_type": record.message_type,
            "source": record.source,
            "event_time": record.event_time,
            "event_date": record.event_date,
            "body": canonical_json(record.body),
            "message_id": record.mns.message_id,
            "enqueue_time": int(record.mns.enqueue_time),
            "dequeue_count": int(record.mns.dequeue_count),
        }
        return self._finish(item, now)

    def dead_letter_item(self, dead: DeadLetter, now: float) -> dict[str, Any]:
        item = {
            "key": dead.key,
            "kind": DEAD_LETTER,
            "message_type": dead.message_type,
            "source": SOURCE_RECEIPT,
            "event_time": dead.event_time,
            "event_date": dead.event_date,
            "error": dead.error,
            "raw_body": dead.raw_body,
            "message_id": dead.mns.message_id,
            "enqueue_time": int(dead.mns.enqueue_time),
            "dequeue_count": int(dead.mns.dequeue_count),
        }
        return self._finish(item, now)

    def _finish(self, item: dict[str, Any], now: float) -> dict[str, Any]:
        """The item as stored: its write time and TTL set, its key bounded to the backend's limit."""
        item["stored_at"] = int(now)
        if self.ttl_days:
            item["ttl"] = int(now) + self.ttl_days * 86400
        return bound_item(item, self.max_key_bytes)

    def stored_key(self, key: str) -> str:
        """The key a row for `key` is stored under."""
        return bounded_key(key, self.max_key_bytes)

    def item_size(self, item: dict[str, Any]) -> int:
        return sum(len(str(k).encode()) + len(str(v).encode()) for k, v in item.items())

    def oversize(self, item: dict[str, Any]) -> Optional[str]:
        """Why the backend cannot hold `item` as it is (checked before writing), or None."""
        if self.max_item_bytes and self.item_size(item) > self.max_item_bytes:
            return f"larger than the {self.name} item limit ({self.max_item_bytes} bytes)"
        return None

    def write(self, records: Sequence[Record], dead_letters: Sequence[DeadLetter],
              deadline: Optional[Deadline] = None, now: Optional[float] = None) -> WriteReport:
        now = time.time() if now is None else now
        report = WriteReport()
        receipts: list[dict[str, Any]] = []
        reconciled: list[dict[str, Any]] = []
        set_aside: list[tuple[Record, str]] = []
        refused_records = 0
        dead = [self.dead_letter_item(d, now) for d in _dedupe_last(dead_letters)]
        for item in dead:
            problem = self.oversize(item)
            if problem:
                raise SinkError(self.name, f"dead letter {item['key']} is {problem}")
        by_key: dict[str, Record] = {}
        for record in _dedupe_last(records):
            item = self.record_item(record, now)
            problem = self.oversize(item)
            if problem:  # too big for one row: keep it whole as a dead letter rather than truncate it
                set_aside.append((record, problem))
                continue
            by_key[item["key"]] = record
            (receipts if record.source == SOURCE_RECEIPT else reconciled).append(item)
        if receipts or dead:
            calls, refused = self._store(receipts + dead, deadline)
            report.write_calls += calls
            for item, reason in refused:
                if item["kind"] != RECORD:
                    raise SinkError(self.name, f"{self.name} refused the dead letter {item['key']}: {reason}")
                set_aside.append((by_key[item["key"]], f"refused by {self.name}: {reason}"))
                refused_records += 1
        for item in reconciled:
            try:
                self._put_unless_receipt(item, deadline)
            except ItemsRefused as exc:
                set_aside.append((by_key[item["key"]], f"refused by {self.name}: {exc.reason}"))
                refused_records += 1
            report.write_calls += 1
        if set_aside:
            report.write_calls += self._store_set_aside(set_aside, deadline, now)
        report.records = len(receipts) + len(reconciled) - refused_records
        report.dead_letters = len(dead) + len(set_aside)
        return report

    def _store_set_aside(self, set_aside: list[tuple[Record, str]], deadline: Optional[Deadline], now: float) -> int:
        """Store records the backend cannot hold as dead letters; any refusal now fails the write."""
        items = []
        for record, reason in set_aside:
            item = self.dead_letter_item(_set_aside(record, reason, compress=False), now)
            if self.oversize(item):
                item = self.dead_letter_item(_set_aside(record, reason, compress=True), now)
                problem = self.oversize(item)
                if problem:
                    raise SinkError(self.name, f"record {record.key} cannot be stored even compressed as a "
                                               f"dead letter: it is {problem}")
            items.append(item)
        calls, refused = self._store(items, deadline)
        if refused:
            item, reason = refused[0]
            raise SinkError(self.name, f"{self.name} refused the dead letter {item['key']} of a record it "
                                       f"could not hold: {reason}")
        return calls

    def _store(self, items: list[dict[str, Any]], deadline: Optional[Deadline]) -> tuple[int, list[tuple[dict, str]]]:
        """Upsert `items` batch by batch; return the calls made and the items refused, with why."""
        unique = list({item["key"]: item for item in items}.values())  # one write per row in a request
        calls, refused = 0, []
        for chunk in self._chunks(unique):
            more, rejected = self._store_chunk(chunk, deadline)
            calls += more
            refused += rejected
        return calls, refused

    def _store_chunk(self, items: list[dict[str, Any]], deadline: Optional[Deadline]) -> tuple[int, list]:
        try:
            return self._upsert(items, deadline), []
        except ItemsRefused as exc:
            if exc.refused:  # the backend named the items and stored the others
                return exc.calls, [(i, exc.refused[i["key"]]) for i in items if i["key"] in exc.refused]
            if len(items) == 1:
                return exc.calls, [(items[0], exc.reason)]
            # The request was refused as a whole: find the culprits by writing it in halves.
            half = len(items) // 2
            first, refused_first = self._store_chunk(items[:half], deadline)
            second, refused_second = self._store_chunk(items[half:], deadline)
            return exc.calls + first + second, refused_first + refused_second

    def get(self, key: str) -> Optional[dict[str, Any]]:
        """The stored item for `key` (its whole key under "key"), or None."""
        return restore_item(self._get_item(self.stored_key(key)))

    def iter_records(self, message_types: Optional[Iterable[str]] = None, date_from: DateBound = None,
                     date_to: DateBound = None) -> Iterator[Record]:
        for item in self._select(RECORD, Selection.of(message_types, date_from, date_to)):
            yield item_to_record(restore_item(item))

    def iter_dead_letters(self, message_types: Optional[Iterable[str]] = None, date_from: DateBound = None,
                          date_to: DateBound = None) -> Iterator[dict[str, Any]]:
        for item in self._select(DEAD_LETTER, Selection.of(message_types, date_from, date_to)):
            yield restore_item(item)

    # -- rows of other kinds: stored beside the records, never yielded as records -------------
    def put_rows(self, rows: Sequence[dict[str, Any]], deadline: Optional[Deadline] = None,
                 now: Optional[float] = None) -> int:
        """Write (overwrite) rows of a kind of their own, each with the record row's fields (`key`,
        `kind`, `message_type`, `source`, `event_time`, `event_date`, `body` as JSON text,
        `message_id`, `enqueue_time`, `dequeue_count`); return the backend write calls made."""
        now = time.time() if now is None else now
        for row in rows:
            if row.get("kind") in (RECORD, DEAD_LETTER, None):
                raise ValueError(f"put_rows takes rows of a kind of their own, not {row.get('kind')!r}: "
                                 "records and dead letters go through write()")
        if not rows:
            return 0
        calls, refused = self._store([self._finish(dict(row), now) for row in rows], deadline)
        if refused:
            item, reason = refused[0]
            raise SinkError(self.name, f"{self.name} refused the {item['kind']} row {item['key']}: {reason}")
        return calls

    def iter_rows(self, kind: str) -> Iterator[dict[str, Any]]:
        """Every stored row of `kind`, its whole key under "key" (reads the whole table)."""
        for item in self._select(kind, Selection()):
            yield restore_item(item)


def item_to_record(item: dict[str, Any]) -> Record:
    body = item["body"]
    return Record(
        message_type=item["message_type"],
        key=item["key"],
        body=json.loads(body) if isinstance(body, str) else body,
        event_time=item["event_time"],
        source=item.get("source", SOURCE_RECEIPT),
        mns=MnsMeta(
            message_id=item.get("message_id") or "",
            enqueue_time=int(item.get("enqueue_time") or 0),
            dequeue_count=int(item.get("dequeue_count") or 0),
        ),
    )


def _set_aside(record: Record, reason: str, compress: bool) -> DeadLetter:
    """The dead letter of a record the backend cannot hold: its whole body, and why."""
    body = canonical_json(record.body)
    if compress:
        # base64 of the plain body would be a third larger than the record that did not fit.
        raw = base64.b64encode(gzip.compress(body.encode("utf-8"), mtime=0)).decode("ascii")
        form = "raw_body is base64 of the gzipped JSON body"
    else:
        raw, form = body, "raw_body is the JSON body"
    return DeadLetter(
        message_type=record.message_type,
        raw_body=raw,
        error=f"record {record.key} is {reason}; stored whole here, {form}",
        event_time=record.event_time,
        mns=record.mns,
    )

