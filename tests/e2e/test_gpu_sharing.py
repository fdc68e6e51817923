"""Issue 13 on a real API server: a MIG-resource pod schedules on the tainted GPU nodes, and the
AcceleratorReady condition is computed for real pods' metadata without ever inventing a fallback.

The fake GPU nodes (hack/cluster/nodes.py, or hack/kind-e2e.sh) carry the `nvidia.com/gpu=present:
NoSchedule` taint and advertise whole GPUs only. The MIG test advertises a MIG profile on one of them
for its own duration (an extended resource patched into node status, exactly as the NVIDIA device
plugin publishes it with the "mixed" MIG strategy) and removes it afterwards. Before issue 13 the
operator tolerated only the resource name (`nvidia.com/mig-1g.10gb`) and such a pod stayed Pending
on "untolerated taint {nvidia.com/gpu: present}".
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_support import (
    MD,
    Kubectl,
    OperatorProcess,
    condition,
    modeldeployment,
    pods_of,
    running,
    wait_for,
    wait_ready,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

MIG = "nvidia.com/mig-1g.10gb"
GPU_TAINT_KEY = "nvidia.com/gpu"


def _tainted(node: dict[str, Any]) -> bool:
    return any(t.get("key") == GPU_TAINT_KEY and t.get("effect") == "NoSchedule"
               for t in node["spec"].get("taints") or [])


@pytest.fixture
def mig_node(kube: Kubectl) -> Iterator[str]:
    """One GPU-tainted node that advertises 7 x nvidia.com/mig-1g.10gb while the test runs."""
    nodes = [n for n in kube.get("nodes") if _tainted(n)]
    if not nodes:
        pytest.skip(f"no node carries the {GPU_TAINT_KEY} NoSchedule taint")
    name = sorted(n["metadata"]["name"] for n in nodes)[0]
    path = MIG.replace("/", "~1")  # JSON pointer escaping of "/"
    fields = ("capacity", "allocatable")
    add = [{"op": "add", "path": f"/status/{field}/{path}", "value": "7"} for field in fields]
    patch = ("patch", "node", name, "--subresource=status", "--type=json", "-p")
    kube(*patch, json.dumps(add))
    wait_for(f"{MIG} allocatable on {name}",
             lambda: (kube.get("node", name)["status"].get("allocatable") or {}).get(MIG) == "7")
    try:
        yield name
    finally:
        remove = [{"op": "remove", "path": f"/status/{field}/{path}"} for field in fields]
        kube(*patch, json.dumps(remove), check=False)


def test_mig_pod_schedules_on_the_tainted_gpu_node(
        kube: Kubectl, operator: OperatorProcess, ns: str, mig_node: str) -> None:
    kube.apply(modeldeployment("mig", resources={"gpu": 1, "gpuResource": MIG}), namespace=ns)
    wait_ready(kube, "mig", ns)
    pods = wait_for("1 running pod", lambda: [p for p in pods_of(kube, "mig", ns) if running(p)] or None)
    (pod,) = pods
    # The only node with MIG capacity is a tainted GPU node: the real scheduler placed the pod there.
    assert pod["spec"]["nodeName"] == mig_node, pod["spec"].get("nodeName")
    assert {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    server = pod["spec"]["containers"][0]
    assert server["resources"]["limits"][MIG] == "1"
    assert "nvidia.com/gpu" not in server["resources"]["limits"]


def _reachable(pod: dict[str, Any]) -> bool:
    ip = pod["status"].get("podIP")
    if not ip:
        return False
    try:
        with urllib.request.urlopen(f"http://{ip}:8080/v2/health/live", timeout=2):
            return True
    except OSError:
        return False


def test_accelerator_condition_for_a_cpu_model(kube: Kubectl, operator: OperatorProcess, ns: str) -> None:
    kube.apply(modeldeployment("acc"), namespace=ns)
    wait_ready(kube, "acc", ns)
    (pod,) = wait_for("1 running pod", lambda: [p for p in pods_of(kube, "acc", ns) if running(p)] or None)

    def settled() -> dict[str, Any] | None:
        cond = condition(kube.get(MD, "acc", ns), "AcceleratorReady")
        return cond if cond and cond["reason"] != "Probing" else None

    cond = wait_for("AcceleratorReady settled", settled)
    if _reachable(pod):
        # A real server pod (kind, operator able to reach pod IPs): it runs on the CPU provider.
        assert (cond["status"], cond["reason"]) == ("True", "ProviderActive"), cond
        assert kube.get(MD, "acc", ns)["status"]["provider"] == "cpu"
    else:
        # kwok pods run no server: the condition says it cannot know, and never claims a fallback.
        assert (cond["status"], cond["reason"]) == ("Unknown", "MetadataUnavailable"), cond
        assert "provider" not in kube.get(MD, "acc", ns)["status"]
