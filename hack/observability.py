"""The chart's observability bundle, rendered from the metric names in the code.

Why generated: the Grafana dashboard and the prometheus-adapter rules name metrics that are
declared elsewhere (``modelserve_server.metrics`` for the server, ``render/hpa.py`` for the
custom-metric names the operator's HPAs ask for). A renamed metric must break ``make generate``'s
drift test, not a dashboard panel in someone's cluster, so both files are written from here:

- ``charts/modelserve/files/dashboard.json``: per-model request rate, p50/p99 latency, queue
  and compute time, batch size, in-flight requests, replicas against the HPA's desired count
  (kube-state-metrics), GPU utilisation;
- ``charts/modelserve/files/prometheus-adapter-rules.yaml``: the adapter's ``rules`` exposing each
  of ``render/hpa.py``'s ``CUSTOM_METRICS`` per pod.
"""

from __future__ import annotations

import json
from typing import Any

import yaml


class _NoAliasDumper(yaml.SafeDumper):
    """Plain YAML for people and yamllint: never ``&id001`` anchors for repeated objects."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

DASHBOARD_UID = "modelserve-models"
SEL = 'namespace=~"$namespace", model=~"$model"'


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": expr,
            "legendFormat": legend, "refId": ref}


def _panel(pid: int, title: str, description: str, unit: str, targets: list[tuple[str, str]],
           x: int, y: int, w: int = 12, h: int = 8) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"fillOpacity": 10, "lineWidth": 1}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom",
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
    }


def _quantiles(metric: str) -> list[tuple[str, str]]:
    return [
        (f"histogram_quantile({q}, sum by (model, le) "
         f"(rate({metric}_bucket{{{SEL}}}[$__rate_interval])))", f"{{{{model}}}} p{int(q * 100)}")
        for q in (0.5, 0.99)
    ]


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard (schema of Grafana 10/11), as a dict."""
    rate = "[$__rate_interval]"
    panels = [
        _panel(1, "Request rate", "Finished inference requests per second, by model and status code "
               "(HTTP and gRPC together).", "reqps",
               [(f"sum by (model, code) (rate(modelserve_requests_total{{{SEL}}}{rate}))",
                 "{{model}} {{code}}")], 0, 0),
        _panel(2, "Latency p50 / p99", "Time from a decoded request to its result (queue + compute).", "s",
               _quantiles("modelserve_request_duration_seconds"), 12, 0),
        _panel(3, "Queue time p50 / p99", "Time requests wait in the dynamic-batching queue.", "s",
               _quantiles("modelserve_queue_duration_seconds"), 0, 8),
        _panel(4, "Compute time p50 / p99", "ONNX Runtime execution time of the batch a request ran in.", "s",
               _quantiles("modelserve_compute_duration_seconds"), 12, 8),
        _panel(5, "Batch size", "Rows per executed batch: mean and p99. Mean near 1 under load means "
               "requests are not being batched.", "short",
               [(f"sum by (model) (rate(modelserve_batch_size_sum{{{SEL}}}{rate})) / "
                 f"sum by (model) (rate(modelserve_batch_size_count{{{SEL}}}{rate}))", "{{model}} mean"),
                (f"histogram_quantile(0.99, sum by (model, le) "
                 f"(rate(modelserve_batch_size_bucket{{{SEL}}}{rate})))", "{{model}} p99")], 0, 16),
        _panel(6, "In-flight requests", "Requests accepted and not yet answered: total, and the average per "
               "pod that the HPA's inflight metric targets.", "short",
               [(f"sum by (model) (modelserve_inflight_requests{{{SEL}}})", "{{model}} total"),
                (f"avg by (model) (modelserve_inflight_requests{{{SEL}}})", "{{model}} per pod")], 12, 16),
        _panel(7, "Replicas vs HPA desired",
               "Ready pods of each model's Deployment against the HPA's current "
               "and desired replicas (kube-state-metrics; the Deployment and HPA carry the "
               "ModelDeployment's name).", "short",
               [('sum by (deployment) (kube_deployment_status_replicas_ready'
                 '{namespace=~"$namespace", deployment=~"$model"})', "{{deployment}} ready"),
                ('sum by (horizontalpodautoscaler) (kube_horizontalpodautoscaler_status_current_replicas'
                 '{namespace=~"$namespace", horizontalpodautoscaler=~"$model"})',
                 "{{horizontalpodautoscaler}} HPA current"),
                ('sum by (horizontalpodautoscaler) (kube_horizontalpodautoscaler_status_desired_replicas'
                 '{namespace=~"$namespace", horizontalpodautoscaler=~"$model"})',
                 "{{horizontalpodautoscaler}} HPA desired")], 0, 24),
        _panel(8, "GPU utilisation", "NVML utilisation per pod and GPU (absent on CPU-only models).",
               "percentunit",
               [('avg by (pod, gpu) (modelserve_gpu_utilization_ratio{namespace=~"$namespace", '
                 'pod=~"$model-.*"})', "{{pod}} gpu {{gpu}}")], 12, 24),
        _panel(9, "GPU memory used", "NVML memory in use per pod and GPU, against the total.", "bytes",
               [('max by (pod, gpu) (modelserve_gpu_memory_used_bytes{namespace=~"$namespace", '
                 'pod=~"$model-.*"})', "{{pod}} gpu {{gpu}} used"),
                ('max by (pod, gpu) (modelserve_gpu_memory_total_bytes{namespace=~"$namespace", '
                 'pod=~"$model-.*"})', "{{pod}} gpu {{gpu}} total")], 0, 32),
        _panel(10, "Models ready", "Model versions loaded and warmed, per model (sum over pods).", "short",
               [(f"sum by (model, version) (modelserve_model_ready{{{SEL}}})", "{{model}} v{{version}}")],
               12, 32),
    ]
    variables = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source",
         "current": {}, "hide": 0},
        {"name": "namespace", "type": "query", "label": "Namespace",
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": {"query": "label_values(modelserve_model_ready, namespace)", "refId": "namespace"},
         "definition": "label_values(modelserve_model_ready, namespace)",
         "includeAll": True, "multi": True, "refresh": 2, "current": {}, "hide": 0},
        {"name": "model", "type": "query", "label": "Model",
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": {"query": 'label_values(modelserve_model_ready{namespace=~"$namespace"}, model)',
                   "refId": "model"},
         "definition": 'label_values(modelserve_model_ready{namespace=~"$namespace"}, model)',
         "includeAll": True, "multi": True, "refresh": 2, "current": {}, "hide": 0},
    ]
    return {
        "uid": DASHBOARD_UID,
        "title": "modelserve / models",
        "description": "Per-model traffic, latency, batching, autoscaling and GPU use of modelserve servers.",
        "tags": ["modelserve", "inference"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": panels,
    }


def render_dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"


def adapter_rules() -> list[dict[str, Any]]:
    """prometheus-adapter ``rules`` for every custom metric the operator's HPAs can ask for."""
    from modelserve_operator.render.hpa import CUSTOM_METRICS, GPU_METRIC, INFLIGHT_METRIC, RPS_METRIC

    resources = {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}}
    by_name = {
        INFLIGHT_METRIC: {
            "seriesQuery": 'modelserve_inflight_requests{namespace!="",pod!=""}',
            "resources": resources,
            "name": {"matches": "^modelserve_inflight_requests$", "as": INFLIGHT_METRIC},
            "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
        },
        RPS_METRIC: {
            "seriesQuery": 'modelserve_requests_total{namespace!="",pod!=""}',
            "resources": resources,
            "name": {"matches": "^modelserve_requests_total$", "as": RPS_METRIC},
            "metricsQuery": "sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)",
        },
        GPU_METRIC: {
            "seriesQuery": 'modelserve_gpu_utilization_ratio{namespace!="",pod!=""}',
            "resources": resources,
            "name": {"matches": "^modelserve_gpu_utilization_ratio$", "as": GPU_METRIC},
            "metricsQuery": "avg(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
        },
    }
    missing = set(CUSTOM_METRICS.values()) - set(by_name)
    if missing:
        raise ValueError(f"no prometheus-adapter rule for the HPA metric(s) {sorted(missing)}")
    return [by_name[name] for name in CUSTOM_METRICS.values()]


def render_adapter_rules_yaml() -> str:
    header = (
        "# generated by make generate (hack/observability.py); do not edit by hand.\n"
        "# prometheus-adapter rules exposing the custom metrics the modelserve operator's HPAs use\n"
        "# (pods/<metric>, per pod, from the model servers' /metrics). Use as prometheus-adapter's\n"
        "# --config file, or put the list under the prometheus-adapter chart's rules.custom value.\n"
    )
    return header + yaml.dump({"rules": adapter_rules()}, Dumper=_NoAliasDumper, sort_keys=False, width=110)
