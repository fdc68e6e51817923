"""Real-pod figures on the local cluster's real node (bench/RESULTS.md, "Real pods"); not a test.

What it measures, in one run, on the cluster `make cluster-up` started (real node + Prometheus):
  1. apply -> first successful inference through the Service (cold: fetch init container, load,
     warm-up, readiness, kube-proxy), for a ModelDeployment of the bench MLP;
  2. the rolling-update duration of a spec change (maxBatchSize) with 2 replicas;
  3. wrk req/s and p50/p99 through the ClusterIP against the same server image run directly on the
     host (`modelserve serve` from the virtualenv, same flags, same CPU): what the Service path costs.

    make cluster-up && .venv/bin/python bench/cluster_bench.py [--seconds 10] [--conc 8]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hack.cluster import local, realnode  # noqa: E402

from models import ensure_models  # noqa: E402
from run import CACHE, build_bodies, sample_input, wrk  # noqa: E402
from server_procs import free_port  # noqa: E402

NS = "bench-realpods"


def kubectl(layout: local.Layout, *args: str, stdin: str | None = None) -> str:
    return local.kubectl(layout, *args, stdin=stdin, timeout=300).stdout


def patch_spec(layout: local.Layout, spec: dict[str, Any]) -> None:
    """Merge-patch the bench ModelDeployment's spec, as a user's `kubectl patch` would."""
    kubectl(layout, "patch", "modeldeployment", "mlp", "-n", NS, "--type=merge", "-p",
            json.dumps({"spec": spec}))


def wait(what: str, probe: Any, timeout: float = 300, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"cluster_bench: timed out waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cluster", default=local.DEFAULT_NAME)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--conc", type=int, default=8)
    args = parser.parse_args(argv)
    layout = local.Layout.default(args.cluster)
    if not local.healthy(layout):
        raise SystemExit(f"cluster_bench: cluster {layout.name} is not up (make cluster-up)")
    refs = realnode.image_refs(layout.cache / "images")
    helm = [str(layout.cache / "bin" / "helm"), f"--kubeconfig={layout.kubeconfig}"]
    op_repo, op_tag = refs["OPERATOR_REF"].rsplit(":", 1)
    srv_repo, srv_tag = refs["SERVER_REF"].rsplit(":", 1)
    subprocess.run(
        [
            *helm,
            "upgrade",
            "--install",
            "modelserve",
            str(ROOT / "charts" / "modelserve"),
            "--namespace",
            "modelserve-system",
            "--create-namespace",
            "--set",
            f"operator.image.repository={op_repo}",
            "--set",
            f"operator.image.tag={op_tag}",
            "--set",
            f"server.image.repository={srv_repo}",
            "--set",
            f"server.image.tag={srv_tag}",
            "--set-string",
            r"operator.nodeSelector.modelserve\.io/real-node=true",
            "--set-json",
            "operator.tolerations=" + json.dumps([realnode.NODE_TOLERATION]),
            "--set",
            "operator.replicas=1",
            "--wait",
            "--timeout",
            "5m",
        ],
        check=True,
        capture_output=True,
    )
    specs = ensure_models(CACHE)
    spec = specs["mlp"]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(spec.path.parent))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    files = http.server.ThreadingHTTPServer((realnode.NODE_IP, 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    uri = f"http://{realnode.NODE_IP}:{files.server_address[1]}/{spec.path.name}"
    sha = hashlib.sha256(spec.path.read_bytes()).hexdigest()
    body = build_bodies(spec, sample_input(spec))["binary"]
    figures: dict[str, Any] = {}
    kubectl(layout, "delete", "namespace", NS, "--ignore-not-found", "--wait=true")
    kubectl(layout, "create", "namespace", NS)
    try:
        md = {
            "apiVersion": "serving.modelserve.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "mlp", "namespace": NS},
            "spec": {
                "model": {"uri": uri, "sha256": sha},
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                "scaling": {"minReplicas": 1, "maxReplicas": 1},
                "scheduling": {
                    "nodeSelector": {realnode.NODE_LABEL: "true"},
                    "tolerations": [realnode.NODE_TOLERATION],
                },
            },
        }
        started = time.monotonic()
        kubectl(layout, "apply", "-f", "-", stdin=json.dumps(md))
        ip = wait(
            "the Service",
            lambda: json.loads(kubectl(layout, "get", "svc", "mlp", "-n", NS, "-o", "json"))["spec"][
                "clusterIP"
            ],
        )
        url = f"http://{ip}:8080/v2/models/mlp/infer"

        def infer() -> bool:
            request = urllib.request.Request(url, body.path.read_bytes(), body.headers())
            with urllib.request.urlopen(request, timeout=5) as response:
                return bool(response.status == 200)

        wait("a first inference", infer)
        figures["apply_to_first_inference_s"] = round(time.monotonic() - started, 2)
        wrk(url, body, args.conc, 2)
        through_service = wrk(url, body, args.conc, args.seconds)

        # The same server on the host, same image contents (the virtualenv), same flags.
        port = free_port()
        host = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "modelserve"),
                "serve",
                "--model",
                f"mlp={spec.path}",
                "--host",
                "127.0.0.1",
                "--http-port",
                str(port),
                "--grpc-port",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait(
                "the host server",
                lambda: (
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status
                    == 200
                ),
            )
            host_url = f"http://127.0.0.1:{port}/v2/models/mlp/infer"
            wrk(host_url, body, args.conc, 2)
            on_host = wrk(host_url, body, args.conc, args.seconds)
        finally:
            host.terminate()
            host.wait(timeout=60)
        figures["clusterip"] = through_service
        figures["host"] = on_host

        def rps(result: dict[str, Any]) -> float:
            return float(result["requests"]) / (float(result["duration_us"]) / 1e6)

        figures["clusterip_rps"], figures["host_rps"] = round(rps(through_service)), round(rps(on_host))
        figures["clusterip_over_host_rps"] = round(rps(through_service) / rps(on_host), 3)

        # Rolling update with 2 replicas: patch, then wait for the rollout to finish.
        patch_spec(layout, {"scaling": {"minReplicas": 2, "maxReplicas": 2}})
        wait(
            "2 ready replicas",
            lambda: (
                json.loads(kubectl(layout, "get", "deploy", "mlp", "-n", NS, "-o", "json"))["status"].get(
                    "readyReplicas"
                )
                == 2
            ),
        )
        started = time.monotonic()
        patch_spec(layout, {"runtime": {"maxBatchSize": 8}})
        kubectl(layout, "rollout", "status", "deployment/mlp", "-n", NS, "--timeout=300s")
        figures["rolling_update_2_replicas_s"] = round(time.monotonic() - started, 2)
    finally:
        kubectl(layout, "delete", "namespace", NS, "--wait=false")
        files.shutdown()
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
