"""The HorizontalPodAutoscaler (autoscaling/v2), present when min < max.

Metrics (the names the HPA asks the custom-metrics API for; prometheus-adapter must expose
them under exactly these names, per pod, from the server's ``/metrics``):

- ``inflight`` -> Pods metric :data:`INFLIGHT_METRIC` (the server's gauge, averaged per pod);
- ``rps``      -> Pods metric :data:`RPS_METRIC` (adapter rule: ``rate(modelserve_requests_total[1m])``
  summed per pod, named with the adapter's usual ``_total`` -> ``_per_second`` rename);
- ``gpu``      -> Pods metric :data:`GPU_METRIC` (GPU utilisation 0..1 per pod; the target is
  given in percent and divided by 100);
- ``cpu``      -> Resource metric ``cpu`` (utilisation % of the request).
"""

from __future__ import annotations

from modelserve_operator.render.common import Obj, RenderContext

INFLIGHT_METRIC = "modelserve_inflight_requests"
RPS_METRIC = "modelserve_requests_per_second"
GPU_METRIC = "modelserve_gpu_utilization_ratio"

CUSTOM_METRICS: dict[str, str] = {"inflight": INFLIGHT_METRIC, "rps": RPS_METRIC, "gpu": GPU_METRIC}
"""spec.scaling.metric -> custom (Pods) metric name, for the chart's prometheus-adapter rules."""

DEFAULT_TARGETS: dict[str, float] = {"inflight": 4, "rps": 20, "cpu": 70, "gpu": 70}
"""Target per pod when spec.scaling.target is empty."""


def quantity(value: float) -> str:
    """A float as a Kubernetes quantity string, exact to the milli-unit (0.7 -> "700m")."""
    milli = round(value * 1000)
    if milli <= 0:
        milli = 1
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def metric_spec(metric: str, target: float) -> Obj:
    if metric == "cpu":
        return {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": max(1, round(target))},
            },
        }
    value = target / 100 if metric == "gpu" else target
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": CUSTOM_METRICS[metric]},
            "target": {"type": "AverageValue", "averageValue": quantity(value)},
        },
    }


def render_hpa(ctx: RenderContext) -> Obj | None:
    """The HPA, or None when the replica count is fixed (min == max) or zero."""
    scaling = ctx.spec.scaling
    if not scaling.autoscaled:
        return None
    target = scaling.target if scaling.target is not None else DEFAULT_TARGETS[scaling.metric]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": ctx.metadata(),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": ctx.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [metric_spec(scaling.metric, target)],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds,
                    "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
                },
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Percent", "value": 100, "periodSeconds": 30},
                        {"type": "Pods", "value": 4, "periodSeconds": 30},
                    ],
                },
            },
        },
    }
