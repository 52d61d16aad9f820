"""Print the names of the mutants of the given modules that have no result yet (run in the scratch copy).

scripts/mutation/run --module shared/decode.py uses it to check one module's mutants before the
next: mutmut itself orders all pending mutants by their tests' time, whatever module they are in.

With --survivors first, the survivors are listed too. mutmut keeps a verdict while the mutated
function hashes the same, whatever happened to the tests: a test written to kill a survivor
changes nothing until the survivor is named again (scripts/mutation/run --recheck MODULE).
"""
from __future__ import annotations

import sys
from pathlib import Path

from mutmut.mutation.data import SourceFileMutationData


def main(args: list[str]) -> int:
    survivors = bool(args) and args[0] == "--survivors"
    paths = args[1:] if survivors else args
    wanted = {None, 0} if survivors else {None}  # mutmut's exit code 0: the tests passed, it survived
    for path in paths:
        data = SourceFileMutationData(path=Path(path))
        if not data.meta_path.exists():
            # No mutants generated yet (a new scratch copy, no verdicts kept): all of the module's,
            # as mutmut names them (shared/tokens.py -> shared.tokens.<function>__mutmut_<n>).
            print(path.removesuffix(".py").replace("/", ".") + ".*")
            continue
        data.load()
        for name, code in sorted(data.exit_code_by_key.items()):
            if code in wanted:
                print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
