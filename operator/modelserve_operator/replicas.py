"""Who owns a Deployment's ``spec.replicas`` when an HPA scales it: the hand-over and seed patches.

Why pure: both patches are decisions about the live object (which field manager owns the
field, what the value is), and a wrong one costs pods; here they are tested without a cluster,
and the reconciler only applies what these functions return, under the handover field manager.

* **Hand-over.** The Deployment about to be applied leaves ``replicas`` out (the HPA owns it).
  If the operator's own apply still owns the field, the API server would *remove* it, and a
  removed ``replicas`` defaults to 1: a fixed-size model of 3 pods would drop to one pod until
  the HPA's next sync. So the current value is first applied by a second field manager (the
  handover Kubernetes documents for exactly this), which keeps owning it after the operator
  lets go; the HPA then adjusts it like any other value.
* **Seed.** A new HPA-scaled Deployment starts with the API default of 1 and reaches
  ``minReplicas`` only at the HPA controller's next sync (~15 s), during which the model would
  report Ready at 1/1 below its floor. The floor is set once, at creation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelserve_operator import drift
from modelserve_operator.render.common import Obj, RenderContext

FIELD_MANAGER = "modelserve"
"""The operator's server-side apply field manager."""
HANDOVER_FIELD_MANAGER = "modelserve-handover-to-hpa"
"""Keeps a Deployment's replicas when the operator stops applying them (an HPA takes over)."""


def hpa_owned(desired: Mapping[str, Any]) -> bool:
    """Is ``desired`` a Deployment whose replica count is left to an HPA?"""
    return desired.get("kind") == "Deployment" and "replicas" not in (desired.get("spec") or {})


def _replicas_patch(live: Mapping[str, Any], replicas: int) -> Obj:
    meta = live.get("metadata") or {}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": {"replicas": replicas},
    }  # fmt: skip


def handover_patch(live: Mapping[str, Any] | None) -> Obj | None:
    """The apply that keeps today's replica count, or None when the operator does not own it."""
    if live is None or not drift.applied_by(live, FIELD_MANAGER, ("spec", "replicas")):
        return None
    replicas = (live.get("spec") or {}).get("replicas")
    return None if replicas is None else _replicas_patch(live, int(replicas))


def seed_patch(ctx: RenderContext, live: Mapping[str, Any]) -> Obj | None:
    """The apply that starts a just-created Deployment at ``minReplicas``, or None when it is there."""
    minimum = ctx.spec.scaling.min_replicas
    if (live.get("spec") or {}).get("replicas") == minimum:
        return None
    return _replicas_patch(live, minimum)
