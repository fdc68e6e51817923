"""The PodDisruptionBudget (policy/v1), present when the replica count can exceed 1.

With a single replica a budget of ``minAvailable: 1`` would block every node drain, so none is
created then; ``unhealthyPodEvictionPolicy: AlwaysAllow`` lets a drain evict pods that are not
ready anyway (a crash-looping model must not hold a node hostage).
"""

from __future__ import annotations

from modelserve_operator.render.common import Obj, RenderContext


def wants_pdb(ctx: RenderContext) -> bool:
    scaling = ctx.spec.scaling
    return scaling.min_replicas >= 1 and scaling.max_replicas > 1


def render_pdb(ctx: RenderContext) -> Obj | None:
    """The PDB, or None when at most one replica can exist."""
    if not wants_pdb(ctx):
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": ctx.metadata(),
        "spec": {
            "minAvailable": ctx.spec.disruption.min_available,
            "selector": {"matchLabels": ctx.selector},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
