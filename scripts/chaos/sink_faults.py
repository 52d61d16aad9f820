"""Sink faults: a sink that refuses writes, fails part-way through one, holds its lock, or
accepts requests and never answers them.

Local sinks are broken from outside (a sqlite trigger or lock, a file where a directory
should be). Cloud sinks (moto behind the fault proxy, scripts/stand_ins/moto_server.py) are
broken at the proxy: error answers for some requests, or the hang switch.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from scripts.chaos.config import TYPES

if TYPE_CHECKING:  # moto loads only for runs with a cloud sink
    from scripts.stand_ins.moto_server import FaultProxy


class SqliteFaults:
    """Refuse (trigger), fail part-way (trigger on dead letters) or hold the write lock."""

    TRIGGERS = {
        "sink_refuse": "CREATE TRIGGER IF NOT EXISTS chaos_refuse BEFORE INSERT ON records "
                       "BEGIN SELECT RAISE(ABORT, 'chaos: the sink refuses writes'); END",
        "sink_part_way": "CREATE TRIGGER IF NOT EXISTS chaos_part_way BEFORE INSERT ON dead_letters "
                         "BEGIN SELECT RAISE(ABORT, 'chaos: the sink fails part-way'); END",
    }
    DROPS = {"sink_refuse": "DROP TRIGGER IF EXISTS chaos_refuse", "sink_part_way": "DROP TRIGGER IF EXISTS chaos_part_way"}

    def __init__(self, path: Path):
        from shared.sinks.sqlite import SqliteSink

        SqliteSink(str(path)).close()  # the schema exists before any drain runs, so triggers can be set
        self.path = path
        # Short busy timeouts: the harness must not stall its own clock waiting for a drain's write.
        self.ddl = sqlite3.connect(path, timeout=0.05, isolation_level=None)
        self.locker = sqlite3.connect(path, timeout=0.05, isolation_level=None)
        self.holds = 0  # overlapping lock episodes share the one held lock

    def start(self, kind: str) -> bool:
        try:
            if kind == "sink_lock":
                if not self.holds:
                    self.locker.execute("BEGIN EXCLUSIVE")
                self.holds += 1
            else:
                self.ddl.execute(self.TRIGGERS[kind])
            return True
        except sqlite3.OperationalError:  # a drain holds the lock this instant: try again next tick
            return False

    def stop(self, kind: str) -> bool:
        try:
            if kind == "sink_lock":
                if self.holds == 1:
                    self.locker.execute("ROLLBACK")
                self.holds = max(0, self.holds - 1)
            else:
                self.ddl.execute(self.DROPS[kind])
            return True
        except sqlite3.OperationalError:
            return False

    def close(self) -> None:
        if self.holds:
            self.holds = 1
        for kind in ("sink_lock", "sink_refuse", "sink_part_way"):
            for _ in range(200):
                if self.stop(kind):
                    break
                time.sleep(0.05)
        self.ddl.close()
        self.locker.close()


class FileFaults:
    """Replace the sink's partition directories (refuse) or its dead_letters/ directory (part-way)
    by files. SINK_PATH itself stays a directory: a file there is a settings error at start-up."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def targets(self, kind: str) -> list[Path]:
        if kind == "sink_refuse":
            return [self.root / f"type={mtype}" for mtype in TYPES] + [self.root / "dead_letters"]
        return [self.root / "dead_letters"]

    def start(self, kind: str) -> bool:
        for path in self.targets(kind):
            aside = path.with_name(path.name + ".chaos-aside")
            try:
                if path.is_dir():
                    os.rename(path, aside)
                path.write_text("chaos: not a directory\n")
            except OSError:  # a writer re-created it this instant
                self._restore(path, aside)
                self.stop(kind)
                return False
        return True

    def stop(self, kind: str) -> bool:
        done = True
        for path in self.targets(kind):
            try:
                self._restore(path, path.with_name(path.name + ".chaos-aside"))
            except OSError:
                done = False
        return done

    def _restore(self, path: Path, aside: Path) -> None:
        if path.is_file():
            path.unlink()
        if not aside.exists():
            return
        if not path.exists():
            os.rename(aside, path)
            return
        # A writer re-created the directory meanwhile: move the set-aside objects back in.
        # Same object name = same keys, so keeping the newer copy loses nothing.
        for src in sorted(p for p in aside.rglob("*") if p.is_file()):
            dst = path / src.relative_to(aside)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                os.replace(src, dst)
        shutil.rmtree(aside)

    def close(self) -> None:
        for kind in ("sink_refuse", "sink_part_way"):
            self.stop(kind)



class CloudFaults:
    """Faults at the fault proxy in front of a cloud sink (moto's S3 or DynamoDB).

      sink_refuse    every write answered with an error: a retryable 5xx, or a refusal
                     (AccessDenied) that no retry fixes, chosen per episode
      sink_part_way  the writes of dead letters answered 5xx, after the batch's records were
                     stored (S3: the dead_letters/ objects; DynamoDB: requests holding a DLQ# row)
      sink_hang      the endpoint accepts every request and answers none until the episode ends
                     (held requests are then dropped unanswered)

    Requests carry the drain process's number in their User-Agent (AWS_SDK_UA_APP_ID
    "chaos-drain-<n>"), so the harness knows which processes met a hang and when.
    """

    APP_PREFIX = "app/chaos-drain-"

    def __init__(self, proxy: "FaultProxy", sink: str):
        self.proxy, self.sink = proxy, sink
        self.on: dict[str, Optional[str]] = {"sink_refuse": None, "sink_part_way": None}  # kind -> answer while on
        self.refused: Counter = Counter()            # "<kind>:<answer>" -> requests answered so
        self.held: dict[int, list[float]] = {}       # drain process number -> when its requests were held
        for kind in self.on:
            for answer in self.ANSWERS[sink]:
                status, body, headers = self.ANSWERS[sink][answer]
                proxy.refuse_while(lambda m, p, h, b, k=kind, a=answer: self._refuses(k, a, m, p, h, b),
                                   status, body, headers)

    ANSWERS = {
        "s3": {
            "SlowDown": (503, b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                              b"<Message>Please reduce your request rate.</Message></Error>",
                         {"Content-Type": "application/xml"}),
            "AccessDenied": (403, b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                                  b"<Message>Access Denied</Message></Error>", {"Content-Type": "application/xml"}),
        },
        "dynamodb": {
            "InternalServerError": (500, json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
                                                     "message": "Internal server error"}).encode(),
                                    {"Content-Type": "application/x-amz-json-1.0"}),
            "AccessDeniedException": (400, json.dumps({"__type": "com.amazon.coral.service#AccessDeniedException",
                                                       "message": "not authorized to perform the write"}).encode(),
                                      {"Content-Type": "application/x-amz-json-1.0"}),
        },
    }

    def _refuses(self, kind: str, answer: str, method: str, path: str, headers: dict, body: bytes) -> bool:
        if self.on[kind] != answer or not self._is_write(method, headers):
            return False
        if kind == "sink_part_way" and not self._writes_dead_letters(path, headers, body):
            return False
        self.refused[f"{kind}:{answer}"] += 1
        return True

    def _is_write(self, method: str, headers: dict) -> bool:
        if self.sink == "s3":
            return method == "PUT"
        return headers.get("x-amz-target", "").endswith((".BatchWriteItem", ".PutItem"))

    def _writes_dead_letters(self, path: str, headers: dict, body: bytes) -> bool:
        if self.sink == "s3":
            return "/dead_letters/" in path
        return any(k.startswith("DLQ#") for k in self.proxy.written_keys(headers, body))

    def answers(self, kind: str) -> tuple[str, ...]:
        """The answers `kind` can give on this sink (the first is retryable)."""
        return tuple(self.ANSWERS[self.sink]) if kind == "sink_refuse" else tuple(self.ANSWERS[self.sink])[:1]

    def start(self, kind: str, answer: str = "") -> bool:
        if kind == "sink_hang":
            self.proxy.hang.on(self._hold)
        else:
            self.on[kind] = answer or self.answers(kind)[0]
        return True

    def stop(self, kind: str) -> bool:
        if kind == "sink_hang":
            self.proxy.hang.off()
        else:
            self.on[kind] = None
        return True

    def _hold(self, method: str, path: str, headers: dict) -> bool:
        agent = headers.get("user-agent", "")
        at = agent.find(self.APP_PREFIX)
        if at >= 0:
            n = agent[at + len(self.APP_PREFIX):].split(" ", 1)[0]
            if n.isdigit():
                self.held.setdefault(int(n), []).append(time.monotonic())
        return True

    def close(self) -> None:
        for kind in ("sink_refuse", "sink_part_way", "sink_hang"):
            self.stop(kind)
