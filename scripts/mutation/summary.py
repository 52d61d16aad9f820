"""Summarise a mutmut run (run inside its scratch copy) into scripts/results/mutation.json.

Counts per module and status; the score of the mutants checked, killed / (killed + survived +
timeout) (a timeout is not counted as a kill: on a loaded machine it may only be slowness);
every surviving mutant with its diff, and every mutant no selected test reaches ("no tests"),
each with why it is acceptable when scripts/mutation/explained.json says. One without an
explanation is listed under "unexplained"; an explanation whose mutant is neither is listed
under "explained_but_not_surviving". Mutants whose test process died of a signal ("segfault")
are counted apart, in no score.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.__main__ import get_diff_for_mutant
from mutmut.configuration import config
from mutmut.mutation.data import SourceFileMutationData
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files

KILLED = {"killed", "caught by type check"}


def score(counts: Counter) -> float | None:
    """killed / (killed + survived + timeout), or None when nothing was checked."""
    killed = sum(counts[s] for s in KILLED)
    decided = killed + counts["survived"] + counts["timeout"]
    return round(killed / decided, 4) if decided else None


def collect() -> dict[str, dict[str, str]]:
    """module path -> mutant name -> status."""
    out: dict[str, dict[str, str]] = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        out[str(path)] = {name: status_by_exit_code[code] for name, code in sorted(data.exit_code_by_key.items())}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--explained", type=Path, required=True, help="mutant name -> why its survival is acceptable")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    config()  # reads setup.cfg in the scratch copy
    explained = json.loads(args.explained.read_text("utf-8")) if args.explained.exists() else {}
    statuses = collect()
    modules, survivors, untested = {}, [], []
    total: Counter = Counter()
    for path, by_name in statuses.items():
        counts = Counter(by_name.values())
        total.update(counts)
        modules[path] = dict(sorted(counts.items()))
        for name, status in by_name.items():
            if status == "survived":
                survivors.append({"mutant": name, "module": path, "why": explained.get(name),
                                  "diff": get_diff_for_mutant(name, path=path)})
            elif status == "no tests":  # no selected test reaches its function
                untested.append({"mutant": name, "module": path, "why": explained.get(name)})
    killed = sum(total[s] for s in KILLED)
    decided = killed + total["survived"] + total["timeout"]
    surviving = {s["mutant"] for s in survivors + untested}
    summary = {
        "tool": "mutmut 3.8.1",
        "command": "scripts/mutation/run",
        "modules": modules,
        "totals": dict(sorted(total.items())),
        "score": score(total),
        "score_formula": "killed / (killed + survived + timeout), of the mutants checked",
        "score_by_module": {path: score(Counter(counts)) for path, counts in modules.items()},
        "score_counting_explained_as_killed": (
            round((killed + sum(1 for s in survivors if s["why"])) / decided, 4) if decided else None),
        "unexplained": [s["mutant"] for s in survivors + untested if not s["why"]],
        "explained_but_not_surviving": sorted(set(explained) - surviving),
        "survivors": survivors,
        "no_tests": untested,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", "utf-8")
    print(f"mutation score {summary['score']}: {dict(total)}; {len(summary['unexplained'])} survivor(s) unexplained "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
