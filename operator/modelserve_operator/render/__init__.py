"""Pure rendering: a ModelDeployment and the operator configuration in, Kubernetes objects out.

No kopf, no kubernetes client here (an import-linter contract enforces it): every function is
deterministic, so golden tests and property tests cover what the operator applies, and the
reconciler only does I/O with the result.

One module per child kind (deployment, service, hpa, pdb, ingress, podmonitor), each returning
its object or None, plus ``labels`` and ``common`` (the parsed :class:`RenderContext`);
``render`` in ``children`` walks the child kinds of :mod:`modelserve_operator.kinds`.
"""

from modelserve_operator.render.children import CHILD_KINDS, render, render_children
from modelserve_operator.render.common import DesiredChildren, RenderContext, context_for

__all__ = ["CHILD_KINDS", "DesiredChildren", "RenderContext", "context_for", "render", "render_children"]
