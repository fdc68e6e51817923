"""The local cluster's metrics path: Prometheus scraping the real node's pods, prometheus-adapter
serving `custom.metrics.k8s.io` with exactly the rules file the chart ships.

Why real ones: the operator's HPAs scale on `modelserve_inflight_requests` and friends, which only
exist if a Prometheus scrapes the pods and an adapter turns the series into the custom-metrics API.
That path is where users of the anchors get "no metrics returned from custom metrics API"; the
autoscaling e2e tests prove it end to end here.

- Prometheus (Debian's package) finds pods the way a user's does, by the pods' `prometheus.io/scrape|
  port|path` annotations (the operator renders them), with the `namespace` and `pod` labels the adapter
  rules map to resources. Debian builds it without Kubernetes service discovery, so hack/cluster/podsd.py
  writes the same targets as file_sd. Only pods on the real node are scraped (kwok's fake pods have no
  server behind their IPs). It listens on 127.0.0.1.
- prometheus-adapter (built by hack/cluster/build.sh from its Go module) reads
  `charts/modelserve/files/prometheus-adapter-rules.yaml` unchanged, listens on the node bridge's
  address, and is registered as the `v1beta1.custom.metrics.k8s.io` APIService through a selector-less
  Service whose EndpointSlice points at it (the API server routes to the endpoint directly).

Both are started by PID like the real node's daemons and stopped by PID in `down`.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from hack.cluster import realnode

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "modelserve" / "files" / "prometheus-adapter-rules.yaml"
SCRAPE_INTERVAL_S = 5
"""Short so the tests' scale-up reacts in seconds; a user's Prometheus usually scrapes every 15-30 s."""
ADAPTER_NAMESPACE = "custom-metrics"
ADAPTER_SERVICE = "prometheus-adapter"
APISERVICE = "v1beta1.custom.metrics.k8s.io"


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def prometheus_config(node: realnode.Node) -> str:
    """Scrape the file_sd targets hack/cluster/podsd.py writes (Debian's Prometheus has no k8s SD)."""
    scrape = {
        "job_name": "modelserve-pods",
        "file_sd_configs": [{"files": [str(node.dir / "pod-targets.json")], "refresh_interval": "5s"}],
    }
    # kube-state-metrics: the Deployment and HPA replica series of the chart's dashboard. Its own
    # `namespace`, `deployment`, `horizontalpodautoscaler` labels are the objects', kept as they are.
    ksm = {"job_name": "kube-state-metrics", "honor_labels": True,
           "static_configs": [{"targets": [f"127.0.0.1:{ports(node)['kube-state-metrics']}"]}]}
    return json.dumps({"global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                                  "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
                       "scrape_configs": [scrape, ksm]}, indent=2) + "\n"


def registration(adapter_port: int) -> dict[str, Any]:
    """Namespace, selector-less Service + EndpointSlice to the adapter on the host, and the APIService."""
    return {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ADAPTER_NAMESPACE}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": ADAPTER_SERVICE, "namespace": ADAPTER_NAMESPACE},
         "spec": {"ports": [{"name": "https", "port": 443, "targetPort": adapter_port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": f"{ADAPTER_SERVICE}-host", "namespace": ADAPTER_NAMESPACE,
                      "labels": {"kubernetes.io/service-name": ADAPTER_SERVICE}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": [realnode.NODE_IP], "conditions": {"ready": True}}],
         "ports": [{"name": "https", "port": adapter_port, "protocol": "TCP"}]},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": APISERVICE},
         "spec": {"service": {"name": ADAPTER_SERVICE, "namespace": ADAPTER_NAMESPACE, "port": 443},
                  "group": "custom.metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": True,
                  "groupPriorityMinimum": 100, "versionPriority": 100}},
    ]}


def ports(node: realnode.Node) -> dict[str, int]:
    path = node.dir / "monitoring.json"
    return {k: int(v) for k, v in json.loads(path.read_text()).items()} if path.exists() else {}


def prometheus_url(node: realnode.Node) -> str:
    return f"http://127.0.0.1:{ports(node)['prometheus']}"


def adapter_binary(cache: Path, version: str) -> Path:
    return cache / f"prometheus-adapter-{version}" / "adapter"


def ksm_binary(cache: Path, version: str) -> Path:
    return cache / f"kube-state-metrics-{version}" / "kube-state-metrics"


def start(node: realnode.Node, *, adapter: Path, ksm: Path, kubectl_path: Path, timeout: float,
          kubectl: Any) -> None:
    """Start Prometheus and the adapter (idempotent) and register the APIService."""
    if shutil.which("prometheus") is None:
        raise realnode.NodeError("prometheus is not installed (`make setup` installs Debian's package)")
    if not adapter.exists():
        raise realnode.NodeError(f"{adapter} is missing (`make cluster-build` builds prometheus-adapter)")
    if not ksm.exists():
        raise realnode.NodeError(f"{ksm} is missing (`make cluster-build` builds kube-state-metrics)")
    known = ports(node) or {"prometheus": _free_port("127.0.0.1"), "adapter": _free_port(realnode.NODE_IP),
                            "kube-state-metrics": _free_port("127.0.0.1"),
                            "kube-state-metrics-telemetry": _free_port("127.0.0.1")}
    (node.dir / "monitoring.json").write_text(json.dumps(known))
    (node.dir / "prometheus.yml").write_text(prometheus_config(node))
    if realnode._pid_of(node, "pod-discovery") is None:
        (node.dir / "pod-targets.json").write_text("[]")
        realnode._spawn(node, "pod-discovery", [
            sys.executable, "-m", "hack.cluster.podsd", f"--kubectl={kubectl_path}",
            f"--kubeconfig={node.kubeconfig}", f"--node={realnode.NODE_NAME}",
            f"--out={node.dir / 'pod-targets.json'}"], cwd=ROOT)
    if realnode._pid_of(node, "kube-state-metrics") is None:
        proc = realnode._spawn(node, "kube-state-metrics", [
            str(ksm), f"--kubeconfig={node.kubeconfig}", "--host=127.0.0.1",
            f"--port={known['kube-state-metrics']}",
            "--telemetry-host=127.0.0.1", f"--telemetry-port={known['kube-state-metrics-telemetry']}",
            "--resources=deployments,horizontalpodautoscalers,pods"])
        realnode.wait_component("kube-state-metrics", lambda: realnode._http_ok(
            f"http://127.0.0.1:{known['kube-state-metrics']}/healthz"), timeout,
            node.log("kube-state-metrics"), proc.poll)
    if realnode._pid_of(node, "prometheus") is None:
        proc = realnode._spawn(node, "prometheus", [
            shutil.which("prometheus") or "prometheus", f"--config.file={node.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={node.dir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{known['prometheus']}", "--storage.tsdb.retention.time=2h"])
        realnode.wait_component("prometheus", lambda: realnode._http_ok(
            f"http://127.0.0.1:{known['prometheus']}/-/ready"), timeout, node.log("prometheus"), proc.poll)
    if realnode._pid_of(node, "prometheus-adapter") is None:
        proc = realnode._spawn(node, "prometheus-adapter", [
            str(adapter), f"--secure-port={known['adapter']}", f"--bind-address={realnode.NODE_IP}",
            f"--cert-dir={node.dir / 'adapter-certs'}", f"--lister-kubeconfig={node.kubeconfig}",
            f"--authentication-kubeconfig={node.kubeconfig}", f"--authorization-kubeconfig={node.kubeconfig}",
            f"--prometheus-url=http://127.0.0.1:{known['prometheus']}", f"--config={RULES}",
            "--metrics-relist-interval=10s", "--v=2"])
        realnode.wait_component("prometheus-adapter",
                                lambda: realnode._tcp_open(realnode.NODE_IP, known["adapter"]),
                                timeout, node.log("prometheus-adapter"), proc.poll)
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=modelserve-cluster", "-f", "-",
            stdin=json.dumps(registration(known["adapter"])))

    def available() -> bool:
        got = kubectl("get", "apiservice", APISERVICE, "-o", "json", check=False)
        if got.returncode != 0:
            return False
        conditions = json.loads(got.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

    realnode.wait_component(f"APIService {APISERVICE}", available, timeout, node.log("prometheus-adapter"))


def stop(node: realnode.Node) -> None:
    for component in ("prometheus-adapter", "prometheus", "kube-state-metrics", "pod-discovery"):
        realnode._stop(node, component)
