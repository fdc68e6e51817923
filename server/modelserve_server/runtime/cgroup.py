"""The container's CPU limit, read from its cgroup, to size ONNX Runtime's intra-op thread pool.

Why: ONNX Runtime sizes its pool from the cores it can see, which in a container is every core of
the node. A pod limited to ``cpu: 2`` on a 64-core node would run 64 spinning threads against a
quota of two cores and be throttled into long latency tails. Kubernetes expresses the CPU limit as
a CFS quota: cgroup v2 ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``) or cgroup v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota ``-1`` = none). The effective limit is the
smallest quota on the path from this process's cgroup up to the root, because a parent's quota
binds its children.

The parsing functions are pure (text in, number out); :func:`cpu_limit` does the file reading, with
the cgroup root and ``/proc/self/cgroup`` as parameters so tests use fake trees.
"""

from __future__ import annotations

import math
import os
from pathlib import Path, PurePosixPath

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max`` -> CPUs (``"200000 100000"`` -> 2.0); ``"max ..."`` -> None."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    quota = int(parts[0])
    period = int(parts[1]) if len(parts) > 1 else 100000
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """cgroup v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` -> CPUs; quota -1 -> None."""
    quota, period = int(quota_text.strip()), int(period_text.strip())
    return quota / period if quota > 0 and period > 0 else None


def parse_proc_cgroup(text: str) -> tuple[str | None, str | None]:
    """``/proc/self/cgroup`` -> (v2 path, v1 path of the ``cpu`` controller); either may be None."""
    v2: str | None = None
    v1: str | None = None
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path or "/"
        elif "cpu" in controllers.split(","):
            v1 = path or "/"
    return v2, v1


def _ancestors(base: Path, cgroup_path: str) -> list[Path]:
    """``base/a/b``, ``base/a``, ``base``: the cgroup directory and its parents inside the mount."""
    parts = PurePosixPath(cgroup_path).parts[1:] if cgroup_path.startswith("/") else ()
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _min(values: list[float]) -> float | None:
    return min(values) if values else None


def cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The CPU limit of this process's cgroup in CPUs (may be fractional), or None when unlimited.

    Inside a container the cgroup namespace usually makes the own cgroup the mount's root (path
    ``/``); outside one the path names the directory. Both are handled; unreadable files count as
    no limit (never an error: the server then leaves the choice to ONNX Runtime).
    """
    try:
        v2_path, v1_path = parse_proc_cgroup(proc_cgroup.read_text())
    except OSError:
        v2_path, v1_path = "/", "/"
    found: list[float] = []
    if (root / "cgroup.controllers").exists():  # cgroup v2 (unified)
        for directory in _ancestors(root, v2_path or "/"):
            try:
                value = parse_cpu_max((directory / "cpu.max").read_text())
            except (OSError, ValueError):
                continue
            if value is not None:
                found.append(value)
        return _min(found)
    for mount in (root / "cpu,cpuacct", root / "cpu", root / "cpuacct,cpu"):
        if not mount.is_dir():
            continue
        for directory in _ancestors(mount, v1_path or "/"):
            try:
                value = parse_cfs(
                    (directory / "cpu.cfs_quota_us").read_text(),
                    (directory / "cpu.cfs_period_us").read_text(),
                )
            except (OSError, ValueError):
                continue
            if value is not None:
                found.append(value)
        break
    return _min(found)


def threads_for_limit(limit: float | None, visible_cpus: int | None) -> int:
    """Intra-op threads for a CPU limit: its whole CPUs (at least 1), never more than the CPUs
    this process may run on; 0 (ONNX Runtime decides) when there is no limit."""
    if limit is None:
        return 0
    threads = max(1, math.floor(limit + 1e-9))
    return min(threads, visible_cpus) if visible_cpus else threads


def default_intra_op_threads(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """What ``--intra-op-threads 0`` resolves to: the cgroup CPU limit, else 0 (ONNX Runtime's choice)."""
    visible: int | None
    try:
        visible = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        visible = os.cpu_count()
    return threads_for_limit(cpu_limit(root, proc_cgroup), visible)
