"""Scenarios 3, 4, 6, 7, 8, 9 and 11: a ModelDeployment's life on a real API server.

The real kube-controller-manager turns the operator's Deployment into ReplicaSets and pods, the real
kube-scheduler places them (GPU taints and `nvidia.com/gpu` capacity included) and kwok plays the
kubelet: bound pods become Running and Ready. No inference server runs inside these pods, so these
tests cover the control plane; the server itself is tested elsewhere.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from e2e_support import (
    MD,
    MODEL_URI,
    Kubectl,
    OperatorProcess,
    condition,
    modeldeployment,
    owned_by,
    pods_of,
    running,
    wait_for,
    wait_ready,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

def server_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


def test_gpu_modeldeployment_runs_on_gpu_nodes_and_reports_ready(
        kube: Kubectl, operator: OperatorProcess, ns: str) -> None:
    kube.apply(modeldeployment("resnet", resources={"gpu": 2},
                               scaling={"minReplicas": 2, "maxReplicas": 4}), namespace=ns)
    md = wait_ready(kube, "resnet", ns)

    # Children exist, each with a controller owner reference to the ModelDeployment.
    deployment = kube.get("deployment", "resnet", ns)
    for kind in ("deployment", "service", "horizontalpodautoscaler", "poddisruptionbudget"):
        child = kube.get(kind, "resnet", ns)
        assert child is not None, f"{kind} missing"
        assert owned_by(child, md), f"{kind} has no controller owner reference: {child['metadata']}"
    hpa = kube.get("horizontalpodautoscaler", "resnet", ns)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "resnet"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert server_container(deployment)["resources"]["limits"]["nvidia.com/gpu"] == "2"

    # The real scheduler put the pods on GPU nodes (the taint needs the operator's toleration) and
    # kwok made them Running and Ready.
    pods = wait_for("2 running pods", lambda: [p for p in pods_of(kube, "resnet", ns) if running(p)]
                    if len([p for p in pods_of(kube, "resnet", ns) if running(p)]) == 2 else None)
    gpu_nodes = {n["metadata"]["name"] for n in kube.get("nodes")
                 if int(n["status"].get("allocatable", {}).get("nvidia.com/gpu", "0")) > 0}
    assert gpu_nodes and {p["spec"]["nodeName"] for p in pods} <= gpu_nodes, (pods, gpu_nodes)

    # Status: URL, replicas, generation.
    md = wait_for("readyReplicas 2", lambda: (m := kube.get(MD, "resnet", ns))
                  and m["status"].get("readyReplicas") == 2 and m)
    assert md["status"]["url"] == f"http://resnet.{ns}.svc:8080/v2/models/resnet"
    assert md["status"]["observedGeneration"] == md["metadata"]["generation"]
    assert condition(md, "Degraded")["status"] == "False"  # type: ignore[index]

    # `kubectl get md` shows the printer columns.
    table = kube("get", "md", "-n", ns).stdout.splitlines()
    header = table[0].split()
    for column in ("NAME", "MODEL", "READY", "REPLICAS", "URL", "AGE"):
        assert column in header, table
    row = dict(zip(header, table[1].split(), strict=False))
    assert row["NAME"] == "resnet" and row["READY"] == "True" and row["REPLICAS"] == "2", table
    assert row["URL"] == md["status"]["url"], table


def _server_side_dry_run(kube: Kubectl, obj: dict[str, Any], ns: str) -> str:
    """Server-side-apply `obj` in dry-run mode; returns kubectl's stderr (where Warning headers go)."""
    clean = {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
             "metadata": {"name": obj["metadata"]["name"], "namespace": ns,
                          "labels": obj["metadata"].get("labels", {})},
             "spec": obj["spec"]}
    proc = kube("apply", "--server-side", "--dry-run=server", "--force-conflicts",
                "--field-manager=e2e-pod-security", "-f", "-", stdin=json.dumps(clean))
    return proc.stderr


def test_restricted_namespace_admits_pods_without_pod_security_warnings(
        kube: Kubectl, operator: OperatorProcess, ns: str) -> None:
    kube("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted",
         "pod-security.kubernetes.io/warn=restricted", "pod-security.kubernetes.io/audit=restricted")
    kube.apply(modeldeployment("iris", resources={"gpu": 1}), namespace=ns)
    wait_ready(kube, "iris", ns)
    # Pods were admitted under `enforce=restricted` (a violating pod is refused at creation).
    wait_for("a running pod", lambda: [p for p in pods_of(kube, "iris", ns) if running(p)])
    events = kube.get("events", namespace=ns)
    refused = [e["message"] for e in events if e.get("reason") == "FailedCreate"]
    assert not refused, refused

    # The Deployment the operator applied draws no Pod Security warning (warn=restricted).
    deployment = kube.get("deployment", "iris", ns)
    warnings = _server_side_dry_run(kube, deployment, ns)
    assert "Warning" not in warnings and "PodSecurity" not in warnings, warnings

    # Control: the same check does report a violation, so the silence above means something.
    broken = json.loads(json.dumps(deployment))
    broken["metadata"]["name"] = "iris-broken"
    for container in broken["spec"]["template"]["spec"]["containers"]:
        container["securityContext"] = {"allowPrivilegeEscalation": True}
    warnings = _server_side_dry_run(kube, broken, ns)
    assert 'would violate PodSecurity "restricted' in warnings, warnings


def test_drift_in_children_is_undone(kube: Kubectl, operator: OperatorProcess, ns: str) -> None:
    kube.apply(modeldeployment("drift", scaling={"minReplicas": 2, "maxReplicas": 2}), namespace=ns)
    wait_ready(kube, "drift", ns)
    deployment = kube.get("deployment", "drift", ns)
    image = server_container(deployment)["image"]
    assert deployment["spec"]["replicas"] == 2

    # Someone deletes the Service: it comes back (a new object).
    old_uid = kube.get("service", "drift", ns)["metadata"]["uid"]
    kube("delete", "service", "drift", "-n", ns)
    wait_for("the Service to be recreated",
             lambda: (s := kube.get("service", "drift", ns)) and s["metadata"]["uid"] != old_uid)

    # Someone edits the Deployment's image and replicas: both are restored.
    patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "busybox:evil"},
             {"op": "replace", "path": "/spec/replicas", "value": 5}]
    kube("patch", "deployment", "drift", "-n", ns, "--type=json", "-p", json.dumps(patch))
    wait_for("image and replicas restored",
             lambda: (d := kube.get("deployment", "drift", ns))
             and server_container(d)["image"] == image and d["spec"]["replicas"] == 2 and d)
    wait_ready(kube, "drift", ns)


def test_spec_change_rolls_the_deployment(kube: Kubectl, operator: OperatorProcess, ns: str) -> None:
    kube.apply(modeldeployment("roll"), namespace=ns)
    wait_ready(kube, "roll", ns)
    before = kube.get("deployment", "roll", ns)
    new_uri = f"{MODEL_URI}?revision=2"
    assert new_uri not in json.dumps(before["spec"]["template"])

    kube("patch", MD, "roll", "-n", ns, "--type=merge",
         "-p", json.dumps({"spec": {"model": {"uri": new_uri}}}))

    def rolled() -> dict[str, Any] | None:
        d = kube.get("deployment", "roll", ns)
        done = (d["metadata"]["generation"] > before["metadata"]["generation"]
                and new_uri in json.dumps(d["spec"]["template"])
                and d["status"].get("observedGeneration") == d["metadata"]["generation"]
                and d["status"].get("updatedReplicas") == d["spec"]["replicas"]
                and d["status"].get("replicas") == d["spec"]["replicas"])
        return dict(d) if done else None

    wait_for("the Deployment to roll out the new model", rolled)
    md = wait_ready(kube, "roll", ns)
    assert md["metadata"]["generation"] >= 2
    # The old ReplicaSet is scaled down: every pod runs the new template.
    wait_for("only new pods", lambda: (pods := pods_of(kube, "roll", ns))
             and all(new_uri in json.dumps(p["spec"]) for p in pods) and pods)


def test_more_gpus_than_any_node_is_degraded_with_the_scheduler_reason(
        kube: Kubectl, operator: OperatorProcess, ns: str) -> None:
    kube.apply(modeldeployment("huge", resources={"gpu": 8}), namespace=ns)

    def degraded() -> dict[str, Any] | None:
        md = kube.get(MD, "huge", ns)
        cond = condition(md, "Degraded")
        return cond if cond and cond["status"] == "True" else None

    cond = wait_for("Degraded=True", degraded)
    assert "nvidia.com/gpu" in cond["message"], cond
    assert cond.get("reason"), cond
    md = kube.get(MD, "huge", ns)
    assert condition(md, "Ready")["status"] != "True"  # type: ignore[index]
    pods = pods_of(kube, "huge", ns)
    assert pods and all(p["status"]["phase"] == "Pending" and not p["spec"].get("nodeName") for p in pods)
    scheduled = condition(pods[0], "PodScheduled")
    assert scheduled and scheduled["reason"] == "Unschedulable", pods[0]["status"]


def test_deleting_the_modeldeployment_removes_every_child(
        kube: Kubectl, operator: OperatorProcess, ns: str) -> None:
    kube.apply(modeldeployment("gone", scaling={"minReplicas": 2, "maxReplicas": 3}), namespace=ns)
    wait_ready(kube, "gone", ns)
    wait_for("pods", lambda: pods_of(kube, "gone", ns))
    kube("delete", MD, "gone", "-n", ns, "--wait=true", "--timeout=120s", timeout=150)

    def all_gone() -> bool:
        left = []
        for kind in ("deployment", "replicaset", "pod", "service", "horizontalpodautoscaler",
                     "poddisruptionbudget"):
            left += [f"{kind}/{o['metadata']['name']}" for o in kube.get(kind, namespace=ns)]
        return not left

    wait_for("garbage collection of every child", all_gone)


def test_fixed_replicas_have_no_hpa_and_a_range_creates_one(
        kube: Kubectl, operator: OperatorProcess, ns: str) -> None:
    kube.apply(modeldeployment("fixed", scaling={"minReplicas": 2, "maxReplicas": 2}), namespace=ns)
    md = wait_ready(kube, "fixed", ns)
    assert kube.get("deployment", "fixed", ns)["spec"]["replicas"] == 2
    assert kube.get("horizontalpodautoscaler", "fixed", ns) is None

    kube("patch", MD, "fixed", "-n", ns, "--type=merge",
         "-p", json.dumps({"spec": {"scaling": {"minReplicas": 1, "maxReplicas": 3}}}))
    hpa = wait_for("the HPA", lambda: kube.get("horizontalpodautoscaler", "fixed", ns))
    assert owned_by(hpa, md)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    wait_ready(kube, "fixed", ns)

    kube("patch", MD, "fixed", "-n", ns, "--type=merge",
         "-p", json.dumps({"spec": {"scaling": {"minReplicas": 3, "maxReplicas": 3}}}))
    wait_for("the HPA to be deleted", lambda: kube.get("horizontalpodautoscaler", "fixed", ns) is None)
    wait_for("3 fixed replicas", lambda: kube.get("deployment", "fixed", ns)["spec"]["replicas"] == 3)
