"""Run child processes on a fraction of one CPU, as a function sized for that share runs.

Lambda gives a function CPU in proportion to its memory (1,769 MB = one vCPU); Function
Compute 3.0 lets the vCPU be chosen with the memory. A cgroup's CFS quota reproduces the
share on this machine: `quota / period` of one CPU, enforced by the kernel scheduler. Uses
cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`); needs root. Used by scripts/coldstart.py
and scripts/sizing.py.
"""
from __future__ import annotations

import os
from pathlib import Path

PERIOD_US = 100_000
V2_ROOT = Path("/sys/fs/cgroup")
V1_ROOT = Path("/sys/fs/cgroup/cpu")


class CpuCapError(RuntimeError):
    """The machine does not let this process make a CPU-capped cgroup; the message says why."""


class CpuCap:
    """A cgroup capped at `cpus` of one CPU; `enter()` (in a child, e.g. preexec_fn) joins it."""

    def __init__(self, cpus: float):
        if not 0.01 <= cpus <= os.cpu_count():
            raise CpuCapError(f"cpus must be between 0.01 and {os.cpu_count()}, got {cpus}")
        self.cpus = cpus
        quota = int(PERIOD_US * cpus)
        name = f"alicom-cpu-cap-{os.getpid()}-{int(cpus * 1000)}"
        try:
            if (V2_ROOT / "cgroup.controllers").exists():
                self.path = V2_ROOT / name
                self.path.mkdir()
                (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
            elif (V1_ROOT / "cpu.cfs_quota_us").exists():
                self.path = V1_ROOT / name
                self.path.mkdir()
                (self.path / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
                (self.path / "cpu.cfs_quota_us").write_text(f"{quota}\n")
            else:
                raise CpuCapError("no cgroup CPU controller is mounted under /sys/fs/cgroup")
        except OSError as exc:
            raise CpuCapError(f"cannot make a CPU-capped cgroup ({exc}); run as root on a machine whose "
                              "cgroup file system is writable") from None
        self._procs = str(self.path / "cgroup.procs")

    def enter(self) -> None:
        """Move the calling process into the capped cgroup (call it in the child before exec)."""
        with open(self._procs, "w") as procs:
            procs.write(str(os.getpid()))

    def close(self) -> None:
        """Remove the cgroup (its processes must have ended)."""
        try:
            self.path.rmdir()
        except OSError:
            pass

    def __enter__(self) -> "CpuCap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
