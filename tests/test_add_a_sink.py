"""docs/ARCHITECTURE.md's "Add a sink" recipe, followed in a test.

The toy sink below is what the recipe's first step writes (in a product change, its own module
under shared/sinks/); the second step is one entry in shared/sinks' SINK_TABLE. With nothing
else touched, the real drain handler runs into it: settings accept SINK=toy and check what it
needs, the drain stores, dead-letters and deletes through it, and the public read API reads it.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Iterator, Optional

import pytest

from functions.drain import handler
from scripts.receipts import BAD_BODIES, make_receipts
from shared.clock import Deadline
from shared.settings import SettingsError, load_settings
from shared.sinks import SINK_TABLE
from shared.sinks.base import ObjectSink
from tests.contexts import fc_context

# The business keys of make_receipts("SmsReport", 5, seed=3): biz_id, then phone_number.
KEYS = [
    "SmsReport#997075793162^0#13199480772", "SmsReport#753865574553^1#14789141695",
    "SmsReport#717228110596^2#13954929425", "SmsReport#428450275384^3#17619016841",
    "SmsReport#498936225905^4#13266469573",
]


class ToySink(ObjectSink):
    """Objects in memory, one store per SINK_PATH: the four primitives and `from_settings`."""

    name = "toy"
    compress = False
    hour_partitions = False
    stores: dict[str, dict[str, bytes]] = {}

    def __init__(self, where: str):
        super().__init__(prefix="")
        self.objects = self.stores.setdefault(where, {})

    @classmethod
    def from_settings(cls, settings, credentials=None) -> "ToySink":
        return cls(settings.required("sink_path"))

    def _put_object(self, path: str, data: bytes, deadline: Optional[Deadline] = None) -> None:
        self.objects[path] = data

    def _get_object(self, path: str) -> bytes:
        return self.objects[path]

    def _list_objects(self, prefix: str) -> Iterator[str]:
        yield from sorted(p for p in self.objects if p.startswith(prefix))

    def _list_prefixes(self, prefix: str) -> Iterator[str]:
        below = {prefix + p[len(prefix):].split("/", 1)[0] + "/" for p in self.objects
                 if p.startswith(prefix) and "/" in p[len(prefix):]}
        yield from sorted(below)


@pytest.fixture
def toy_in_table(monkeypatch):
    """The recipe's second step: one entry in the table of sinks."""
    monkeypatch.setitem(SINK_TABLE, "toy", (f"{__name__}:ToySink", ("SINK_PATH",)))
    ToySink.stores.clear()


def timer_event() -> bytes:
    return json.dumps({"triggerTime": "2026-11-25T05:49:00Z", "triggerName": "drain", "payload": ""}).encode()


def test_the_drain_runs_into_a_sink_added_by_the_recipe(emulator, drain_env, toy_in_table):
    drain_env(SINK="toy", SINK_PATH="toy-store", ALICOM_MESSAGE_TYPES="SmsReport")
    queue = emulator.queue_name("SmsReport")
    for body in make_receipts("SmsReport", 5, seed=3):
        emulator.enqueue_receipt(queue, body)
    for raw in BAD_BODIES:
        emulator.enqueue(queue, raw)

    result = handler(timer_event(), fc_context(timeout=60))

    assert result["ok"] and result["sink"] == "toy" and result["stop_reason"] == "empty"
    assert result["totals"]["stored"] == 5 and result["totals"]["dead_lettered"] == 5
    state = emulator.queue_state(queue)
    assert state["visible"] == 0 and state["in_flight"] == 0 and state["deleted"] == 10
    sink = ToySink("toy-store")
    assert sink.objects, "the drain wrote nothing into the toy sink"
    per_key = Counter(r.key for r in sink.iter_records())
    assert sorted(per_key) == sorted(KEYS) and set(per_key.values()) == {1}
    assert sorted(d["raw_body"] for d in sink.iter_dead_letters()) == sorted(BAD_BODIES)


def test_settings_check_what_the_table_says_the_sink_needs(toy_in_table):
    base = {"ALICOM_UID": "123", "SINK": "toy"}
    with pytest.raises(SettingsError, match="SINK_PATH: SINK=toy needs SINK_PATH"):
        load_settings(base)
    assert load_settings({**base, "SINK_PATH": "somewhere"}).sink == "toy"


def test_a_sink_missing_from_the_table_is_refused_naming_sink():
    with pytest.raises(SettingsError, match="SINK: unknown sink 'toy'"):
        load_settings({"ALICOM_UID": "123", "SINK": "toy", "SINK_PATH": "somewhere"})
