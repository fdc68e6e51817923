"""The simulated nodes of the local test cluster.

kwok manages any Node annotated `kwok.x-k8s.io/node: fake`: it keeps the node Ready (heartbeats and
leases) and, with its default stages, turns every pod the real kube-scheduler binds to the node into a
Running, Ready pod. The nodes therefore only need what the scheduler looks at: allocatable resources,
labels and taints. Two GPU nodes mirror what the NVIDIA device plugin and GPU feature discovery
publish on a real GPU node (`nvidia.com/gpu` in capacity, `nvidia.com/gpu.*` labels, and the
`nvidia.com/gpu=present:NoSchedule` taint GPU node pools carry), so the operator's automatic toleration
and the scheduler's "Insufficient nvidia.com/gpu" reason are exercised for real; one CPU node carries
no taint and takes CPU models.
"""

from __future__ import annotations

from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
GPUS_PER_NODE = 4
GPU_TAINT: dict[str, str] = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
GPU_NODES = ("kwok-gpu-0", "kwok-gpu-1")
CPU_NODES = ("kwok-cpu-0",)


def _node(name: str, *, labels: dict[str, str], resources: dict[str, str],
          taints: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/worker": "",
                "type": "kwok",
                **labels,
            },
        },
        "spec": {"taints": taints},
        "status": {
            "allocatable": resources,
            "capacity": resources,
        },
    }


def gpu_node(name: str) -> dict[str, Any]:
    """A node with four simulated NVIDIA GPUs, labelled and tainted like a real GPU pool node."""
    return _node(
        name,
        labels={
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.count": str(GPUS_PER_NODE),
            "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
            "nvidia.com/gpu.memory": "81920",
            "node.kubernetes.io/instance-type": "kwok-gpu-a100x4",
        },
        resources={
            "cpu": "32",
            "memory": "256Gi",
            "ephemeral-storage": "500Gi",
            "pods": "110",
            GPU_RESOURCE: str(GPUS_PER_NODE),
        },
        taints=[dict(GPU_TAINT)],
    )


def cpu_node(name: str) -> dict[str, Any]:
    """A plain CPU node without taints, large enough for the operator benchmark's hundreds of pods."""
    return _node(
        name,
        labels={"node.kubernetes.io/instance-type": "kwok-cpu-256"},
        resources={"cpu": "256", "memory": "1Ti", "ephemeral-storage": "2Ti", "pods": "500"},
        taints=[],
    )


def all_nodes() -> list[dict[str, Any]]:
    """Every node of the local cluster, GPU nodes first."""
    return [gpu_node(n) for n in GPU_NODES] + [cpu_node(n) for n in CPU_NODES]


def node_list() -> dict[str, Any]:
    """The nodes as one `v1/List`, ready for `kubectl apply -f -`."""
    return {"apiVersion": "v1", "kind": "List", "items": all_nodes()}
