"""Real pods: the operator in-cluster, a model fetched, served, rolled and broken on the real node.

Everything here runs for real on the local cluster's real node: the chart's operator image as a pod
under the chart's ServiceAccount, the server image's `modelserve fetch` init container downloading a
model pinned by sha256 from an HTTP server on the node's network, `modelserve serve` gating readiness
on load and warm-up, kube-proxy routing the Service's ClusterIP. Failures are read by the operator
from the real kubelet's container statuses. The GPU scenarios stay on the fake GPU nodes
(test_modeldeployment.py); these pods request little CPU so that a 2-core node holds them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import realpods
from e2e_support import (
    MD,
    ROOT,
    Kubectl,
    condition,
    pods_of,
    running,
    unique,
    wait_for,
    wait_ready,
)
from realpods import (
    REAL_NODE_SCHEDULING,
    ModelHost,
    dockerfile_uid,
    expected_outputs,
    real_md,
    service_ip,
    steady_load,
)

sys.path.insert(0, str(ROOT / "tests" / "server"))

sys.path.insert(0, str(ROOT))

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

# --- 1. served for real ---------------------------------------------------------------------------

CLIENT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
host, model = sys.argv[1], sys.argv[2]
rows = np.asarray(json.loads(sys.argv[3]), dtype=np.float32)
out = {}
for mode in ("json", "binary"):
    c = httpclient.InferenceServerClient(f"{host}:8080")
    i = httpclient.InferInput("x", list(rows.shape), "FP32")
    i.set_data_from_numpy(rows, binary_data=(mode == "binary"))
    o = httpclient.InferRequestedOutput("y", binary_data=(mode == "binary"))
    out[mode] = c.infer(model, [i], outputs=[o]).as_numpy("y").tolist()
g = grpcclient.InferenceServerClient(f"{host}:8081")
i = grpcclient.InferInput("x", list(rows.shape), "FP32")
i.set_data_from_numpy(rows)
out["grpc"] = g.infer(model, [i]).as_numpy("y").tolist()
print(json.dumps(out))
"""


def _client_results(rows: np.ndarray, run_client: Any) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float32) for k, v in json.loads(run_client(rows)).items()}


def test_model_fetched_served_and_answering_through_its_service(
        kube: Kubectl, real_ns: str, models: ModelHost, images: dict[str, str],
        tmp_path: Path) -> None:
    applied = time.monotonic()
    kube.apply(real_md("digits", models.url("mlp.onnx"), models.sha256("mlp.onnx")), namespace=real_ns)
    md = wait_ready(kube, "digits", real_ns)
    rows = np.random.default_rng(7).standard_normal((3, 64)).astype(np.float32)
    expected = expected_outputs(rows, models.root / "mlp.onnx")
    ip = service_ip(kube, "digits", real_ns)

    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    def host_http(binary: bool) -> np.ndarray:
        client = httpclient.InferenceServerClient(f"{ip}:8080", connection_timeout=10, network_timeout=30)
        tensor = httpclient.InferInput("x", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        output = httpclient.InferRequestedOutput("y", binary_data=binary)
        return np.asarray(client.infer("digits", [tensor], outputs=[output]).as_numpy("y"))

    # Right after Ready the ClusterIP may refuse for a moment until kube-proxy syncs: poll the first one.
    (first,) = wait_for("a first inference through the ClusterIP", lambda: _try(lambda: [host_http(False)]),
                        timeout=60, interval=0.3)
    realpods.FIGURES["apply_to_first_inference_s"] = time.monotonic() - applied
    np.testing.assert_allclose(first, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(host_http(True), expected, rtol=1e-5, atol=1e-5)
    grpc = grpcclient.InferenceServerClient(f"{ip}:8081")
    tensor = grpcclient.InferInput("x", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    np.testing.assert_allclose(grpc.infer("digits", [tensor]).as_numpy("y"), expected, rtol=1e-5, atol=1e-5)

    # The pod: fetched by the real init container, Ready only after the server loaded and warmed.
    (pod,) = [p for p in pods_of(kube, "digits", real_ns) if running(p)]
    fetch = pod["status"]["initContainerStatuses"][0]
    assert fetch["name"] == "fetch" and fetch["state"]["terminated"]["exitCode"] == 0, fetch
    server = pod["status"]["containerStatuses"][0]
    ready_at = condition(pod, "Ready")["lastTransitionTime"]  # type: ignore[index]
    assert ready_at >= server["state"]["running"]["startedAt"], (ready_at, server)
    logs = kube("logs", "-n", real_ns, pod["metadata"]["name"], "-c", "server").stdout
    assert "loaded model digits" in logs and "ready:" in logs, logs[-2000:]
    assert md["status"]["readyReplicas"] == 1
    # What is served, on the resource itself: the init container's check reported the signature.
    signature = wait_for("status.modelSignature", lambda: (
        kube.get(MD, "digits", real_ns)["status"].get("modelSignature")), timeout=60)
    (served,) = signature["models"]
    assert served["sha256"] == models.sha256("mlp.onnx"), signature
    assert [(t["name"], t["datatype"], t["shape"]) for t in served["inputs"]] == [("x", "FP32", [-1, 64])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in served["outputs"]] == [("y", "FP32", [-1, 10])]
    described = kube("describe", MD, "digits", "-n", real_ns).stdout
    assert "Model Signature" in described and models.sha256("mlp.onnx") in described, described

    # Pod Security `restricted` admitted it, and it really runs as the image's non-root user.
    uid = kube("exec", "-n", real_ns, pod["metadata"]["name"], "-c", "server", "--", "python", "-c",
               "import os; print(os.getuid(), os.getgid())").stdout.split()
    assert uid == [str(dockerfile_uid())] * 2, uid

    # A client pod in the cluster (tritonclient from the test virtualenv, mounted read-only) gets the
    # same answers over HTTP JSON, HTTP binary and gRPC.
    client_ns = unique("real-client")
    kube("create", "namespace", client_ns)
    try:
        site_packages = next((Path(sys.prefix) / "lib").glob("python3*/site-packages"))
        pod_spec = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
            "spec": {
                "nodeSelector": REAL_NODE_SCHEDULING["nodeSelector"],
                "tolerations": REAL_NODE_SCHEDULING["tolerations"],
                "containers": [{"name": "client", "image": images["SERVER_REF"], "imagePullPolicy": "Never",
                                "command": ["sleep", "3600"],
                                "env": [{"name": "PYTHONPATH", "value": "/client-site"}],
                                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                                "volumeMounts": [{"name": "site", "mountPath": "/client-site",
                                                  "readOnly": True}]}],
                "volumes": [{"name": "site", "hostPath": {"path": str(site_packages), "type": "Directory"}}],
                "terminationGracePeriodSeconds": 1,
            },
        }
        kube.apply(pod_spec, namespace=client_ns)
        kube("wait", "--for=condition=Ready", "pod/client", "-n", client_ns, "--timeout=180s", timeout=200)

        def run_client(batch: np.ndarray) -> str:
            return str(kube("exec", "-n", client_ns, "client", "--", "python", "-c", CLIENT,
                            ip, "digits", json.dumps(batch.tolist()),
                            timeout=120).stdout)

        for mode, got in _client_results(rows, run_client).items():
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=mode)
    finally:
        kube("delete", "namespace", client_ns, "--wait=false", check=False)


def _try(call: Any) -> Any:
    try:
        return call()
    except Exception:
        return None


# --- 2. a rollout and a pod deletion under load lose nothing -----------------------------------------

def test_rollout_and_pod_deletion_under_load_lose_no_request(
        kube: Kubectl, real_ns: str, models: ModelHost) -> None:
    kube.apply(real_md("rolling", models.url("mlp.onnx"), models.sha256("mlp.onnx"),
                       scaling={"minReplicas": 2, "maxReplicas": 2}), namespace=real_ns)
    wait_ready(kube, "rolling", real_ns)
    wait_for("2 ready replicas", lambda: (m := kube.get(MD, "rolling", real_ns))
             and m["status"].get("readyReplicas") == 2)
    ip = service_ip(kube, "rolling", real_ns)
    url = f"http://{ip}:8080/v2/models/rolling/infer"
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                   "data": [0.5] * 64}]}).encode()
    import requests
    wait_for("the Service answering", lambda: _try(lambda: requests.post(url, data=body, timeout=5).ok),
             timeout=60, interval=0.3)
    before = {p["metadata"]["name"] for p in pods_of(kube, "rolling", real_ns)}

    with steady_load(url, body) as load:
        started = time.monotonic()
        kube("patch", MD, "rolling", "-n", real_ns, "--type=merge", "-p",
             json.dumps({"spec": {"runtime": {"maxBatchSize": 8}}}))

        def rolled() -> bool:
            pods = pods_of(kube, "rolling", real_ns)
            names = {p["metadata"]["name"] for p in pods}
            return bool(len(pods) == 2 and not names & before and all(running(p) for p in pods))

        wait_for("the Deployment rolled to 2 new ready pods", rolled, timeout=180)
        wait_ready(kube, "rolling", real_ns)
        realpods.FIGURES["rolling_update_s"] = time.monotonic() - started
        # Old pods finish draining while load continues.
        wait_for("the old pods gone", lambda: not any(
            p["metadata"]["name"] in before for p in kube.get("pods", namespace=real_ns)), timeout=120)
        ok_rollout, failed_rollout = load.snapshot()

        victim = pods_of(kube, "rolling", real_ns)[0]["metadata"]["name"]
        kube("delete", "pod", "-n", real_ns, victim, "--wait=false")
        wait_for(f"pod {victim} gone and 2 ready pods again", lambda: (
            not kube.get("pod", victim, real_ns)
            and len([p for p in pods_of(kube, "rolling", real_ns) if running(p)]) == 2), timeout=180)
    deployment = kube.get("deployment", "rolling", real_ns)
    assert "--max-batch-size" in (args := deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args[args.index("--max-batch-size") + 1] == "8"
    assert not load.failures, f"{len(load.failures)} failed of {load.ok + len(load.failures)}: " \
                              f"{sorted(set(load.failures))[:5]}"
    assert ok_rollout > 100 and load.ok > ok_rollout, (ok_rollout, load.ok)
    assert failed_rollout == 0


# --- 3. failures, as a user sees them -----------------------------------------------------------

def _degraded(kube: Kubectl, name: str, ns: str, reasons: set[str], words: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        degraded = condition(kube.get(MD, name, ns), "Degraded")
        if degraded and degraded["status"] == "True" and degraded["reason"] in reasons \
                and words.lower() in degraded["message"].lower():
            return degraded
        return None
    return wait_for(f"{ns}/{name} Degraded with reason in {reasons} mentioning {words!r}", probe, timeout=240)


@pytest.mark.parametrize(("case", "reasons", "words"), [
    ("wrong-sha256", {"ModelFetchFailed"}, "sha256"),
    ("missing-url", {"ModelFetchFailed"}, "404"),
    ("not-onnx", {"ModelInvalid"}, "onnx"),
    ("warmup-fails", {"StartupError"}, "warm-up"),
    ("crash-loop", {"CrashLoopBackOff"}, "crash"),
])
def test_failures_are_degraded_with_the_kubelets_reason(
        kube: Kubectl, real_ns: str, models: ModelHost, case: str, reasons: set[str], words: str) -> None:
    spec: dict[str, Any] = {}
    if case == "wrong-sha256":
        md = real_md(case, models.url("mlp.onnx"), "0" * 64)
    elif case == "missing-url":
        md = real_md(case, models.url("no-such-model.onnx"))
    elif case == "not-onnx":
        md = real_md(case, models.url("not-onnx.onnx"), models.sha256("not-onnx.onnx"))
    elif case == "warmup-fails":
        md = real_md(case, models.url("warmup-fails.onnx"), models.sha256("warmup-fails.onnx"))
    else:
        spec["runtime"] = {"args": ["--no-such-flag"]}
        md = real_md(case, models.url("mlp.onnx"), models.sha256("mlp.onnx"), **spec)
    kube.apply(md, namespace=real_ns)
    degraded = _degraded(kube, case, real_ns, reasons, words)
    md_now = kube.get(MD, case, real_ns)
    assert condition(md_now, "Ready")["status"] == "False", md_now["status"]  # type: ignore[index]
    # The reason came from the real kubelet: a container of the pod really terminated non-zero.
    (pod,) = pods_of(kube, case, real_ns)
    statuses = [*(pod["status"].get("initContainerStatuses") or []),
                *(pod["status"].get("containerStatuses") or [])]
    exit_codes = [term.get("exitCode") for s in statuses
                  for term in ((s.get("state") or {}).get("terminated"),
                               (s.get("lastState") or {}).get("terminated")) if term]
    assert any(code not in (None, 0) for code in exit_codes), statuses
    print(f"{case}: {degraded['reason']}: {degraded['message']}")
