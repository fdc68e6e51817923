"""Every kind the operator touches, each listed once: where it lives, what the operator does with it, why.

Why one table: a kind used to be named in four places (the client's API resource table, the
watched children in kopf's settings, the renderer's child list and the RBAC rows), and they
drifted: the PodMonitor was rendered but not watched, so an edited PodMonitor waited for the
slow resync. Now each of those is derived from :data:`KINDS`:

* ``kube.RESOURCES``: the URL of every kind (``api_version``, ``plural``, ``namespaced``);
* ``settings.WATCHED_CHILDREN``: kopf watches the rows with ``watched`` (label-selected);
* ``render.children``: the rows with ``child``, in this order, each with one renderer that
  returns the object or None (None: the spec does not want it, so it is deleted);
* ``rbac.PERMISSIONS``: one row per kind with exactly ``verbs`` and ``why`` (subresources of
  the ModelDeployment are the only rows written by hand).

Adding a child kind is one row here and one renderer in ``render/``. Pure: no kopf, no client.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelserve_operator.api import API_VERSION, KIND, PLURAL

READ = ("get", "list", "watch")
# Server-side apply is a PATCH; when it creates the object the API server also checks "create".
APPLY = (*READ, "create", "patch")
# Children the spec can stop wanting (HPA, PDB, Ingress, PodMonitor) are also deleted.
MANAGE = (*APPLY, "delete")


@dataclass(frozen=True)
class Kind:
    """One kind: its API coordinates, its role in the operator, and the exact RBAC verbs."""

    api_version: str
    kind: str
    plural: str
    verbs: tuple[str, ...]
    why: str
    namespaced: bool = True
    child: bool = False
    """Rendered by ``render_children`` (owned by the ModelDeployment, applied server-side)."""
    watched: bool = False
    """kopf watches it (``managed-by`` label selector); an event pokes the owner's reconcile."""
    optional: bool = False
    """Its API exists only where a CRD provides it (discovered; absent: neither applied nor deleted)."""

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


KINDS: tuple[Kind, ...] = (
    Kind(
        API_VERSION, KIND, PLURAL, ("get", "list", "watch", "patch"),
        "kopf watches ModelDeployments and patches its progress/diff-base annotations; the "
        "reconciler reads one afresh (get) and lists them for the resync",
    ),
    # Children, in apply order: references stay valid on creation (the HPA after its target,
    # the Ingress after its Service).
    Kind("apps/v1", "Deployment", "deployments", APPLY,
         "the server pods' Deployment (removed by garbage collection)", child=True, watched=True),
    Kind("v1", "Service", "services", APPLY,
         "the Service in front of the pods (removed by garbage collection)", child=True, watched=True),
    Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", MANAGE,
         "the HPA when minReplicas < maxReplicas", child=True, watched=True),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", MANAGE,
         "the PDB when replicas can exceed 1", child=True, watched=True),
    Kind("networking.k8s.io/v1", "Ingress", "ingresses", MANAGE, "the optional Ingress",
         child=True, watched=True),
    Kind("monitoring.coreos.com/v1", "PodMonitor", "podmonitors", MANAGE,
         "the PodMonitor when Prometheus Operator exists (watched, so drift is undone at once)",
         child=True, watched=True, optional=True),
    # Read to explain the status, or written as a side effect.
    Kind("v1", "Pod", "pods", ("list", "watch"),
         "Degraded reasons (unschedulable, fetch failing, image pulls); the ready pods' IPs, asked for "
         "the execution provider they run (AcceleratorReady)", watched=True),
    Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims", ("get",),
         "a pvc:// model's claim must exist (else Degraded)"),
    Kind("v1", "Event", "events", ("create",),
         "Kubernetes Events on the ModelDeployment's condition changes"),
)  # fmt: skip

CHILDREN: tuple[Kind, ...] = tuple(k for k in KINDS if k.child)
WATCHED: tuple[Kind, ...] = tuple(k for k in KINDS if k.watched)


def kind_of(api_version: str, kind: str) -> Kind:
    """The row of ``kind`` in ``api_version``; KeyError when the operator does not handle it."""
    for row in KINDS:
        if (row.api_version, row.kind) == (api_version, kind):
            return row
    raise KeyError(f"the operator does not handle {kind} in {api_version}")


def _check(rows: tuple[Kind, ...]) -> None:
    """A watched kind must be listable and watchable; a child must be applicable."""
    for row in rows:
        if row.watched and not {"list", "watch"} <= set(row.verbs):
            raise ValueError(f"{row.kind} is watched but its verbs lack list/watch: {row.verbs}")
        if row.child and not {"get", "create", "patch"} <= set(row.verbs):
            raise ValueError(f"{row.kind} is a child but its verbs cannot apply it: {row.verbs}")
    keys = [(row.api_version, row.kind) for row in rows]
    if len(keys) != len(set(keys)):
        raise ValueError("a kind is listed twice")


_check(KINDS)
