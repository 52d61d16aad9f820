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

# SINK value -> "module:Class"; each class implements `Sink.from_settings(settings, credentials)`.
BACKENDS = {
    "file": "shared.sinks.file:FileSink",
    "sqlite": "shared.sinks.sqlite:SqliteSink",
    "s3": "shared.sinks.s3:S3Sink",
    "oss": "shared.sinks.oss:OssSink",
    "dynamodb": "shared.sinks.dynamodb:DynamoDBSink",
    "tablestore": "shared.sinks.tablestore:TablestoreSink",
}


def sink_class(name: str) -> type[Sink]:
    module_name, _, class_name = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_sink(settings: "Settings", credentials: "Credentials | None" = None) -> Sink:
    """The configured sink, its SDK imported now and not before.

    `credentials` are the customer's Alibaba Cloud credentials as `load_credentials` found
    them (explicit keys, the function role's STS key, or a secret): the OSS and Tablestore
    sinks sign with them, and load them themselves when none are given. The AWS sinks use
    boto3's own chain (the function's role)."""
    return sink_class(settings.sink).from_settings(settings, credentials)


__all__ = ["ItemsRefused", "Sink", "SinkError", "WriteReport", "make_sink", "sink_class", "BACKENDS"]
