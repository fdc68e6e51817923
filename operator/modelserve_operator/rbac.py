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
# Server-side apply is a PATCH (it creates missing objects too); create is for plain POSTs.
MANAGE = (*READ, "create", "patch", "delete")


@dataclass(frozen=True)
class Permission:
    """One API group + resource (``sub/resource`` for subresources) with exact verbs."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    why: str


PERMISSIONS: tuple[Permission, ...] = (
    # The custom resource itself.
    Permission(
        GROUP,
        PLURAL,
        ("get", "list", "watch", "patch"),
        "watch ModelDeployments; kopf patches its progress/diff-base annotations and finalizers",
    ),
    Permission(GROUP, f"{PLURAL}/status", ("get", "patch"), "write status (conditions, replicas, url)"),
    Permission(
        GROUP,
        f"{PLURAL}/finalizers",
        ("update",),
        "set owner references with blockOwnerDeletion on children (OwnerReferencesPermissionEnforcement)",
    ),
    # Children (render_children), applied with server-side apply and deleted when unwanted.
    Permission("apps", "deployments", MANAGE, "the server pods' Deployment"),
    Permission("", "services", MANAGE, "the Service in front of the pods"),
    Permission("autoscaling", "horizontalpodautoscalers", MANAGE, "the HPA when minReplicas < maxReplicas"),
    Permission("policy", "poddisruptionbudgets", MANAGE, "the PDB when replicas can exceed 1"),
    Permission("networking.k8s.io", "ingresses", MANAGE, "the optional Ingress"),
    Permission(
        "monitoring.coreos.com", "podmonitors", MANAGE, "the PodMonitor when Prometheus Operator exists"
    ),
    # Reading the cluster to explain status.
    Permission("", "pods", ("list", "watch"), "Degraded reasons: unschedulable, fetch failing, image pulls"),
    Permission("apps", "replicasets", ("list", "watch"), "tell the current rollout's pods from old ones"),
    Permission(
        "", "persistentvolumeclaims", ("get",), "a pvc:// model's claim must exist (else Degraded)"
    ),
    Permission("", "events", ("create", "patch"), "Kubernetes Events on the ModelDeployment (core API)"),
    Permission("events.k8s.io", "events", ("create", "patch"), "Kubernetes Events (events.k8s.io API)"),
    # kopf's own needs.
    Permission("", "namespaces", ("list", "watch"), "kopf: discover namespaces when watching cluster-wide"),
    Permission(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        "kopf: scan resources and notice the CRD appear; detect the PodMonitor API",
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
