"""The drain processes: each one `python -m scripts.invoke_local drain --platform fc --timeout T
--timer` (a scheduled run) or `... --event <payload>` (a fan-out's worker), a separate process
per invocation, with the probe loaded; and what one of them did."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from scripts.chaos.config import HOOKS, REPO
from scripts.chaos.probe import classify, read_phase

# The POP APIs' throttling codes, written out here rather than taken from shared/ (a check must
# not share the code's own idea of what throttling is).
THROTTLING_CODES = ("Throttling", "Throttling.User", "Throttling.Api", "ServiceUnavailable")

@dataclass
class DrainProcess:
    n: int
    popen: subprocess.Popen
    started: float
    timeout: float
    margin: float                          # its DRAIN_SAFETY_MARGIN_SECONDS
    phase_file: Path
    out: Path
    err: Path
    kill_at: Optional[float] = None        # chaos SIGKILL at this monotonic time
    crash_at: Optional[str] = None         # exact crash point "<point>:<n>"
    overlapped: bool = False
    worker: bool = False                   # started by a fan-out's invocation, not by the schedule
    ended: Optional[float] = None
    result_at: Optional[float] = None      # when the handler's result line arrived (the invocation's end)
    killed_by: Optional[str] = None        # "chaos", "crashpoint", "platform" (harness at timeout + grace), "cleanup",
                                           # "lingered" (returned, but still exiting at timeout + grace)
    phases: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.ended is None

    def kill(self, reason: str) -> None:
        if self.alive():
            try:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.killed_by = reason
            except ProcessLookupError:
                pass


def spawn(n: int, timeout: float, env: dict[str, str], workdir: Path, event: Optional[str] = None,
          **extra: Any) -> DrainProcess:
    """Start drain process `n` with `env` (PYTHONPATH set here: the hooks first, then the repo): a
    scheduled run, or with `event` (an invocation's payload) a manual one such as a worker."""
    env = dict(env, PYTHONPATH=f"{HOOKS}{os.pathsep}{REPO}",
               PYTHONUNBUFFERED="1")  # each line leaves when written: the result line marks the handler's return
    out, err = workdir / f"drain-{n}.out", workdir / f"drain-{n}.err"
    trigger = ["--timer"] if event is None else ["--event", event]
    with open(err, "wb") as fe:
        started = time.monotonic()
        popen = subprocess.Popen(
            [sys.executable, "-m", "scripts.invoke_local", "drain", "--platform", "fc", "--timeout", str(timeout)] + trigger,
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=fe, stdin=subprocess.DEVNULL)
    margin = float(env.get("DRAIN_SAFETY_MARGIN_SECONDS", "2"))
    proc = DrainProcess(n, popen, started, timeout, margin, workdir / f"phase-{n}.json", out, err,
                        worker=event is not None, **extra)
    threading.Thread(target=_wait, args=(proc,), daemon=True).start()
    return proc


def _wait(proc: DrainProcess) -> None:
    """Copy stdout to its file, noting when the result line (the handler's return) arrives."""
    with open(proc.out, "wb") as out:
        for line in proc.popen.stdout:
            out.write(line)
            if line.startswith(b'{"ok": ') and proc.result_at is None:
                proc.result_at = time.monotonic()
    proc.popen.wait()
    proc.ended = time.monotonic()


def read_text(path: Path) -> Optional[str]:
    try:
        return path.read_text("utf-8", "replace")
    except OSError:
        return None


def _summary(out: str) -> Optional[dict]:
    """The handler's result line (a thread left stuck in a call may still log after it)."""
    line = next((line for line in reversed(out.splitlines()) if line.startswith('{"ok": ')), None)
    try:
        summary = json.loads(line) if line else None
    except ValueError:
        return None
    return summary if isinstance(summary, dict) and "totals" in summary else None


def throttled_out(summary: Optional[dict]) -> list[dict]:
    """Message types whose consumers stopped on a throttling answer of the token API, with how
    many such answers they met and the run's time left at its end. Throttling is retried while
    the budget lasts: a type stopped at its first one with time left took it as final (a figure,
    not a check: at the harness's short timeouts "time left" cannot tell the two apart)."""
    out = []
    for mtype, t in ((summary or {}).get("types") or {}).items():
        code = str(t.get("error") or "").partition(" failed: ")[2].partition(":")[0]
        if t.get("stop_reason") != "token_error" or code not in THROTTLING_CODES:
            continue
        met = sum(n for c, n in (t.get("errors") or {}).items() if c in THROTTLING_CODES)
        left = float(summary.get("remaining_seconds_at_exit") or 0)
        out.append({"type": mtype, "code": code, "met": met, "left": left})
    return out


def ending(killed_by: Optional[str], summary: Optional[dict]) -> str:
    """How an invocation ended: "ok:<stop reason>", "failed:<stop reason>", "killed:<by>" or
    "no_result"."""
    if killed_by and killed_by != "lingered":
        return f"killed:{killed_by}"
    if summary is None:
        return "no_result"
    return f"{'ok' if summary.get('ok') else 'failed'}:{summary.get('stop_reason') or '-'}"


def process_result(p: DrainProcess) -> dict[str, Any]:
    """What drain process `p` did, from its output, its phase file and the harness's clock."""
    out, err = read_text(p.out) or "", read_text(p.err) or ""
    summary = _summary(out)
    phase_text = read_text(p.phase_file)
    if p.killed_by is None and p.popen.returncode == -signal.SIGKILL:
        p.killed_by = "crashpoint"  # it killed itself at its crash point
    phases = p.phases
    if p.killed_by == "crashpoint":
        phases = classify(phase_text)
    ended = p.ended or time.monotonic()
    wall = ended - p.started
    # The invocation runs from the handler's start (when it builds its deadline from the
    # timeout; the probe notes that moment) to its return (the result line): on FC and
    # Lambda the process lives on, so interpreter shutdown is no part of it. Start-up and
    # imports before the handler ran are reported apart, as cold start.
    doc = read_phase(phase_text) or {}
    invoked = doc.get("invoked_at") or p.started
    invocation = (p.result_at or ended) - invoked
    overrun = None if p.killed_by in ("chaos", "crashpoint", "cleanup") else round(invocation - p.timeout, 3)
    traceback = None
    if "Traceback (most recent call last)" in err:
        tail = [line for line in err.strip().splitlines() if line and not line.startswith(" ")]
        traceback = tail[-1][:200] if tail else "Traceback"
    errors: Counter = Counter()
    if summary:
        for t in summary.get("types", {}).values():
            errors.update(t.get("errors", {}))
    # What the platform sees: a failed run raises RunFailed (the probe notes it) and invoke_local
    # then exits 1; a run that succeeded returns and exits 0.
    returned = p.killed_by in (None, "lingered")  # the handler's result stands; a lingerer has no exit code
    failed = None if not returned or summary is None else not summary.get("ok")
    expected_exit = None if failed is None or p.killed_by else int(failed)
    return {
        "n": p.n,
        "timeout": p.timeout,
        "wall": round(wall, 3),
        "cold_start": round(invoked - p.started, 3),
        "invocation": round(invocation, 3),
        "overrun": overrun,
        "process_overrun": round(wall - p.timeout, 3),  # spawn to exit, interpreter shutdown included
        "exit": p.popen.returncode,
        "exit_mismatch": expected_exit is not None and p.popen.returncode != expected_exit,
        "raise_mismatch": failed is not None and bool(doc.get("raised_run_failed")) != failed,
        "killed_by": p.killed_by,
        "lingered": p.killed_by == "lingered",
        "crash_at": p.crash_at,
        "overlapped": p.overlapped,
        "worker": p.worker,
        "fan_out": (summary or {}).get("fan_out"),
        "phases": phases if p.killed_by in ("chaos", "crashpoint") else [],
        "ending": ending(p.killed_by, summary),
        "stop_reason": summary.get("stop_reason") if summary else None,
        "error": summary.get("error") if summary else None,
        "totals": {k: v for k, v in (summary or {}).get("totals", {}).items() if k != "api_calls"},
        "traceback": traceback,
        "throttled_out": throttled_out(summary),
        "errors": errors,
        "_output": out + err,
    }
