"""``make demo-cluster``: the product's real path, on the local cluster's real node.

Why this exists: ``make demo`` shows the server; this shows what a user of the operator sees. It
brings up the local cluster (control plane + fake GPU nodes + the real node; the first run builds the
binaries and images, and each step says what it builds and how far it is), ``helm install``s the chart
with the images built from the Dockerfile, trains the digits classifier of ``make demo``, serves the
ONNX file over HTTP on the node's network, ``kubectl apply``s a ModelDeployment pinned by sha256,
prints ``kubectl get md`` until it turns Ready, sends the held-out digits through the Service's
ClusterIP and prints predictions beside the true labels, then tears the cluster down. A failure at any
step exits non-zero with the component's log tail.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "hack"))

from hack.cluster import local, realnode  # noqa: E402

CLUSTER = "modelserve-demo"
NAMESPACE = "demo"
READY_TIMEOUT_S = 300.0


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n== {text}")


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise SystemExit(f"demo-cluster: `{' '.join(args)}` exited {proc.returncode}:\n"
                         f"{proc.stdout}{proc.stderr}")
    return proc


def stream(args: list[str]) -> None:
    """Run a long build with its progress lines shown as they come."""
    say(f"$ {' '.join(args)}")
    proc = subprocess.run(args, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"demo-cluster: `{' '.join(args)}` exited {proc.returncode}")


def main() -> int:
    layout = local.Layout.default(CLUSTER)
    kubectl = [str(layout.kubectl), f"--kubeconfig={layout.kubeconfig}"]
    helm = [str(layout.cache / "bin" / "helm"), f"--kubeconfig={layout.kubeconfig}"]
    started = time.monotonic()
    step("1/6 binaries and images (cached after the first run; the first takes minutes)")
    stream(["bash", str(ROOT / "hack" / "cluster" / "build.sh")])
    stream(["bash", str(ROOT / "hack" / "images" / "build.sh")])
    refs = realnode.image_refs(layout.cache / "images")
    step("2/6 the local cluster: control plane, fake GPU nodes, and the real node")
    try:
        local.up(layout)
    except local.ClusterError as exc:
        raise SystemExit(f"demo-cluster: {exc}") from exc
    server = None
    try:
        say(run([*kubectl, "get", "nodes", "-o", "wide"]).stdout)
        step("3/6 helm install the chart (operator image, in-cluster, with its ServiceAccount and RBAC)")
        op_repo, op_tag = refs["OPERATOR_REF"].rsplit(":", 1)
        srv_repo, srv_tag = refs["SERVER_REF"].rsplit(":", 1)
        run([*helm, "upgrade", "--install", "modelserve", str(ROOT / "charts" / "modelserve"),
             "--namespace", "modelserve-system", "--create-namespace",
             "--set", f"operator.image.repository={op_repo}", "--set", f"operator.image.tag={op_tag}",
             "--set", f"server.image.repository={srv_repo}", "--set", f"server.image.tag={srv_tag}",
             "--set-string", r"operator.nodeSelector.modelserve\.io/real-node=true",
             "--set-json", "operator.tolerations=" + json.dumps([realnode.NODE_TOLERATION]),
             "--wait", "--timeout", "5m"])
        say(run([*kubectl, "get", "pods", "-n", "modelserve-system", "-o", "wide"]).stdout)

        step("4/6 train the digits classifier and serve the ONNX file on the node's network")
        from demo import train_and_convert
        workdir = Path(tempfile.mkdtemp(prefix="modelserve-demo-cluster-"))
        path, x_test, y_test, sk_pred = train_and_convert(workdir)
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(workdir))
        server = http.server.ThreadingHTTPServer((realnode.NODE_IP, 0), handler)
        server.RequestHandlerClass.log_message = lambda *a: None  # type: ignore[method-assign]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://{realnode.NODE_IP}:{server.server_address[1]}/{path.name}"
        sha = hashlib.sha256(path.read_bytes()).hexdigest()

        step("5/6 kubectl apply a ModelDeployment")
        md = {"apiVersion": "serving.modelserve.io/v1alpha1", "kind": "ModelDeployment",
              "metadata": {"name": "digits", "namespace": NAMESPACE},
              "spec": {"model": {"uri": url, "sha256": sha},
                       "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                       "scheduling": {"nodeSelector": {realnode.NODE_LABEL: "true"},
                                      "tolerations": [realnode.NODE_TOLERATION]}}}
        run([*kubectl, "create", "namespace", NAMESPACE])
        say(json.dumps(md["spec"], indent=2))
        run([*kubectl, "apply", "-f", "-"], input=json.dumps(md))
        applied = time.monotonic()
        last = ""
        while True:
            table = run([*kubectl, "get", "md", "-n", NAMESPACE]).stdout
            if table != last:
                say(table.rstrip())
                last = table
            got = json.loads(run([*kubectl, "get", "md", "digits", "-n", NAMESPACE, "-o", "json"]).stdout)
            ready = [c for c in got.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
            if ready and ready[0]["status"] == "True":
                break
            if time.monotonic() - applied > READY_TIMEOUT_S:
                say(run([*kubectl, "describe", "md", "digits", "-n", NAMESPACE]).stdout)
                raise SystemExit("demo-cluster: the ModelDeployment did not turn Ready")
            time.sleep(1)
        say(f"Ready {time.monotonic() - applied:.1f}s after kubectl apply")

        step("6/6 predictions through the Service's ClusterIP")
        svc = json.loads(run([*kubectl, "get", "service", "digits", "-n", NAMESPACE, "-o", "json"]).stdout)
        base = f"http://{svc['spec']['clusterIP']}:8080"
        body = {"inputs": [{"name": "pixels", "shape": list(x_test.shape), "datatype": "FP32",
                            "data": x_test.flatten().tolist()}], "outputs": [{"name": "label"}]}
        reply = None
        for _ in range(60):  # kube-proxy may need a moment after Ready
            try:
                request = urllib.request.Request(f"{base}/v2/models/digits/infer", json.dumps(body).encode(),
                                                 {"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=30) as response:
                    reply = json.loads(response.read())
                break
            except OSError:
                time.sleep(0.5)
        if reply is None:
            raise SystemExit(f"demo-cluster: {base} did not answer")
        pred = np.asarray(reply["outputs"][0]["data"], dtype=np.int64)
        say("first 20 held-out digits:")
        say("  true:      " + " ".join(str(v) for v in y_test[:20]))
        say("  predicted: " + " ".join(str(v) for v in pred[:20]))
        accuracy = float(np.mean(pred == y_test))
        agree = float(np.mean(pred == sk_pred))
        say(f"accuracy {accuracy:.3f} on {len(y_test)} images; agreement with scikit-learn {agree:.3f}")
        say(run([*kubectl, "get", "md,deployment,service,hpa,pdb,pods", "-n", NAMESPACE]).stdout)
        if agree < 0.99:
            raise SystemExit("demo-cluster: predictions through the cluster differ from scikit-learn's")
    finally:
        if server is not None:
            server.shutdown()
        if not os.environ.get("MODELSERVE_DEMO_KEEP_CLUSTER"):
            step("tearing the cluster down")
            local.down(layout)
    say(f"\ndemo-cluster: ok in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
