"""How many CPUs this container may use: the cgroup CPU quota, else the CPUs it may run on.

Why not ``os.cpu_count()``: in a pod that is the node's core count (64 on a big node), while the
container's CPU limit may be 2; ``--workers auto`` sized from the node would start 64 processes that
the quota then throttles. The quota is read from cgroup v2 (``cpu.max``) or v1
(``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); without one, the affinity mask decides.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """The CPU quota in CPUs (``1.5`` for ``150000 100000``), or None when there is none."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def usable_cpus(root: Path = CGROUP) -> int:
    """Whole CPUs this process may use: the quota rounded down (at least 1), capped by the affinity."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is None:
        return max(1, affinity)
    return max(1, min(affinity, math.floor(quota)))
