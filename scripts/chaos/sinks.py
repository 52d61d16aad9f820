"""A run's sink: what the drain processes are told about it, how it is broken, and how the
checks read it back (through the sinks' own public read API, as the product reads it)."""
from __future__ import annotations

import json
import os
import random
import string
from pathlib import Path
from typing import Any, Optional

from scripts.chaos.config import CLOUD_SINKS
from scripts.chaos.sink_faults import CloudFaults, FileFaults, SqliteFaults
from shared.sinks.base import Sink, TableSink

REGION = "us-east-1"
BUCKET, TABLE, PREFIX = "alicom-chaos-receipts", "alicom_chaos_receipts", "receipts/"


def secret(rng: random.Random, prefix: str, n: int) -> str:
    return prefix + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


class RunSink:
    """One run's sink. Local sinks live in the run's directory; cloud sinks get a bucket or table
    on the session's moto server, emptied first, reached by the drains through a fault proxy
    of the run's own and by the checks directly."""

    def __init__(self, kind: str, workdir: Path, rng: random.Random, moto: Any = None):
        self.kind = kind
        self.path = workdir / ("receipts.db" if kind == "sqlite" else "receipts")
        self.moto, self.proxy = moto, None
        self.aws_key = secret(rng, "AKIA", 16) if kind in CLOUD_SINKS else ""
        self.aws_secret = secret(rng, "", 40) if kind in CLOUD_SINKS else ""
        if kind in CLOUD_SINKS:
            from scripts.create_tables import create_dynamodb_table
            from scripts.stand_ins.moto_server import FaultProxy

            moto.reset()
            if kind == "dynamodb":
                create_dynamodb_table(moto.client("dynamodb"), TABLE)
            else:
                moto.client("s3").create_bucket(Bucket=BUCKET)
            self.proxy = FaultProxy(moto.endpoint).start()
            self.faults: Any = CloudFaults(self.proxy, kind)
        elif kind == "sqlite":
            self.faults = SqliteFaults(self.path)
        else:
            self.faults = FileFaults(self.path)

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.aws_key, self.aws_secret) if s]

    def env(self, n: int) -> dict[str, str]:
        """The drain process `n`'s sink settings (and, for AWS, its keys and User-Agent mark)."""
        if self.kind not in CLOUD_SINKS:
            return {"SINK": self.kind, "SINK_PATH": str(self.path)}
        env = {
            "SINK": self.kind,
            "SINK_ENDPOINT": self.proxy.endpoint,
            "SINK_REGION": REGION,
            "AWS_ACCESS_KEY_ID": self.aws_key,
            "AWS_SECRET_ACCESS_KEY": self.aws_secret,
            "AWS_SDK_UA_APP_ID": f"chaos-drain-{n}",  # which process a held request came from
            "AWS_CONFIG_FILE": os.devnull,  # no profile of this machine's user changes the client
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        if self.kind == "dynamodb":
            env["SINK_TABLE"] = TABLE
        else:
            env.update(SINK_BUCKET=BUCKET, SINK_PREFIX=PREFIX)
        return env

    def reader(self) -> Sink:
        """The sink as the product opens it, for reading back (cloud: moto directly, no faults)."""
        if self.kind == "sqlite":
            from shared.sinks.sqlite import SqliteSink

            return SqliteSink(str(self.path))
        if self.kind == "file":
            from shared.sinks.file import FileSink

            return FileSink(self.path)
        keys = {"aws_access_key_id": self.aws_key, "aws_secret_access_key": self.aws_secret}
        if self.kind == "dynamodb":
            from shared.sinks.dynamodb import DynamoDBSink

            return DynamoDBSink(TABLE, region=REGION, endpoint_url=self.moto.endpoint, **keys)
        from shared.sinks.s3 import S3Sink

        return S3Sink(BUCKET, PREFIX, region=REGION, endpoint_url=self.moto.endpoint, **keys)

    def read(self, long_keys: dict[str, str]) -> dict[str, Any]:
        """Every stored record (key, body) and dead-letter key; the stored bytes (for the secret
        check); and, for table sinks, how each long key was stored and read back by its full key."""
        with self.reader() as sink:
            records = [(r.key, r.body) for r in sink.iter_records()]
            dead_letters = list(sink.iter_dead_letters())
            rows = self._long_key_rows(sink, long_keys) if isinstance(sink, TableSink) else {}
        if self.kind in CLOUD_SINKS:
            stored = json.dumps([records, dead_letters], ensure_ascii=False, default=str).encode()
        else:
            stored = _file_bytes(self.path)
        return {"records": records, "dead": [d["key"] for d in dead_letters], "stored": stored, "long_key_rows": rows}

    @staticmethod
    def _long_key_rows(sink: TableSink, long_keys: dict[str, str]) -> dict[str, dict]:
        """Per long key: stored under a bounded key or its own, and whether `get(full key)` finds
        the row with the full key back under "key"."""
        out = {}
        for key, label in long_keys.items():
            stored_key = sink.stored_key(key)
            item = sink.get(key)
            limit = sink.max_key_bytes
            out[key] = {"label": label, "bounded": stored_key != key, "stored_key_bytes": len(stored_key.encode()),
                        "over_limit": limit is not None and len(key.encode()) > limit,
                        "read_back": item is not None and item.get("key") == key}
        return out

    def close(self) -> None:
        """Stop the proxy (which lets held requests go); the plan's calm phase closed the faults."""
        if self.proxy is not None:
            self.proxy.stop()


def _file_bytes(path: Path) -> bytes:
    if path.is_file():
        files = [path] + [Path(str(path) + s) for s in ("-wal", "-shm") if Path(str(path) + s).exists()]
    else:
        files = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return b"".join(f.read_bytes() for f in files)


def start_moto(kinds: Optional[set[str]] = None) -> Any:
    """The moto server for a session's cloud-sink runs (None when no run needs it)."""
    if not kinds or not kinds & set(CLOUD_SINKS):
        return None
    from scripts.stand_ins.moto_server import MotoServer

    return MotoServer().start()
