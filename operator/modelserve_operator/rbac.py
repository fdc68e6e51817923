"""The operator's permissions: one table, used by the chart, the client and the tests.

Why one table: the ClusterRole the chart installs (generated from :func:`cluster_role_rules`),
the reconciler's client (which checks every call with :func:`allows` before making it, so a
call that the chart would forbid fails in unit tests, not in production) and the tests that
compare the table with what the renderer produces all read :data:`PERMISSIONS`. No wildcards;
every row says why the operator needs it.

The reconciler may append rows for calls it adds; the chart picks them up through the
generated ClusterRole.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from modelserve_operator.api import GROUP, PLURAL

READ = ("get", "list", "watch")
# Server-side apply is a PATCH; when it creates the object the API server also checks "create".
APPLY = (*READ, "create", "patch")
# Children the spec can stop wanting (HPA, PDB, Ingress) are also deleted by the reconciler.
MANAGE = (*APPLY, "delete")


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
# discovery endpoints, which every authenticated user may read.
PERMISSIONS: tuple[Permission, ...] = (
    # The custom resource itself.
    Permission(
        GROUP,
        PLURAL,
        ("get", "list", "watch", "patch"),
        "kopf watches ModelDeployments and patches its progress/diff-base annotations; the "
        "reconciler reads one afresh (get) and lists them for the resync",
    ),
    Permission(GROUP, f"{PLURAL}/status", ("patch",), "write status (conditions, replicas, url)"),
    Permission(
        GROUP,
        f"{PLURAL}/finalizers",
        ("update",),
        "set owner references with blockOwnerDeletion on children (OwnerReferencesPermissionEnforcement)",
    ),
    # Children (render_children), applied with server-side apply; watched for drift.
    Permission("apps", "deployments", APPLY, "the server pods' Deployment (removed by garbage collection)"),
    Permission("", "services", APPLY, "the Service in front of the pods (removed by garbage collection)"),
    Permission("autoscaling", "horizontalpodautoscalers", MANAGE, "the HPA when minReplicas < maxReplicas"),
    Permission("policy", "poddisruptionbudgets", MANAGE, "the PDB when replicas can exceed 1"),
    Permission("networking.k8s.io", "ingresses", MANAGE, "the optional Ingress"),
    Permission(
        "monitoring.coreos.com",
        "podmonitors",
        ("get", "create", "patch", "delete"),
        "the PodMonitor when Prometheus Operator exists (not watched: the resync restores it)",
    ),
    # Reading the cluster to explain status.
    Permission("", "pods", ("list", "watch"), "Degraded reasons: unschedulable, fetch failing, image pulls"),
    Permission(
        "", "persistentvolumeclaims", ("get",), "a pvc:// model's claim must exist (else Degraded)"
    ),
    Permission("", "events", ("create",), "Kubernetes Events on the ModelDeployment's condition changes"),
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
