"""scripts/coldstart_instructions.py counts the drain's handler import layer by layer, each
layer as what it adds to the ones before. A layer the handler does not load would be counted
as part of its import, and the figures in the README would then overstate it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from scripts.coldstart_instructions import LAYERS

REPO = Path(__file__).resolve().parents[1]

_NOT_LOADED = ("import json, sys\nimport functions.drain\n"
               "print(json.dumps([m for m in json.loads(sys.argv[1]) if m not in sys.modules]))")


def test_every_module_a_layer_names_is_one_the_drain_handler_import_loads():
    named = [module for _, modules in LAYERS for module in modules]
    assert "aws_lambda_powertools" in named and "msgspec" in named
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + _NOT_LOADED,
                           json.dumps(named)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == []
