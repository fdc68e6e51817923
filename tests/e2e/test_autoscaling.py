"""The autoscaling loop, for real: pods scraped, the adapter serving the chart's rules, the HPA scaling.

Real server pods on the real node export `modelserve_inflight_requests`; the local cluster's Prometheus
scrapes them by their annotations; prometheus-adapter, run with exactly
`charts/modelserve/files/prometheus-adapter-rules.yaml`, serves them as `custom.metrics.k8s.io`; the
real kube-controller-manager's HPA controller scales the operator's Deployment. Load goes from the
host to the Service's ClusterIP and every request is counted: none may fail while pods come and go.
The ModelDeployment's `MetricsAvailable` condition says whether the HPA's metric really arrives.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import realpods
from e2e_support import MD, ROOT, Kubectl, condition, pods_of, running, wait_for, wait_ready
from hack.cluster.monitoring import SCRAPE_INTERVAL_S
from realpods import ModelHost, real_md, service_ip, steady_load

from modelserve_operator.quantity import parse_quantity

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

DASHBOARD = ROOT / "charts" / "modelserve" / "files" / "dashboard.json"
GPU_ONLY = ("modelserve_gpu_",)
"""Dashboard series only a GPU pod exports (NVML); proved by bench/gpu/run.sh step 6, not here."""


def prometheus_query(cluster_dir: Path, expr: str) -> list[dict[str, Any]]:
    port = json.loads((cluster_dir / "realnode" / "monitoring.json").read_text())["prometheus"]
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def custom_metric(kube: Kubectl, ns: str, metric: str) -> list[dict[str, Any]]:
    raw = kube("get", "--raw", f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{ns}/pods/*/{metric}",
               check=False)
    return list(json.loads(raw.stdout).get("items", [])) if raw.returncode == 0 else []


def hpa_replicas(kube: Kubectl, name: str, ns: str) -> tuple[int, int]:
    hpa = kube.get("horizontalpodautoscaler", name, ns) or {}
    status = hpa.get("status", {})
    return int(status.get("currentReplicas", 0)), int(status.get("desiredReplicas", 0))


@pytest.mark.parametrize(("metric", "target", "series"), [
    ("inflight", 2, "modelserve_inflight_requests"),
    ("rps", 15, "modelserve_requests_per_second"),
])
def test_hpa_scales_up_under_load_and_down_after_without_a_failed_request(
        kube: Kubectl, real_ns: str, models: ModelHost, cluster: Any, metric: str, target: int,
        series: str) -> None:
    """In-flight requests per pod, then the request rate per pod (the chart's `_per_second` rule):
    each one's whole loop, each one's reaction times recorded for bench/RESULTS.md."""
    name = f"scaled-{metric}"
    kube.apply(real_md(name, models.url("slow.onnx"), models.sha256("slow.onnx"),
                       scaling={"minReplicas": 1, "maxReplicas": 3, "metric": metric, "target": target,
                                "scaleDownStabilizationSeconds": 20}), namespace=real_ns)
    wait_ready(kube, name, real_ns)
    ip = service_ip(kube, name, real_ns)
    url = f"http://{ip}:8080/v2/models/{name}/infer"
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32",
                                   "data": [0.25] * 256}]}).encode()
    import requests
    wait_for("the Service answering",
             lambda: realpods_try(lambda: requests.post(url, data=body, timeout=10).ok),
             timeout=60, interval=0.3)

    # The metric arrives: Prometheus has the series, the adapter serves it, the HPA reads it, and the
    # ModelDeployment says so.
    wait_for(f"{series} for {name}'s pod in custom.metrics.k8s.io",
             lambda: custom_metric(kube, real_ns, series), timeout=180)
    available = wait_for("MetricsAvailable=True", lambda: (c := condition(kube.get(MD, name, real_ns),
                                                                        "MetricsAvailable"))
                         and c["status"] == "True" and c, timeout=120)
    assert available["reason"], available

    # 1. Load: the metric per pod well above its target; the HPA adds pods, and they serve. A closed
    #    loop's in-flight count is bounded by its workers and shrinks when the client side is slow (a
    #    busy machine), so the load first ramps until the adapter itself serves twice the target, or
    #    the HPA has already scaled on what it read (its reading is then the figure recorded): the
    #    HPA's reason to scale is a value this test saw, not an assumption about the machine.
    with steady_load(url, body, workers=8) as load:
        step = time.monotonic()
        realpods.FIGURES[f"{metric}_metric_under_load"] = ramp_until_above(
            kube, name, real_ns, series, 2 * target, load)
        realpods.FIGURES[f"{metric}_load_workers"] = load.workers
        wait_for("HPA desired replicas >= 2", lambda: hpa_replicas(kube, name, real_ns)[1] >= 2, timeout=180,
                 explain=lambda: explain_hpa(kube, name, real_ns, series, load))
        realpods.FIGURES[f"{metric}_load_to_desired_s"] = time.monotonic() - step
        wait_for("a second pod Running and Ready",
                 lambda: len([p for p in pods_of(kube, name, real_ns) if running(p)]) >= 2, timeout=180)
        realpods.FIGURES[f"{metric}_load_to_second_pod_ready_s"] = time.monotonic() - step
        # Every ready pod takes traffic (its request counter moves in Prometheus).
        def all_serving() -> bool:
            ready = {p["metadata"]["name"] for p in pods_of(kube, name, real_ns) if running(p)}
            rate = f'sum by (pod) (rate(modelserve_requests_total{{namespace="{real_ns}"}}[30s]))'
            series = prometheus_query(cluster.kubeconfig.parent, rate)
            serving = {s["metric"]["pod"] for s in series if float(s["value"][1]) > 0}
            return len(ready) >= 2 and ready <= serving
        wait_for("every ready pod serving", all_serving, timeout=120)
        realpods.FIGURES[f"{metric}_load_to_second_pod_serving_s"] = time.monotonic() - step
        scaled_up_ok, scaled_up_failed = load.snapshot()
        p99 = sorted(load.latencies)[int(len(load.latencies) * 0.99) - 1] if load.latencies else 0.0
        realpods.FIGURES[f"{metric}_scale_up_p99_s"] = p99

        # 4. Every non-GPU query of the shipped dashboard returns data from this Prometheus under load.
        check_dashboard(cluster.kubeconfig.parent, real_ns, name)
    assert not load.failures, f"{len(load.failures)} failed during scale-up: {sorted(set(load.failures))[:5]}"
    assert scaled_up_failed == 0 and scaled_up_ok > 50, (scaled_up_ok, scaled_up_failed)

    # 2. Load drops to a trickle (well under the target): back to 1, nothing lost meanwhile.
    with steady_load(url, body, workers=1, warm=5, think_s=0.2) as trickle:  # ~5 requests/s
        step = time.monotonic()
        wait_for("scale-down to 1 ready pod", lambda: hpa_replicas(kube, name, real_ns) == (1, 1)
                 and len(pods_of(kube, name, real_ns)) == 1, timeout=300, interval=2)
        realpods.FIGURES[f"{metric}_scale_down_s"] = time.monotonic() - step
    assert not trickle.failures, f"{len(trickle.failures)} failed during scale-down: " \
                                 f"{sorted(set(trickle.failures))[:5]}"


RAMP_STEP_WORKERS = 8
RAMP_MAX_WORKERS = 32
RAMP_EVERY_S = 20.0
"""Add this many load workers each `RAMP_EVERY_S` while the metric is under its floor, up to the max."""


def metric_values(kube: Kubectl, name: str, ns: str, series: str) -> dict[str, float]:
    """What the adapter serves the HPA: `series` for each pod of `name`, as numbers (not quantities)."""
    pods = {p["metadata"]["name"] for p in pods_of(kube, name, ns)}
    return {item["describedObject"]["name"]: float(parse_quantity(item["value"]))
            for item in custom_metric(kube, ns, series) if item["describedObject"]["name"] in pods}


def hpa_metric(kube: Kubectl, name: str, ns: str) -> float | None:
    """The per-pod average the HPA itself last read (status.currentMetrics), if it has read one."""
    status = (kube.get("horizontalpodautoscaler", name, ns) or {}).get("status", {})
    for current in status.get("currentMetrics") or []:
        value = (current.get("pods") or {}).get("current", {}).get("averageValue")
        if value is not None:
            return float(parse_quantity(value))
    return None


def ramp_until_above(kube: Kubectl, name: str, ns: str, series: str, floor: float,
                     load: realpods.Load) -> float:
    """Grow `load` until the adapter serves `series` >= `floor` for every pod of `name`, two reads
    running, or until the HPA has already acted on what it read (desired >= 2): the per-pod value
    then falls as new pods share the load, and that is the scaling working, not a load too small.
    Returns the value seen: the adapter's lowest per-pod value, or the HPA's own reading."""
    deadline = time.monotonic() + 300
    last_step, streak = time.monotonic(), 0
    values: dict[str, float] = {}
    while True:
        values = metric_values(kube, name, ns, series)
        low = min(values.values(), default=0.0)
        streak = streak + 1 if values and low >= floor else 0
        if streak >= 2:
            return low
        if hpa_replicas(kube, name, ns)[1] >= 2:
            return hpa_metric(kube, name, ns) or low
        if time.monotonic() > deadline:
            raise AssertionError(f"{series} stayed under {floor} per pod with {load.workers} load workers: "
                                 f"{values}; load ok/failed {load.snapshot()}")
        if not streak and load.workers < RAMP_MAX_WORKERS and time.monotonic() - last_step >= RAMP_EVERY_S:
            load.add_workers(RAMP_STEP_WORKERS)
            last_step = time.monotonic()
        time.sleep(SCRAPE_INTERVAL_S)


def explain_hpa(kube: Kubectl, name: str, ns: str, series: str, load: realpods.Load) -> str:
    """Why an HPA did not act: its own status (metrics read, conditions), the adapter's values, the load."""
    status = (kube.get("horizontalpodautoscaler", name, ns) or {}).get("status", {})
    conditions = [f"{c['type']}={c['status']} {c.get('reason')}: {c.get('message')}"
                  for c in status.get("conditions", [])]
    return (f"HPA {name}: current/desired {status.get('currentReplicas')}/{status.get('desiredReplicas')}, "
            f"currentMetrics {json.dumps(status.get('currentMetrics'))}\n  " + "\n  ".join(conditions)
            + f"\nadapter {series}: {metric_values(kube, name, ns, series)}"
            + f"\nload: {load.workers} workers, ok/failed {load.snapshot()}")


def realpods_try(call: Any) -> Any:
    try:
        return call()
    except Exception:
        return None


def check_dashboard(cluster_dir: Path, ns: str, model: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    empty, checked = [], 0
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr or any(marker in expr for marker in GPU_ONLY):
                continue
            query = (expr.replace("$namespace", ns).replace("$model", model)
                     .replace("$__rate_interval", "1m"))
            checked += 1
            if not prometheus_query(cluster_dir, query):
                empty.append(f"{panel.get('title')}: {query}")
    assert checked >= 10, checked
    assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)


def test_metrics_available_reports_a_missing_adapter_and_recovers(
        kube: Kubectl, real_ns: str, models: ModelHost) -> None:
    """3. The APIService gone (the adapter "not installed"): the HPA cannot read its metric and the
    ModelDeployment says so with the HPA's own reason; restoring it clears the condition."""
    name = "blind"
    kube.apply(real_md(name, models.url("mlp.onnx"), models.sha256("mlp.onnx"),
                       scaling={"minReplicas": 1, "maxReplicas": 2, "metric": "inflight", "target": 4}),
               namespace=real_ns)
    wait_ready(kube, name, real_ns)
    wait_for("MetricsAvailable=True",
             lambda: (c := condition(kube.get(MD, name, real_ns), "MetricsAvailable"))
             and c["status"] == "True", timeout=180)
    saved = kube.get("apiservice", "v1beta1.custom.metrics.k8s.io")
    kube("delete", "apiservice", "v1beta1.custom.metrics.k8s.io")
    try:
        missing = wait_for("MetricsAvailable=False with the HPA's reason", lambda: (
            c := condition(kube.get(MD, name, real_ns), "MetricsAvailable")) and c["status"] == "False" and c,
            timeout=180)
        hpa = kube.get("horizontalpodautoscaler", name, real_ns)
        active = next(c for c in hpa["status"]["conditions"] if c["type"] == "ScalingActive")
        assert active["status"] == "False", active
        assert missing["reason"] == active["reason"], (missing, active)
        assert "custom metric" in missing["message"] or "metrics" in missing["message"].lower(), missing
        described = kube("describe", MD, name, "-n", real_ns).stdout
        assert "MetricsAvailable" in described and missing["reason"] in described, described
    finally:
        restore = {k: saved[k] for k in ("apiVersion", "kind", "spec")}
        restore["metadata"] = {"name": saved["metadata"]["name"]}
        kube.apply(restore)
    wait_for("MetricsAvailable=True again", lambda: (c := condition(kube.get(MD, name, real_ns),
                                                                    "MetricsAvailable"))
             and c["status"] == "True", timeout=240)
