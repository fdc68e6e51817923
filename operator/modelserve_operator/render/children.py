"""``render``: the one entry point the reconciler calls, walking the child kinds of the kinds table.

Each child kind (:data:`modelserve_operator.kinds.CHILDREN`, in apply order: Deployment first,
the HPA after its target, the Ingress after its Service) has exactly one renderer here, which
returns the object the spec wants, or None when the spec does not want that child: then it is
listed for deletion. A kind whose API is ``optional`` (PodMonitor) is neither applied nor
deleted when the cluster does not serve it. Adding a child is a row in the kinds table and a
renderer in this mapping; a test fails when the two disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from modelserve_operator.config import OperatorConfig
from modelserve_operator.kinds import CHILDREN
from modelserve_operator.render.common import DesiredChildren, Obj, RenderContext, context_for
from modelserve_operator.render.deployment import render_deployment
from modelserve_operator.render.hpa import render_hpa
from modelserve_operator.render.ingress import render_ingress
from modelserve_operator.render.pdb import render_pdb
from modelserve_operator.render.podmonitor import render_podmonitor
from modelserve_operator.render.service import render_service

Renderer = Callable[[RenderContext], Obj | None]

RENDERERS: dict[str, Renderer] = {
    "Deployment": render_deployment,
    "Service": render_service,
    "HorizontalPodAutoscaler": render_hpa,
    "PodDisruptionBudget": render_pdb,
    "Ingress": render_ingress,
    "PodMonitor": render_podmonitor,
}
"""kind -> its renderer, for every child kind of the kinds table (and nothing else)."""

# Every (apiVersion, kind) render may apply or delete: the RBAC table covers these.
CHILD_KINDS: tuple[tuple[str, str], ...] = tuple((k.api_version, k.kind) for k in CHILDREN)

if set(RENDERERS) != {k.kind for k in CHILDREN}:  # pragma: no cover - caught at import in every test
    raise RuntimeError(f"renderers {sorted(RENDERERS)} do not match the child kinds {CHILD_KINDS}")


def render(ctx: RenderContext, *, podmonitor_api: bool = False) -> DesiredChildren:
    """Every child of the parsed ModelDeployment ``ctx``: objects to apply, children to delete.

    ``podmonitor_api``: whether the cluster serves the optional kinds' API
    (``monitoring.coreos.com/v1``); without it such a kind is neither applied nor deleted.
    """
    out = DesiredChildren()
    for kind in CHILDREN:
        if kind.optional and not podmonitor_api:
            continue
        obj = RENDERERS[kind.kind](ctx)
        if obj is None:
            out.delete.append((kind.api_version, kind.kind, ctx.name))
        else:
            out.apply.append(obj)
    return out


def render_children(
    md: Mapping[str, Any], config: OperatorConfig, *, podmonitor_api: bool = False
) -> DesiredChildren:
    """Parse the whole ModelDeployment ``md`` (metadata + spec) and :func:`render` it.

    Raises ``pydantic.ValidationError`` for an invalid spec, ``ValueError`` for missing metadata.
    """
    return render(context_for(md, config), podmonitor_api=podmonitor_api)
