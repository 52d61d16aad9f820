"""What the benchmarks share: the emulator's keys, the receipts, the machine's speed, the commit."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

AK, SECRET, UID = "LTAI5tBenchAccessKey", "bench-secret-not-real-0123456789", "1234567890123456"
BATCH = 16
BASELINE_THREADS = 2  # the vendor's sample: maxThread = 2
SINKS_ALL = ("file", "sqlite", "s3", "oss", "dynamodb", "tablestore")
SDK_GROUPS = {
    "mns": ("mns",),
    "aliyunsdkcore": ("aliyunsdkcore", "aliyunsdkdybaseapi", "aliyunsdkdysmsapi"),
    "boto3/botocore": ("boto3", "botocore", "s3transfer"),
    "oss2": ("oss2",),
    "tablestore": ("tablestore",),
    "aws_lambda_powertools": ("aws_lambda_powertools",),
    "pydantic": ("pydantic", "pydantic_core"),
}
OURS = ("shared", "functions")


def message_types() -> tuple[str, ...]:
    from scripts.receipts import BUILDERS

    return tuple(BUILDERS)



def peak_rss_mb() -> float:
    from scripts.baseline_consumer import peak_rss_mb as peak

    return peak()



class ChildFailed(RuntimeError):
    pass


def process_cpu() -> float:
    """CPU seconds of this process (the emulator's threads, and the bench's idle polling)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def python_speed_ms() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 3): to compare this machine with others."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i % 7
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


def git_commit() -> dict:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:  # an exported tree (git archive) has no .git: say which commit it came from
        return {"commit": os.environ.get("BENCH_COMMIT", "unknown"), "code_dirty": False, "dirty_files": [],
                "source": "exported tree"}
    dirty = git("status", "--porcelain", "--", "shared", "functions")
    return {"commit": commit, "code_dirty": bool(dirty), "dirty_files": dirty.splitlines()[:20]}


def drain_env(emu: Any, types: Sequence[str], sink: str, sink_path: str, **extra: str) -> dict[str, str]:
    """A drain's (or consumer's) environment against the emulator `emu`: this process's, less
    every setting of ours it may hold, plus the emulator's endpoints and keys and `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ALICOM_", "SINK", "DRAIN_", "ALIBABA_CLOUD_", "MNS_", "TOKEN_", "AWS_"))}
    env.update({
        "PYTHONPATH": str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        "ALICOM_UID": UID,
        "ALICOM_MESSAGE_TYPES": ",".join(types),
        "ALICOM_MNS_ENDPOINT": emu.url,
        "ALICOM_TOKEN_ENDPOINT": emu.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": AK,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
        "SINK": sink,
        "SINK_PATH": sink_path,
    })
    env.update(extra)
    return env
