"""scripts/package.py builds what the templates deploy.

Fast tests cover the requirement filter, the size limits and the CLI's failure modes.
The slow ones do real builds (pip from PyPI; about a minute for both targets, once per
session) and import every handler named in template.yml and s.yaml from the build in a
clean interpreter (`python -I -S`, sys.path = the build only), as the platforms do.

The real builds target the running interpreter's CPython version so that interpreter
can import them; the deployed builds use 3.12 (the templates' runtime) by default.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scripts import package
from scripts.coldstart import FUNCTIONS, first_run_modules
from tests.templates_tooling import FC_FUNCTIONS, HANDLERS, SAM_FUNCTIONS, fc_handlers, sam_handlers

REPO = Path(__file__).resolve().parents[1]
RUNNING_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
MB = 1024 * 1024


# -- requirements ----------------------------------------------------------------------------

def test_filter_keeps_pins_and_drops_only_the_named_projects():
    text = "# comment\nboto3>=1.34\noss2>=2.18,<3  # native OSS client\nOSS2-extra==1\ntablestore>=6.0,<7\n\npydantic>=2.6,<3\n"
    assert package.filter_requirements(text, ["oss2", "Tablestore"]) == ["boto3>=1.34", "OSS2-extra==1", "pydantic>=2.6,<3"]
    assert package.filter_requirements("Aliyun_Python.SDK-core>=2\n", ["aliyun-python-sdk-core"]) == []
    with pytest.raises(package.PackagingError):
        package.filter_requirements("-r other.txt\n", [])


def test_each_exclusion_names_a_real_requirement():
    """A renamed requirement must not slip back into a target unnoticed."""
    known = set()
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (REPO / name).read_text().splitlines():
            match = package._NAME.match(line)
            if match and not line.lstrip().startswith(("#", "-")):
                known.add(package.canonical(match.group(1)))
    for target in package.TARGETS.values():
        assert {package.canonical(n) for n in target.exclude} <= known, target.name
    runtime = {package.canonical(package._NAME.match(r).group(1))
               for r in package.filter_requirements((REPO / "requirements.txt").read_text(), [])}
    assert {"oss2", "tablestore"} <= runtime and "boto3" in runtime
    names = {t: {package.canonical(package._NAME.match(r).group(1)) for r in
                 package.filter_requirements((REPO / "requirements.txt").read_text(), package.TARGETS[t].exclude)}
             for t in package.TARGETS}
    assert "boto3" in names["aws"] and not {"oss2", "tablestore"} & names["aws"]
    assert "boto3" not in names["fc"] and {"oss2", "tablestore"} <= names["fc"]


# -- limits ----------------------------------------------------------------------------------

def test_limits():
    aws, fc = package.TARGETS["aws"], package.TARGETS["fc"]
    assert package.check_limits(aws, 262_144_000, 60 * MB) == ([], [])
    errors, _ = package.check_limits(aws, 262_144_001, 60 * MB)
    assert errors and "250.0 MB" in errors[0]
    assert package.check_limits(fc, 400 * MB, 90 * MB) == ([], [])
    errors, warnings = package.check_limits(fc, 400 * MB, 150 * MB)
    assert not errors and "100 MB" in warnings[0]
    errors, _ = package.check_limits(fc, 400 * MB, 501 * MB)
    assert errors and "zipped" in errors[0]
    errors, _ = package.check_limits(fc, 501 * MB, 90 * MB)
    assert errors and "unzipped" in errors[0]


def test_cli_fails_clearly_when_the_package_is_too_big(tmp_path, monkeypatch, capsys):
    tiny = dataclasses.replace(package.TARGETS["aws"], unzipped_limit=1000)
    monkeypatch.setitem(package.TARGETS, "aws", tiny)
    status = package.main(["--target", "aws", "--out", str(tmp_path / "aws"), "--sources-only"])
    err = capsys.readouterr().err
    assert status == 1
    assert "package: error: aws package is" in err and "over the" in err and "limit" in err


def test_out_must_be_a_previous_build_or_empty(tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert package.main(["--target", "fc", "--out", str(precious), "--sources-only"]) == 2
    assert "is not a build of this script" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"


def test_sources_only_build_is_laid_out_for_each_platform_and_zips_reproducibly(tmp_path):
    fc = package.build("fc", tmp_path / "fc", install=False)
    assert (fc.directory / "functions" / "__init__.py").exists() and (fc.directory / "shared" / "settings.py").exists()
    assert not list(fc.directory.rglob("__pycache__"))
    requirements = [line for line in (fc.directory / "requirements.txt").read_text().splitlines()
                    if line and not line.startswith("#")]
    # A build for one run at a time (the default) leaves out the FC 3.0 SDK the fan-out needs.
    assert requirements == package.filter_requirements((REPO / "requirements.txt").read_text(),
                                                       ["boto3", "alibabacloud-fc20230330"])
    first = fc.zip_path.read_bytes()
    again = package.build("fc", tmp_path / "fc", install=False)
    assert again.zip_path.read_bytes() == first
    with zipfile.ZipFile(fc.zip_path) as zf:
        names = zf.namelist()
    assert "functions/__init__.py" in names and package.MARKER not in names
    aws = package.build("aws", tmp_path / "aws", install=False, make_zip=False)
    assert not (aws.directory / "requirements.txt").exists()  # sam build would re-install it on the host
    assert aws.zip_path is None and aws.unzipped_bytes > 0


# -- real builds -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def builds(tmp_path_factory):
    """The AWS package, and the FC package for each of its sinks, built once per session for
    the running CPython (the deployed ones are 3.12)."""
    root = tmp_path_factory.mktemp("packages")
    specs = {"aws": ("aws", None), "fc": ("fc", "oss"), "fc-tablestore": ("fc", "tablestore")}

    def one(name: str) -> package.BuildResult:
        target, sink = specs[name]
        # Separate wheelhouses: the builds run side by side (pip is mostly waiting on I/O).
        return package.build(target, root / name, python_version=RUNNING_PYTHON, wheelhouse=root / f"wheels-{name}",
                             sink=sink)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(one, name) for name in specs}
    results = {}
    for target, future in futures.items():
        try:
            results[target] = future.result()
        except package.PackagingError as exc:
            pytest.fail(f"building the {target} package failed: {exc}")
    for result in results.values():
        print(f"\n{result.target}: {result.unzipped_bytes / MB:.1f} MB unzipped, "
              f"{result.zipped_bytes / MB:.1f} MB zipped (CPython {result.python_version})")
    return results


@pytest.mark.slow
def test_real_builds_hold_what_each_target_needs_within_its_limits(builds):
    aws, fc = builds["aws"], builds["fc"]
    aws_dists = package.installed_distributions(aws.directory)
    fc_dists = package.installed_distributions(fc.directory / "python")
    assert {"boto3", "aws-lambda-powertools", "pydantic", "aliyun-mns-sdk", "aliyun-python-sdk-dybaseapi"} <= aws_dists
    assert not {"oss2", "tablestore", "crcmod", "aliyun-fc2"} & aws_dists
    assert {"oss2", "aws-lambda-powertools", "pydantic", "aliyun-python-sdk-dysmsapi"} <= fc_dists
    assert not {"boto3", "botocore", "s3transfer", "tablestore", "numpy"} & fc_dists  # --sink oss: its SDK only
    tablestore_dists = package.installed_distributions(builds["fc-tablestore"].directory / "python")
    assert "tablestore" in tablestore_dists and not {"oss2", "boto3"} & tablestore_dists
    # The lean FC package: an OSS build within 45 MB unzipped, bytecode included.
    assert fc.unzipped_bytes <= 45 * MB, f"OSS build is {fc.unzipped_bytes / MB:.1f} MB"
    assert not package.installed_distributions(fc.directory) - {"functions", "shared"}  # nothing at FC's code root
    assert {p.name for p in fc.directory.glob("*.py")} == {f"{e}.py" for e in package.FC_ENTRY_POINTS}
    for result in builds.values():
        assert result.compiled > 100
        target = package.TARGETS[result.target]
        assert package.check_limits(target, result.unzipped_bytes, result.zipped_bytes)[0] == []
        assert not (result.directory / "bin").exists()


def import_handlers(directories: list[Path], handlers: dict[str, str]) -> dict[str, str]:
    """Import each handler in `python -I -S` with only `directories` (and the stdlib) on sys.path."""
    script = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = {[str(d) for d in directories]!r}\n"
        "out = {}\n"
        f"for where, spec in {handlers!r}.items():\n"
        "    module, _, attr = spec.rpartition('.')\n"
        "    try:\n"
        "        obj = getattr(importlib.import_module(module), attr)\n"
        "        out[where] = f'{obj.__module__}.{obj.__name__}' if callable(obj) else f'{spec} is not callable'\n"
        "    except ModuleNotFoundError as exc:\n"
        "        out[where] = f'{spec}: module {exc.name} not found in the package' + (\n"
        "            f' ({module.replace(\".\", \"/\")}.py is missing from the repository)' if exc.name == module else '')\n"
        "    except Exception as exc:\n"
        "        out[where] = f'{spec}: {type(exc).__name__}: {exc}'\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True,
                          cwd=directories[0], timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_template_handler_imports_from_its_package_in_a_clean_interpreter(builds):
    aws = {f"template.yml {SAM_FUNCTIONS[f]}": h for f, h in sam_handlers().items()}
    fc = {f"s.yaml {FC_FUNCTIONS[f]}": h for f, h in fc_handlers().items()}
    results = import_handlers([builds["aws"].directory], aws)
    # FC: the code root is /code and s.yaml sets PYTHONPATH=/code/python.
    results.update(import_handlers([builds["fc"].directory, builds["fc"].directory / "python"], fc))
    # Each resolves to our handler function itself (FC's root entry files re-export it).
    expected = {f"template.yml {SAM_FUNCTIONS[f]}": h for f, h in HANDLERS.items()}
    expected.update({f"s.yaml {FC_FUNCTIONS[f]}": h for f, h in HANDLERS.items()})
    broken = {where: outcome for where, outcome in results.items() if outcome != expected[where]}
    assert not broken, "handlers that do not resolve:\n" + "\n".join(f"  {w}: {o}" for w, o in sorted(broken.items()))


# -- bytecode, sinks and architectures ----------------------------------------------------------

def test_sink_and_arch_options_choose_what_is_built(tmp_path, capsys):
    assert package.TARGETS["fc"].sink_exclude("oss") == ("tablestore",)
    assert package.TARGETS["fc"].sink_exclude("tablestore") == ("oss2",)
    assert package.TARGETS["fc"].sink_exclude(None) == ()
    with pytest.raises(package.PackagingError, match="deploys the sinks oss, tablestore"):
        package.build("fc", tmp_path / "x", install=False, sink="s3")
    built = package.build("fc", tmp_path / "fc", install=False, sink="oss")
    assert "tablestore" not in (built.directory / "requirements.txt").read_text().split("without:")[1].split(")")[1]
    assert "oss2" in (built.directory / "requirements.txt").read_text()
    assert package.main(["--target", "aws", "--arch", "arm64", "--out", str(tmp_path / "arm"), "--sources-only"]) == 0
    assert "manylinux2014_aarch64" in capsys.readouterr().out


# A first scheduled run in a clean interpreter with only the unpacked package on sys.path, as
# the platform starts it: import both handlers (the cold start), then call the drain's with the
# event its schedule sends (the first invocation: the token API's SDK, the MNS SDK, the sink's).
_FIRST_RUN = r"""
import json, sys, time
from types import SimpleNamespace
paths, platform, event_file, timeout = json.loads(sys.argv[1])
sys.path[:0] = paths
import functions.drain, functions.reconcile

class LambdaContext:
    aws_request_id, function_name, memory_limit_in_mb = "first-run", "DrainFunction", 512
    invoked_function_arn = "arn:aws:lambda:ap-southeast-1:123456789012:function:DrainFunction"
    def __init__(self):
        self.end = time.monotonic() + timeout
    def get_remaining_time_in_millis(self):
        return int((self.end - time.monotonic()) * 1000)

raw = open(event_file, "rb").read()
if platform == "lambda":
    event, context = json.loads(raw), LambdaContext()
else:
    event = raw  # FC hands the event over as bytes
    context = SimpleNamespace(request_id="first-run", function=SimpleNamespace(name="alicom-drain", timeout=timeout))
before = set(sys.modules)
result = functions.drain.handler(event, context)
# The package's modules the invocation itself imported (the benchmark's list must cover them).
loaded = sorted(m for m in set(sys.modules) - before
                if (getattr(sys.modules[m], "__file__", None) or "").startswith(paths[0]))
print(json.dumps({"result": result, "loaded": loaded}))
"""
_IMPORTED = r"""
import importlib, json, sys
paths, modules = json.loads(sys.argv[1])
sys.path[:0] = paths
before = set(sys.modules)
for name in modules:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in set(sys.modules) - before
                        if (getattr(sys.modules[m], "__file__", None) or "").startswith(paths[0]))))
"""


def _pyc_flags(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[4:8], "little")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["aws", "fc"])
def test_the_first_scheduled_run_from_the_zip_compiles_nothing(builds, tmp_path, emulator, moto, name):
    """Unzipped (every timestamp 1980, as the platforms unpack it), the package runs its first
    scheduled drain with the template's default environment (Lambda: S3, the AccessKey read from
    Secrets Manager; FC: OSS, the role's key) against the stand-ins, and CPython writes no .pyc:
    neither the cold start's imports nor the SDKs the first invocation loads were stale or missing
    (a function's code is read-only, so whatever is compiled there is compiled on every cold start)."""
    from tests.fakes.oss_gateway import OssGateway
    from tests.test_deploy_defaults import (EVENTS, aws_process_environment, fc_environment, fc_stand_ins,
                                            sam_environment, sam_stand_ins)
    from tests.conftest import AK, SECRET, UID

    root = tmp_path / "code"
    with zipfile.ZipFile(builds[name].zip_path) as zf:
        zf.extractall(root)
    own = sorted(root.rglob("shared/__pycache__/*.pyc"))
    assert own and all(_pyc_flags(p) == 0b01 for p in own)  # hash-based, source never checked
    paths = [str(root)] + ([str(root / "python")] if (root / "python").is_dir() else [])
    gateway = None
    try:
        if name == "aws":
            parameters = {"AlicomUid": UID}
            overrides, enqueued = sam_stand_ins(emulator, moto, parameters)
            env = dict(sam_environment("drain", parameters), **overrides, **aws_process_environment(moto))
            args = [paths, "lambda", str(EVENTS / "schedule-eventbridge.json"), 55]
        else:
            gateway = OssGateway(moto.endpoint, AK, SECRET).start()  # checks the role's signature
            env = fc_environment("drain", {"uid": UID}, emulator, {"oss": gateway.endpoint})
            enqueued = fc_stand_ins(emulator, moto, env)
            args = [paths, "fc", str(EVENTS / "timer-fc-drain.json"), 55]
        before = {p: p.stat().st_mtime_ns for p in root.rglob("*.pyc")}
        env.update(PATH="/usr/bin:/bin", HOME=str(tmp_path))
        # Not -B: CPython writes a .pyc for every module it had to compile.
        proc = subprocess.run([sys.executable, "-I", "-c", _FIRST_RUN, json.dumps(args)], capture_output=True,
                              text=True, cwd=root, env=env, timeout=300)
    finally:
        if gateway:
            gateway.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    result = out["result"]
    assert result["ok"] and result["totals"]["stored"] == enqueued > 0, result
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*.pyc")}
    compiled = sorted(str(p.relative_to(root)) for p in set(after) - set(before))
    assert compiled == [] and after == before
    # scripts/coldstart.py times the first invocation by importing a list: it must hold all the run loaded.
    listed = [FUNCTIONS["drain"], *first_run_modules(root, "drain", env["SINK"])]
    probe = subprocess.run([sys.executable, "-I", "-B", "-c", _IMPORTED, json.dumps([paths, listed])],
                           capture_output=True, text=True, cwd=root, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert out["loaded"] and sorted(set(out["loaded"]) - set(json.loads(probe.stdout))) == []
