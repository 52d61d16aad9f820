"""Planted bugs: make each known bug on purpose, run the tests meant to catch it, report killed/survived.

Each bug is an exact edit of one product file, made in a scratch copy of the project
(build/planted/), never in the work tree. A bug is "killed" when its tests fail with the
bug in place and pass without it (the clean run comes first, every round). Exit status 0
only if every bug was killed in every round.

    python -m scripts.mutation.planted                 # one round
    python -m scripts.mutation.planted --rounds 3 --out scripts/results/planted_bugs.txt
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOUNDS = "tests/test_drain_bounds.py::"


@dataclass(frozen=True)
class Bug:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


BUGS = (
    Bug("partly failed BatchDeleteMessage counted as full success", "shared/mns_queue.py",
        "                    outcome.failed.update(failed)\n"
        "                    outcome.deleted += len([h for h in chunk if h not in failed])\n",
        "                    outcome.deleted += len(chunk)\n",
        (BOUNDS + "test_a_partly_failed_batch_delete_is_counted_and_its_messages_come_back_once",)),
    Bug("every receive error made fatal", "shared/drain.py",
        "                if exc.fatal or exc.auth or not self._back_off(True, exc.throttled, d._budget(run)):\n",
        "                if True:\n",
        (BOUNDS + "test_failed_receives_are_retried_and_the_run_succeeds",
         BOUNDS + "test_a_receive_answer_with_a_broken_field_is_retried_not_stored")),
    Bug("no fresh-token retry after a delete is refused", "shared/drain.py",
        "                auth = isinstance(exc, QueueError) and exc.auth and attempt == 0\n",
        "                auth = False\n",
        (BOUNDS + "test_a_delete_refused_for_its_token_is_retried_once_with_a_fresh_one",)),
    Bug("token refresh buffer one second short", "shared/tokens.py",
        "token.seconds_left(self.clock.now()) >= self.refresh_buffer:",
        "token.seconds_left(self.clock.now()) >= self.refresh_buffer - 1:",
        (BOUNDS + "test_the_token_is_refreshed_exactly_at_the_buffer_boundary",)),
    Bug("token refresh buffer one second long", "shared/tokens.py",
        "token.seconds_left(self.clock.now()) >= self.refresh_buffer:",
        "token.seconds_left(self.clock.now()) >= self.refresh_buffer + 1:",
        (BOUNDS + "test_the_token_is_refreshed_exactly_at_the_buffer_boundary",)),
    Bug("'%' escape of business key parts dropped", "shared/decode.py",
        'return text.replace("%", "%25").replace("#", "%23")',
        'return text.replace("#", "%23")',
        (BOUNDS + "test_business_key_parts_escape_percent_and_hash",)),
)

PROJECT = ("functions", "shared", "scripts", "tests", "events", "pyproject.toml", "requirements.txt",
           "requirements-dev.txt", "s.yaml", "template.yml")


def scratch_copy(target: Path) -> None:
    """The project's files as they are in the work tree (tracked and new, not ignored)."""
    if target.exists():
        shutil.rmtree(target)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *PROJECT],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run_tests(work: Path, tests: tuple[str, ...]) -> int:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                          check=False, cwd=work, capture_output=True).returncode


def check(bug: Bug, work: Path) -> str:
    path = work / bug.path
    original = path.read_text("utf-8")
    if original.count(bug.old) != 1:
        return f"NOT APPLIED (the text to change is not in {bug.path} exactly once: update the bug)"
    clean = run_tests(work, bug.tests)
    if clean != 0:
        return f"ERROR (its tests fail without the bug: exit {clean})"
    path.write_text(original.replace(bug.old, bug.new), "utf-8")
    try:
        planted = run_tests(work, bug.tests)
    finally:
        path.write_text(original, "utf-8")
    return {0: "SURVIVED", 1: "killed"}.get(planted, f"ERROR (pytest exit {planted} with the bug)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    work = ROOT / "build" / "planted"
    scratch_copy(work)
    lines, failures = [], 0
    for round_no in range(1, args.rounds + 1):
        for bug in BUGS:
            started = time.monotonic()
            verdict = check(bug, work)
            failures += verdict != "killed"
            line = (f"round {round_no}  {verdict:<8}  {bug.name} ({bug.path}; {len(bug.tests)} test(s), "
                    f"{time.monotonic() - started:.0f} s)")
            print(line, flush=True)
            lines.append(line)
    total = args.rounds * len(BUGS)
    lines.append(f"{total - failures} of {total} planted bugs killed ({args.rounds} round(s) of {len(BUGS)})")
    print(lines[-1])
    if args.out:
        args.out.write_text("python -m scripts.mutation.planted " + " ".join(argv or sys.argv[1:]) + "\n"
                            + "\n".join(lines) + "\n", "utf-8")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
