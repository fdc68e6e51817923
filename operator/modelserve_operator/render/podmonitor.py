"""The PodMonitor (monitoring.coreos.com/v1) for the Prometheus Operator.

Its kind is ``optional`` in the kinds table: rendered (or deleted) only when the reconciler
found the ``monitoring.coreos.com`` API in the cluster (``podmonitor_api``); the pods also
carry ``prometheus.io/*`` annotations for scrapers that use those instead.
"""

from __future__ import annotations

from modelserve_operator.render.common import METRICS_PATH, Obj, RenderContext

PODMONITOR_API_VERSION = "monitoring.coreos.com/v1"


def render_podmonitor(ctx: RenderContext) -> Obj | None:
    """The PodMonitor, or None when ``monitoring.podMonitor`` is off."""
    if not ctx.spec.monitoring.pod_monitor:
        return None
    return {
        "apiVersion": PODMONITOR_API_VERSION,
        "kind": "PodMonitor",
        "metadata": ctx.metadata(),
        "spec": {
            "selector": {"matchLabels": ctx.selector},
            "podMetricsEndpoints": [{"port": "http", "path": METRICS_PATH, "interval": "15s"}],
        },
    }
