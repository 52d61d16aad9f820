"""Print the names of the mutants of the given modules that have no result yet (run in the scratch copy).

scripts/mutation/run --module shared/decode.py uses it to check one module's mutants before the
next: mutmut itself orders all pending mutants by their tests' time, whatever module they are in.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mutmut.mutation.data import SourceFileMutationData


def main(paths: list[str]) -> int:
    for path in paths:
        data = SourceFileMutationData(path=Path(path))
        if not data.meta_path.exists():
            # No mutants generated yet (a new scratch copy, no verdicts kept): all of the module's,
            # as mutmut names them (shared/tokens.py -> shared.tokens.<function>__mutmut_<n>).
            print(path.removesuffix(".py").replace("/", ".") + ".*")
            continue
        data.load()
        for name, code in sorted(data.exit_code_by_key.items()):
            if code is None:
                print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
