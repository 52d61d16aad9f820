"""Sink backends, selected by the SINK setting.

A backend's module (and so its cloud SDK) is imported only when that backend is chosen:
a drain writing to S3 never imports oss2 or tablestore, and vice versa.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from shared.sinks.base import ItemsRefused, Sink, SinkError, WriteReport

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.tokens import Credentials

# The one table of sinks. SINK value -> (its class as "module:Class", the settings it needs
# besides SINK). Settings validation (SINK's choices, what each sink needs) and the tools'
# --sink choices derive from it; the class is imported only when its sink is chosen. Adding a
# sink = its module + one line here (docs/ARCHITECTURE.md, "Add a sink").
SINK_TABLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "file": ("shared.sinks.file:FileSink", ("SINK_PATH",)),
    "sqlite": ("shared.sinks.sqlite:SqliteSink", ("SINK_PATH",)),
    "s3": ("shared.sinks.s3:S3Sink", ("SINK_BUCKET",)),
    "oss": ("shared.sinks.oss:OssSink", ("SINK_BUCKET", "SINK_ENDPOINT")),
    "dynamodb": ("shared.sinks.dynamodb:DynamoDBSink", ("SINK_TABLE",)),
    "tablestore": ("shared.sinks.tablestore:TablestoreSink", ("SINK_TABLE", "SINK_ENDPOINT", "TABLESTORE_INSTANCE")),
}


def sink_names() -> tuple[str, ...]:
    """Every SINK value, in the table's order."""
    return tuple(SINK_TABLE)


def sink_needs(name: str) -> tuple[str, ...]:
    """The settings (environment variables) the sink `name` needs besides SINK."""
    return SINK_TABLE[name][1]


def sink_class(name: str) -> type[Sink]:
    module_name, _, class_name = SINK_TABLE[name][0].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_sink(settings: "Settings", credentials: "Credentials | None" = None) -> Sink:
    """The configured sink, its SDK imported now and not before.

    `credentials` are the customer's Alibaba Cloud credentials as `load_credentials` found
    them (explicit keys, the function role's STS key, or a secret): the OSS and Tablestore
    sinks sign with them, and load them themselves when none are given. The AWS sinks use
    boto3's own chain (the function's role)."""
    return sink_class(settings.sink).from_settings(settings, credentials)


__all__ = ["ItemsRefused", "Sink", "SinkError", "WriteReport", "make_sink", "sink_class", "sink_names", "sink_needs",
           "SINK_TABLE"]
