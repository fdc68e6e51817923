"""How many CPUs this container may use: the cgroup CPU limit, else the CPUs it may run on.

Why not ``os.cpu_count()``: in a pod that is the node's core count (64 on a big node), while the
container's CPU limit may be 2; ``--workers auto`` sized from the node would start 64 processes that
the quota then throttles. The limit itself is read in one place, :mod:`modelserve_server.runtime.cgroup`
(cgroup v2 ``cpu.max`` or v1 CFS quota, along the process's own cgroup path), which also sizes the
intra-op threads; without a limit, the affinity mask decides.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from modelserve_server.runtime.cgroup import CGROUP_ROOT, PROC_SELF_CGROUP, cpu_limit


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """Whole CPUs this process may use: the limit rounded down (at least 1), capped by the affinity."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    limit = cpu_limit(root, proc_cgroup)
    if limit is None:
        return max(1, affinity)
    return max(1, min(affinity, math.floor(limit + 1e-9)))
