"""Build the deployable code directory (and zip) for Lambda or Function Compute, without Docker.

    python -m scripts.package --target aws --out build/aws                 # what sam build runs (scripts/Makefile)
    python -m scripts.package --target aws --arch arm64 --out build/aws    # Architecture=arm64
    python -m scripts.package --target fc --sink oss --out build/fc        # s.yaml code (its pre-deploy action)

The build holds `functions/` and `shared/` at its root and the dependencies of
requirements.txt cross-installed for the target (manylinux2014_x86_64, CPython 3.12 by
default) with pip's --platform/--python-version: at the root for Lambda, in `python/`
for Function Compute (s.yaml sets PYTHONPATH=/code/python). Each target leaves out the
SDKs it never uses, and `--sink` leaves out the other sinks' SDKs too (an OSS build carries
no tablestore and its numpy); the packages to leave out are named here and everything else,
version pins included, comes from requirements.txt alone.

Every module is compiled to bytecode by the target CPython version with
`--invalidation-mode unchecked-hash`: pip's `--no-compile` and the zip's fixed 1980
timestamps would otherwise make every `.pyc` stale, and each cold start would compile
every module again. The target interpreter is the running one when the versions match,
else `python<version>` on PATH (pyenv's shims count).

A requirement published only as a source distribution (aliyun-python-sdk-dybaseapi,
oss2, crcmod) cannot be installed with --only-binary: it is built here into a pure-Python
wheel (C compiler disabled, so crcmod takes its pure-Python fallback) and offered to pip
from a local wheelhouse. A source package that cannot build pure stops the build with a
message naming it.

Exit status 0 on success, 1 if the package exceeds the platform's size limit, 2 on any
other failure; the message says which.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_PACKAGES = ("functions", "shared")
# Function Compute documents Python handlers as <file>.<method> with the file at the code
# root, and never shows a dotted package path, so its build gets one root file per
# function that re-exports the handler (s.yaml names these). Lambda takes the dotted path.
FC_ENTRY_POINTS = {"drain_handler": "functions.drain", "reconcile_handler": "functions.reconcile"}
MARKER = ".alicom-package"  # marks a directory this script built, so --out can be replaced safely
DEFAULT_PLATFORM = "manylinux2014_x86_64"
# template.yml's Architecture parameter -> the wheel platform to cross-install for.
ARCH_PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
DEFAULT_PYTHON = "3.12"
MB = 1024 * 1024


@dataclass(frozen=True)
class Target:
    name: str
    deps_subdir: str  # where dependencies go inside the build ("" = beside functions/)
    exclude: tuple[str, ...]  # requirements.txt entries this target does not install
    forbidden: tuple[str, ...]  # distributions that must not end up in the build at all
    unzipped_limit: int
    zipped_limit: Optional[int]
    limit_source: str
    zipped_warning: Optional[int] = None
    zipped_warning_text: str = ""
    # sink -> requirements.txt entries only that sink needs; --sink X leaves out the others'.
    sink_sdks: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Modules an SDK imports only when first used (not when imported, not by our code), which
    # the bytecode step imports too, so the first invocation finds them compiled.
    first_use: tuple[str, ...] = ()

    def sink_exclude(self, sink: Optional[str]) -> tuple[str, ...]:
        """What a build for one sink leaves out on top of `exclude` (nothing without --sink)."""
        sdks = dict(self.sink_sdks)
        if sink is None:
            return ()
        if sink not in sdks:
            raise PackagingError(f"--sink {sink!r}: target {self.name} deploys the sinks {', '.join(sdks)}")
        return tuple(n for other, names in sdks.items() if other != sink for n in names if n not in sdks[sink])


TARGETS = {
    # Lambda: 250 MB unzipped for function code plus layers (the error reads "Unzipped size
    # must be smaller than 262144000 bytes"). SAM uploads through S3, so the 50 MB
    # direct-upload zip limit does not apply.
    "aws": Target(
        name="aws",
        deps_subdir="",
        exclude=("oss2", "tablestore", "aliyun-fc2", "alibabacloud-fc20230330"),
        forbidden=("oss2", "tablestore", "crcmod", "aliyun-fc2", "alibabacloud-fc20230330"),
        unzipped_limit=262_144_000,
        zipped_limit=None,
        limit_source="AWS Lambda quotas: deployment package 250 MB unzipped (262144000 bytes)",
        sink_sdks=(("s3", ()), ("dynamodb", ())),  # both are boto3, which Powertools Parameters needs too
        first_use=("boto3.s3.inject",),  # boto3's S3 customisations, loaded as an S3 client is made
    ),
    # Function Compute 3.0 "Limits" page (alibabacloud.com/help/en/functioncompute/fc-3-0/
    # product-overview/limits-of-usage): a code package is at most 500 MB as a ZIP uploaded
    # through the console, a developer tool (Serverless Devs) or OSS, and 100 MB as a
    # base64 ZIP through the SDK/OpenAPI. No unzipped limit is published; 500 MB unzipped is
    # enforced here as a conservative stand-in.
    "fc": Target(
        name="fc",
        deps_subdir="python",
        # boto3 serves only the S3/DynamoDB sinks and Powertools Parameters (AWS only);
        # Powertools' Logger and Metrics import it lazily, so FC does not need it.
        exclude=("boto3",),
        forbidden=("boto3", "botocore", "s3transfer"),
        unzipped_limit=500 * MB,
        zipped_limit=500 * MB,
        limit_source="Function Compute 3.0 limits: 500 MB ZIP via Serverless Devs/console/OSS "
        "(100 MB via SDK/OpenAPI); 500 MB unzipped assumed",
        zipped_warning=100 * MB,
        zipped_warning_text="over 100 MB: upload through s deploy or OSS, not the SDK/OpenAPI",
        sink_sdks=(("oss", ("oss2",)), ("tablestore", ("tablestore",))),
    ),
}


# Function Compute 3.0's SDK serves only the drain's fan-out (shared/invokers/fc3.py). It is large
# (aiohttp, cryptography): an FC build carries it only when built for DRAIN_MAX_WORKERS > 1.
FAN_OUT_SDKS = {"fc": ("alibabacloud-fc20230330",)}


class PackagingError(Exception):
    """The build failed for a reason other than size; the message says what to do."""


@dataclass
class BuildResult:
    target: str
    directory: Path
    zip_path: Optional[Path]
    unzipped_bytes: int
    zipped_bytes: Optional[int]
    python_version: str
    platform: str
    sink: Optional[str] = None
    compiled: int = 0  # .pyc files written


# -- requirements ----------------------------------------------------------------------

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def filter_requirements(text: str, exclude: Sequence[str]) -> list[str]:
    """requirements.txt lines minus the excluded projects; pins are kept exactly as written."""
    excluded = {canonical(n) for n in exclude}
    kept = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.startswith("-"):
            raise PackagingError(f"requirements.txt: option lines are not supported here: {line!r}")
        match = _NAME.match(line)
        if not match:
            raise PackagingError(f"requirements.txt: cannot read a project name in {line!r}")
        if canonical(match.group(1)) not in excluded:
            kept.append(line)
    return kept


# -- building ----------------------------------------------------------------------------

def _prepare_out(out: Path) -> None:
    if out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            raise PackagingError(f"{out} exists and is not a build of this script; remove it or choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("built by scripts/package.py; replaced on every build\n")


def _copy_sources(out: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    for name in SOURCE_PACKAGES:
        src = REPO_ROOT / name
        if not src.is_dir():
            raise PackagingError(f"{src} is missing; run from a full checkout")
        shutil.copytree(src, out / name, ignore=ignore)


def _pip(args: list[str], env: Optional[dict] = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def _build_pure_wheel(requirement: str, wheelhouse: Path, target: Target, python_version: str, platform: str) -> Path:
    """Build one source-only requirement into a py3-none-any wheel, or explain why not."""
    name = canonical(_NAME.match(requirement).group(1))
    before = set(wheelhouse.glob("*.whl"))
    env = dict(os.environ, CC="false", CXX="false", LDSHARED="false")  # no C: pure fallback or fail
    # --use-pep517: build in an isolated environment with its own setuptools and wheel, so an
    # interpreter whose venv lacks the `wheel` package (older pips) can still build the source.
    proc = _pip(["wheel", "--no-cache-dir", "--no-deps", "--use-pep517", "--no-binary", name,
                 "--wheel-dir", str(wheelhouse), requirement], env=env)
    built = sorted(set(wheelhouse.glob("*.whl")) - before)
    if proc.returncode != 0 or not built:
        raise PackagingError(
            f"{requirement} has no {platform} wheel for Python {python_version} and its source did not build "
            f"without a C compiler:\n{_tail(proc.stderr)}\nBuild in the platform image instead ("
            + ("s build" if target.name == "fc" else "sam build --use-container --build-image <a Python build image>")
            + ")."
        )
    for wheel in built:
        if not wheel.name.endswith("-none-any.whl"):
            wheel.unlink()
            raise PackagingError(
                f"{requirement} has no {platform} wheel for Python {python_version} and builds only a "
                f"platform-specific wheel ({wheel.name}); it cannot be cross-installed without Docker."
            )
    return built[0]


def _install_dependencies(requirements: list[str], dest: Path, wheelhouse: Path, target: Target,
                          python_version: str, platform: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    req_file = wheelhouse / f"requirements-{target.name}-{os.getpid()}.txt"
    req_file.write_text("\n".join(requirements) + "\n")
    args = [
        "install", "--target", str(dest), "--no-compile", "--upgrade",
        "--platform", platform, "--python-version", python_version, "--implementation", "cp",
        "--only-binary=:all:", "--find-links", str(wheelhouse), "-r", str(req_file),
    ]
    attempted: set[str] = set()
    try:
        for _ in range(20):
            proc = _pip(args)
            if proc.returncode == 0:
                return
            missing = re.search(r"No matching distribution found for (\S+)", proc.stderr)
            if not missing:
                raise PackagingError(f"pip install failed for target {target.name}:\n{_tail(proc.stderr)}")
            requirement = missing.group(1)
            if requirement in attempted:
                raise PackagingError(f"pip still finds no usable distribution of {requirement}:\n{_tail(proc.stderr)}")
            attempted.add(requirement)
            _build_pure_wheel(requirement, wheelhouse, target, python_version, platform)
        raise PackagingError("gave up after 20 source-only requirements")
    finally:
        req_file.unlink(missing_ok=True)


def _tidy(deps: Path) -> None:
    """Drop what a function never runs: console scripts and byte-code caches."""
    shutil.rmtree(deps / "bin", ignore_errors=True)
    for cache in deps.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)


def target_interpreter(python_version: str) -> list[str]:
    """A command running CPython `python_version` (bytecode is version-specific)."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == python_version:
        return [sys.executable]
    # pyenv's shim answers only for a selected version, so look in its versions/ too.
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates = [shutil.which(f"python{python_version}")]
    candidates += sorted(str(p) for p in pyenv_root.glob(f"versions/{python_version}.*/bin/python{python_version}"))
    for found in filter(None, candidates):
        probe = subprocess.run([found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == python_version:
            return [found]
    raise PackagingError(
        f"bytecode for CPython {python_version} must be compiled by CPython {python_version}, and "
        f"python{python_version} is not on PATH; install it (e.g. pyenv install {python_version}) or run "
        f"this script with it, or build with --python-version {sys.version_info.major}.{sys.version_info.minor}"
    )


# Run by the target interpreter with -X pycache_prefix=<temporary dir>: import what the
# functions import at cold start, then what they import later (`lazy_imports`: the SDK a first
# invocation loads, such as the token API's client), from the build only; every source CPython
# compiled on the way (a module whose import failed, like dateutil's Windows-only tz module,
# included) left a .pyc under the prefix. Compile exactly those files (and all of functions/
# and shared/) into the build.
_TRACE_AND_COMPILE = r"""
import importlib, os, py_compile, sys
root, paths, modules, lazy = sys.argv[1], sys.argv[2].split(os.pathsep), sys.argv[3].split(","), sys.argv[4].split(",")
sys.path[:0] = paths
for name in modules:
    importlib.import_module(name)
for name in filter(None, lazy):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # Another target's SDK (boto3 in an FC build, oss2 in a Lambda one) is simply absent;
        # anything else missing would fail the first invocation that imports it.
        top = (exc.name or "").partition(".")[0]
        if any(os.path.exists(os.path.join(p, top)) or os.path.exists(os.path.join(p, top + ".py")) for p in paths):
            raise
prefix, files = sys.pycache_prefix, set()
for folder, _, names in os.walk(prefix):
    source_dir = os.sep + os.path.relpath(folder, prefix)
    for n in names:
        source = os.path.join(source_dir, n.split(".")[0] + ".py")
        if source.startswith(root + os.sep) and os.path.exists(source):
            files.add(source)
for own in ("functions", "shared"):
    for folder, _, names in os.walk(os.path.join(root, own)):
        files.update(os.path.join(folder, n) for n in names if n.endswith(".py"))
files.update(os.path.join(root, n) for n in os.listdir(root) if n.endswith(".py"))
for path in sorted(files):
    # cfile spelled out: with a pycache_prefix, py_compile's default would write under the prefix.
    cfile = os.path.join(os.path.dirname(path), "__pycache__",
                         os.path.basename(path)[:-3] + "." + sys.implementation.cache_tag + ".pyc")
    py_compile.compile(path, cfile=cfile, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
print(len(files))
"""


def runtime_modules(target: Target, sink: Optional[str], workers: int = 1) -> list[str]:
    """What a cold start and a run import: both handlers, every shared module, the sinks built in,
    and the invoker a fan-out uses when the build is for one."""
    shared = sorted(f"shared.{p.stem}" for p in (REPO_ROOT / "shared").glob("*.py") if p.stem != "__init__")
    sinks = [sink] if sink else [name for name, _ in target.sink_sdks]
    entries = list(FC_ENTRY_POINTS) if target.name == "fc" else []
    invokers = [f"shared.invokers.{'fc3' if target.name == 'fc' else 'aws_lambda'}"] if workers > 1 else []
    return ["functions.drain", "functions.reconcile", *shared, *(f"shared.sinks.{s}" for s in sinks), *entries,
            *invokers]


def lazy_imports() -> list[str]:
    """Every non-stdlib module that functions/ and shared/ import, wherever the import statement
    is. The ones inside functions (the token API's SDK, the MNS SDK, a sink's SDK, Parameters on
    AWS) load on the first invocation, which would otherwise compile them from source on every
    cold start: a function's code directory is read-only, so nothing compiled there is kept."""
    found = set()
    for package in SOURCE_PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module)
    return sorted(name for name in found if name.partition(".")[0] not in sys.stdlib_module_names)


def _host_platform(platform: str) -> bool:
    """Can this machine load the build's libraries (Linux, same architecture)?"""
    import platform as host

    return sys.platform == "linux" and platform.endswith(host.machine())


def compile_bytecode(out: Path, target: Target, python_version: str, platform: str, sink: Optional[str],
                     workers: int = 1) -> int:
    """Bytecode that is never checked against its source (unchecked-hash), so the zip's 1980
    timestamps cannot make it stale. Only the modules a run imports are compiled (found by
    importing them from the build: the handlers, shared/ and the sinks, then `lazy_imports`),
    which keeps an OSS build under 45 MB; a build for another architecture cannot be imported
    here, so everything in it is compiled instead."""
    interpreter = target_interpreter(python_version)
    if not _host_platform(platform):
        command = interpreter + ["-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", str(out)]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode not in (0, 1):  # 1: some SDK ships a test file that does not compile
            raise PackagingError(f"compileall failed:\n{_tail(proc.stdout + proc.stderr)}")
        return sum(1 for _ in out.rglob("*.pyc"))
    deps = out / target.deps_subdir if target.deps_subdir else out
    paths = os.pathsep.join(dict.fromkeys([str(out), str(deps)]))
    with tempfile.TemporaryDirectory(prefix="alicom-pycache-") as prefix:
        later = lazy_imports() + list(target.first_use)
        command = interpreter + ["-I", "-X", f"pycache_prefix={prefix}", "-c", _TRACE_AND_COMPILE, str(out), paths,
                                 ",".join(runtime_modules(target, sink, workers)), ",".join(later)]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=out)
    if proc.returncode != 0:
        raise PackagingError(f"importing the functions from the build failed, so it would fail when deployed:\n"
                             f"{_tail(proc.stderr)}")
    return int(proc.stdout.strip().splitlines()[-1])


def strip_debug_info(out: Path, platform: str) -> int:
    """Drop the debug sections some wheels ship in their shared libraries (pycryptodome's are
    80% DWARF): `strip --strip-debug` leaves every symbol and all code, so nothing behaves
    differently. Skipped, with the package larger, where binutils' strip is absent or the
    libraries are for another architecture."""
    tool = shutil.which("strip")
    # Not the wheels auditwheel repaired (numpy: `numpy.libs/` beside `numpy/`): patchelf edited
    # their libraries, and strip then leaves them unloadable. The import check after this catches
    # any other breakage. Some SDKs ship macOS libraries too: only ELF files are stripped.
    repaired = {d.name[: -len(".libs")] for d in out.rglob("*.libs") if d.is_dir()}
    libraries = sorted(str(p) for p in out.rglob("*.so*") if p.is_file() and _is_elf(p)
                       and not any(part.endswith(".libs") or part in repaired for part in p.relative_to(out).parts))
    if not tool or not libraries or not _host_platform(platform):
        return 0
    proc = subprocess.run([tool, "--strip-debug", *libraries], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PackagingError(f"strip --strip-debug failed:\n{_tail(proc.stderr)}")
    return len(libraries)


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def installed_distributions(deps: Path) -> set[str]:
    names = set()
    for info in deps.glob("*.dist-info"):
        names.add(canonical(info.name[: -len(".dist-info")].rsplit("-", 1)[0]))
    return names


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def write_zip(directory: Path, zip_path: Path) -> int:
    """A reproducible zip: sorted entries, fixed timestamps, 0644/0755 modes."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for file in sorted(p for p in directory.rglob("*") if p.is_file()):
            rel = file.relative_to(directory).as_posix()
            if rel == MARKER:
                continue
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            mode = 0o755 if os.access(file, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with file.open("rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
    return zip_path.stat().st_size


def check_limits(target: Target, unzipped: int, zipped: Optional[int]) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a package of these sizes on this target."""
    errors, warnings = [], []
    if unzipped > target.unzipped_limit:
        errors.append(
            f"{target.name} package is {_mb(unzipped)} unzipped, over the {_mb(target.unzipped_limit)} limit "
            f"({target.limit_source})"
        )
    if zipped is not None and target.zipped_limit is not None and zipped > target.zipped_limit:
        errors.append(
            f"{target.name} package is {_mb(zipped)} zipped, over the {_mb(target.zipped_limit)} limit "
            f"({target.limit_source})"
        )
    if zipped is not None and target.zipped_warning is not None and zipped > target.zipped_warning:
        warnings.append(f"{target.name} package is {_mb(zipped)} zipped: {target.zipped_warning_text}")
    return errors, warnings


def build(target_name: str, out: Path, python_version: str = DEFAULT_PYTHON, platform: str = DEFAULT_PLATFORM,
          make_zip: bool = True, install: bool = True, wheelhouse: Optional[Path] = None,
          requirements_file: Path = REPO_ROOT / "requirements.txt", sink: Optional[str] = None,
          compile: bool = True, workers: int = 1) -> BuildResult:
    target = TARGETS[target_name]
    out = Path(out).resolve()
    no_fan_out = FAN_OUT_SDKS.get(target.name, ()) if workers <= 1 else ()
    exclude = target.exclude + target.sink_exclude(sink) + no_fan_out
    requirements = filter_requirements(requirements_file.read_text(), exclude)
    compiler = target_interpreter(python_version) if compile and install else None  # fail before the long part
    _prepare_out(out)
    _copy_sources(out)
    deps = out / target.deps_subdir if target.deps_subdir else out
    if target.name == "fc":
        for entry, module in FC_ENTRY_POINTS.items():
            (out / f"{entry}.py").write_text(
                f'"""Function Compute entry point ({entry}.handler): {module}.handler under the '
                f'<file>.<method> name FC documents."""\nfrom {module} import handler  # noqa: F401\n'
            )
        # Lets `s build --command "pip install -t python -r requirements.txt"` (Docker) redo the
        # dependency install in FC's own image, to the same place.
        (out / "requirements.txt").write_text(
            "# Generated by scripts/package.py from requirements.txt (without: "
            + ", ".join(exclude) + ")\n" + "\n".join(requirements) + "\n"
        )
    if install:
        wheelhouse = Path(wheelhouse) if wheelhouse else out.parent / ".wheelhouse"
        _install_dependencies(requirements, deps, wheelhouse, target, python_version, platform)
        _tidy(deps)
        strip_debug_info(deps, platform)
        present = installed_distributions(deps) & {canonical(n) for n in
                                                   target.forbidden + target.sink_exclude(sink) + no_fan_out}
        if present:
            raise PackagingError(
                f"{', '.join(sorted(present))} ended up in the {target.name} package although this target "
                "excludes it: a dependency pulls it in; exclude that dependency too or drop it from the target list"
            )
    compiled = compile_bytecode(out, target, python_version, platform, sink, workers) if compiler else 0
    unzipped = directory_size(out)
    zip_path = out.with_name(out.name + ".zip") if make_zip else None
    zipped = write_zip(out, zip_path) if zip_path else None
    return BuildResult(target.name, out, zip_path, unzipped, zipped, python_version, platform, sink, compiled)


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.package", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=sorted(TARGETS), required=True)
    parser.add_argument("--out", type=Path, required=True, help="build directory (replaced); the zip goes beside it")
    parser.add_argument("--python-version", default=DEFAULT_PYTHON, help="target CPython version (default %(default)s)")
    parser.add_argument("--arch", choices=sorted(ARCH_PLATFORMS), default="x86_64",
                        help="target architecture (template.yml's Architecture; default %(default)s)")
    parser.add_argument("--platform", help="target wheel platform (default: from --arch, e.g. manylinux2014_x86_64)")
    parser.add_argument("--sink", help="build only this sink's SDK (fc: oss or tablestore; aws: s3 or dynamodb)")
    parser.add_argument("--workers", type=int, default=1,
                        help="DRAIN_MAX_WORKERS the build is for: above 1, an FC build carries FC 3.0's SDK for "
                             "the fan-out (default %(default)s)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="ship no bytecode (every cold start then compiles every module)")
    parser.add_argument("--no-zip", action="store_true", help="build the directory only")
    parser.add_argument("--sources-only", action="store_true",
                        help="copy functions/ and shared/ (and FC's requirements.txt) without installing dependencies")
    parser.add_argument("--wheelhouse", type=Path,
                        help="where wheels built from source are kept (default: .wheelhouse beside --out)")
    args = parser.parse_args(argv)
    target = TARGETS[args.target]
    platform = args.platform or ARCH_PLATFORMS[args.arch]
    try:
        result = build(args.target, args.out, args.python_version, platform,
                       make_zip=not args.no_zip, install=not args.sources_only, wheelhouse=args.wheelhouse,
                       sink=args.sink, compile=args.compile, workers=args.workers)
    except PackagingError as exc:
        print(f"package: error: {exc}", file=sys.stderr)
        return 2
    print(f"target {result.target}: {result.directory} (CPython {result.python_version}, {result.platform}, "
          f"sink {result.sink or 'all'}, {result.compiled} .pyc)")
    print(f"  unzipped: {_mb(result.unzipped_bytes)} ({result.unzipped_bytes:,} bytes)")
    if result.zipped_bytes is not None:
        print(f"  zipped:   {_mb(result.zipped_bytes)} ({result.zipped_bytes:,} bytes) -> {result.zip_path}")
    errors, warnings = check_limits(target, result.unzipped_bytes, result.zipped_bytes)
    for warning in warnings:
        print(f"package: warning: {warning}", file=sys.stderr)
    if errors:
        for error in errors:
            print(f"package: error: {error}", file=sys.stderr)
        return 1
    print(f"  within limits ({target.limit_source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
