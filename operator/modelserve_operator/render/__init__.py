"""Pure rendering: a ModelDeployment and the operator configuration in, Kubernetes objects out.

No kopf, no kubernetes client here (an import-linter contract enforces it): every function is
deterministic, so golden tests and property tests cover what the operator applies, and the
reconciler only does I/O with the result.

One module per child kind (deployment, service, hpa, pdb, ingress, podmonitor), plus
``labels`` and ``common``; ``render_children`` in ``children`` puts them together.
"""

from modelserve_operator.render.children import CHILD_KINDS, render_children
from modelserve_operator.render.common import DesiredChildren, model_name_for, selector_for, url_for

__all__ = ["CHILD_KINDS", "DesiredChildren", "model_name_for", "render_children", "selector_for", "url_for"]
