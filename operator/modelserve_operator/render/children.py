"""``render_children``: the one entry point the reconciler calls.

It decides which optional children exist (HPA, PDB, Ingress, PodMonitor) and returns the
objects to apply plus the children to delete, in an order that keeps references valid on
creation (Deployment first, the HPA after its target, the Ingress after its Service).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelserve_operator.config import OperatorConfig
from modelserve_operator.render.common import DesiredChildren, context_for
from modelserve_operator.render.deployment import render_deployment
from modelserve_operator.render.hpa import render_hpa
from modelserve_operator.render.ingress import render_ingress
from modelserve_operator.render.pdb import render_pdb, wants_pdb
from modelserve_operator.render.podmonitor import PODMONITOR_API_VERSION, render_podmonitor
from modelserve_operator.render.service import render_service

# Every (apiVersion, kind) render_children may apply or delete: the RBAC table covers these.
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "Ingress"),
    (PODMONITOR_API_VERSION, "PodMonitor"),
)


def render_children(
    md: Mapping[str, Any], config: OperatorConfig, *, podmonitor_api: bool = False
) -> DesiredChildren:
    """Render every child of the ModelDeployment ``md`` (the whole object: metadata + spec).

    ``podmonitor_api``: whether ``monitoring.coreos.com/v1`` PodMonitor exists in the cluster;
    without it a PodMonitor is neither applied nor deleted.
    Raises ``pydantic.ValidationError`` for an invalid spec.
    """
    ctx = context_for(md, config)
    out = DesiredChildren()
    out.apply.append(render_deployment(ctx))
    out.apply.append(render_service(ctx))

    if ctx.spec.scaling.autoscaled:
        out.apply.append(render_hpa(ctx))
    else:
        out.delete.append(("autoscaling/v2", "HorizontalPodAutoscaler", ctx.name))

    if wants_pdb(ctx):
        out.apply.append(render_pdb(ctx))
    else:
        out.delete.append(("policy/v1", "PodDisruptionBudget", ctx.name))

    ingress = render_ingress(ctx)
    if ingress is not None:
        out.apply.append(ingress)
    else:
        out.delete.append(("networking.k8s.io/v1", "Ingress", ctx.name))

    if podmonitor_api:
        if ctx.spec.monitoring.pod_monitor:
            out.apply.append(render_podmonitor(ctx))
        else:
            out.delete.append((PODMONITOR_API_VERSION, "PodMonitor", ctx.name))
    return out
