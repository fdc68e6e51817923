"""The operator's permissions: one table, used by the chart, the client and the tests.

Why one table: the ClusterRole the chart installs (generated from :func:`cluster_role_rules`),
the reconciler's client (which checks every call with :func:`allows` before making it, so a
call that the chart would forbid fails in unit tests, not in production) and the tests that
compare the table with what the renderer produces all read :data:`PERMISSIONS`. No wildcards;
every row says why the operator needs it.

A kind the operator starts to use is a row of :data:`modelserve_operator.kinds.KINDS`; the
chart picks it up through the generated ClusterRole.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from modelserve_operator.api import GROUP, PLURAL
from modelserve_operator.kinds import APPLY, KINDS, MANAGE, READ

__all__ = ["APPLY", "MANAGE", "PERMISSIONS", "READ", "VERBS", "Permission", "allows", "cluster_role_rules"]

@dataclass(frozen=True)
class Permission:
    """One API group + resource (``sub/resource`` for subresources) with exact verbs."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    why: str


# Exactly what the code uses (tests/operator/test_reconcile_calls.py compares the two both ways):
# kopf runs with scanning disabled, no peering and no event posting, so it needs no access to
# namespaces, CRDs, peering objects or events; the reconciler discovers PodMonitor through the
# discovery endpoints, which every authenticated user may read. One row per kind comes from the
# kinds table (modelserve_operator.kinds); only the ModelDeployment's subresources are written here.
PERMISSIONS: tuple[Permission, ...] = (
    *(Permission(k.group, k.plural, k.verbs, k.why) for k in KINDS),
    Permission(GROUP, f"{PLURAL}/status", ("patch",), "write status (conditions, replicas, url)"),
    Permission(
        GROUP,
        f"{PLURAL}/finalizers",
        ("update",),
        "set owner references with blockOwnerDeletion on children (OwnerReferencesPermissionEnforcement)",
    ),
)

VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"})


def _validate(perms: Iterable[Permission]) -> None:
    for p in perms:
        if "*" in (p.api_group, p.resource) or "*" in p.verbs:
            raise ValueError(f"wildcard in permission {p}")
        unknown = set(p.verbs) - VERBS
        if unknown:
            raise ValueError(f"unknown verbs {sorted(unknown)} in {p}")


_validate(PERMISSIONS)


def allows(api_group: str, resource: str, verb: str, perms: Iterable[Permission] = PERMISSIONS) -> bool:
    """Whether the operator's role lets it ``verb`` ``resource`` (``plural`` or ``plural/sub``) in
    ``api_group`` (``""`` for the core API)."""
    return any(p.api_group == api_group and p.resource == resource and verb in p.verbs for p in perms)


def cluster_role_rules(perms: Iterable[Permission] = PERMISSIONS) -> list[dict[str, list[str]]]:
    """Kubernetes PolicyRules: one rule per (group, verb set), resources merged, stable order."""
    verbs_by_key: dict[tuple[str, str], set[str]] = {}
    for p in perms:
        verbs_by_key.setdefault((p.api_group, p.resource), set()).update(p.verbs)
    order = {
        verb: i for i, verb in enumerate(("get", "list", "watch", "create", "update", "patch", "delete"))
    }
    merged: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), verbs in verbs_by_key.items():
        key = (group, tuple(sorted(verbs, key=lambda v: (order.get(v, 99), v))))
        merged.setdefault(key, []).append(resource)
    return [
        {"apiGroups": [group], "resources": sorted(resources), "verbs": list(verbs)}
        for (group, verbs), resources in sorted(merged.items())
    ]
