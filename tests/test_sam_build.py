"""`sam build` builds each function of template.yml with scripts/Makefile (BuildMethod: makefile),
which runs scripts/package.py, and each artifact holds what its function runs.

Where the SAM CLI is installed (.ci/run installs it in a virtualenv of its own: its pinned
boto3, cfn-lint and click would fight requirements-dev.txt's), the real `sam build` runs,
reading the committed samconfig.toml. Elsewhere the Makefile's targets are run as SAM runs
them: `make --makefile <ContextPath>/Makefile build-<LogicalId>` in the function's code
directory (CodeUri; in place, as samconfig.toml's build_in_source asks) with ARTIFACTS_DIR
set. Both build for the running CPython, so this interpreter can import the artifacts.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from samtranslator.yaml_helper import yaml_parse

from tests.templates_tooling import HANDLERS, SAM_FUNCTIONS, load_sam
from tests.test_packaging import RUNNING_PYTHON, import_handlers

REPO = Path(__file__).resolve().parents[1]
SAM = shutil.which("sam")
INSTALL_HINT = "python3 -m venv /tmp/sam-cli && /tmp/sam-cli/bin/pip install aws-sam-cli; put /tmp/sam-cli/bin on PATH"


def build_environment() -> dict[str, str]:
    """The Makefile's variables: this interpreter runs the packager and sets the bytecode's version."""
    return dict(os.environ, PYTHON=sys.executable, TARGET_PYTHON=RUNNING_PYTHON, SAM_CLI_TELEMETRY="0")


def check_artifact(artifact: Path, function: str) -> None:
    """The package of one function: our code and its dependencies with bytecode, no repository
    tooling, and the handler template.yml names imports in a clean interpreter."""
    handler = HANDLERS[function]
    assert (artifact / "functions" / "drain.py").is_file() and (artifact / "shared" / "settings.py").is_file()
    assert (artifact / "aws_lambda_powertools").is_dir() and (artifact / "boto3").is_dir()
    assert list((artifact / "shared" / "__pycache__").glob("*.pyc")), "no bytecode"
    assert not {"scripts", "tests", "events", "template.yml", "samconfig.toml"} & {p.name for p in artifact.iterdir()}
    assert import_handlers([artifact], {function: handler}) == {function: handler}


@pytest.mark.slow
def test_sam_build_builds_each_function_with_the_makefile(tmp_path):
    if SAM is None:
        message = f"the sam CLI is not on PATH: the sam build test needs it ({INSTALL_HINT})"
        if os.environ.get("CI"):  # .ci/run installs it: absent there means the install broke
            pytest.fail(message)
        pytest.skip(message)  # -ra in pyproject.toml prints the reason
    build_dir = tmp_path / "build"
    proc = subprocess.run([SAM, "build", "--build-dir", str(build_dir), "--cache-dir", str(tmp_path / "cache")],
                          cwd=REPO, env=build_environment(), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Build Succeeded" in proc.stdout + proc.stderr
    # The template sam deploy reads: each function's code is its own build directory.
    built = yaml_parse((build_dir / "template.yaml").read_text())
    for function, logical_id in SAM_FUNCTIONS.items():
        assert built["Resources"][logical_id]["Properties"]["CodeUri"] == logical_id
        check_artifact(build_dir / logical_id, function)


@pytest.mark.slow
def test_the_makefile_builds_each_function_as_sam_build_runs_it(tmp_path):
    if SAM is not None:
        pytest.skip(f"{SAM} is installed: the real sam build runs in "
                    "test_sam_build_builds_each_function_with_the_makefile instead")
    if shutil.which("make") is None:
        pytest.skip("make is not on PATH: sam build runs the Makefile with it (apt-get install make)")
    template = load_sam()
    code_dir = REPO / template["Globals"]["Function"]["CodeUri"]
    for function, logical_id in SAM_FUNCTIONS.items():
        metadata = template["Resources"][logical_id]["Metadata"]
        assert metadata["BuildMethod"] == "makefile"
        artifact = tmp_path / logical_id
        artifact.mkdir()  # sam build makes it, empty, before it runs make
        makefile = REPO / metadata["ContextPath"] / "Makefile"
        proc = subprocess.run(["make", "--makefile", str(makefile), f"build-{logical_id}"], cwd=code_dir,
                              env=dict(build_environment(), ARTIFACTS_DIR=str(artifact)),
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        check_artifact(artifact, function)


def test_a_target_run_by_hand_without_artifacts_dir_says_what_is_missing(tmp_path):
    proc = subprocess.run(["make", "--makefile", str(REPO / "scripts" / "Makefile"), "build-DrainFunction"],
                          cwd=tmp_path, env={k: v for k, v in build_environment().items() if k != "ARTIFACTS_DIR"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "build-DrainFunction: ARTIFACTS_DIR is not set (sam build sets it)" in proc.stderr
    assert list(tmp_path.iterdir()) == []
