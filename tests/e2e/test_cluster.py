"""The local cluster itself: what hack/cluster promises (loopback only, RBAC, admission, the nodes).

These checks read the processes kwokctl started (their PID files, /proc), so they apply to the local
cluster only; on a cluster named by MODELSERVE_E2E_KUBECONFIG they are skipped.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from e2e_support import ROOT, Cluster, Kubectl

sys.path.insert(0, str(ROOT))
from hack.cluster import local, realnode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _local_only(cluster: Cluster) -> Path:
    if not cluster.local:
        pytest.skip("checks the processes of the local cluster (hack/cluster)")
    return cluster.kubeconfig.parent


def _listening(pid: int) -> list[str]:
    """host:port of every TCP socket in LISTEN state that process `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(addr_hex)
            # /proc/net prints each 32-bit word in host (little-endian) order.
            raw = b"".join(struct.pack("<I", w) for w in struct.unpack(f">{len(raw) // 4}I", raw))
            found.append(f"{socket.inet_ntop(family, raw)}:{int(port_hex, 16)}")
    return found


def test_every_component_listens_on_loopback_only(cluster: Cluster) -> None:
    workdir = _local_only(cluster)
    pidfiles = sorted((workdir / "pids").glob("*.pid"))
    components = {p.stem for p in pidfiles}
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
            "kwok-controller"} <= components, components
    for pidfile in pidfiles:
        addresses = _listening(int(pidfile.read_text().strip()))
        assert addresses, f"{pidfile.stem} listens nowhere?"
        exposed = [a for a in addresses if not a.startswith("127.0.0.1:")]
        assert not exposed, f"{pidfile.stem} listens beyond loopback: {exposed}"


def test_api_server_uses_rbac_and_admission(cluster: Cluster, kube: Kubectl) -> None:
    workdir = _local_only(cluster)
    pid = int((workdir / "pids" / "kube-apiserver.pid").read_text())
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"--authorization-mode=Node,RBAC" in args, args
    assert not any(a.startswith(b"--admission-control=") for a in args), "admission plugins disabled"
    version = json.loads(kube("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    assert version.startswith("v1.35."), version
    # RBAC in force: a fresh ServiceAccount may do nothing.
    assert kube("auth", "can-i", "list", "pods", "--as=system:serviceaccount:default:default",
                check=False).stdout.strip() == "no"


def test_nodes_two_gpu_nodes_and_one_cpu_node(cluster: Cluster, kube: Kubectl) -> None:
    _local_only(cluster)
    nodes = {n["metadata"]["name"]: n for n in kube.get("nodes")}
    gpu = {name: n for name, n in nodes.items() if "nvidia.com/gpu" in n["status"]["allocatable"]}
    real = {name: n for name, n in nodes.items()
            if n["metadata"].get("labels", {}).get(realnode.NODE_LABEL) == "true"}
    cpu = {name: n for name, n in nodes.items() if name not in gpu and name not in real}
    assert len(gpu) == 2 and len(cpu) == 1, sorted(nodes)
    for node in gpu.values():
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]
        assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    for node in (*gpu.values(), *cpu.values()):
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"


def test_real_node_is_a_kubelet_on_containerd_and_listens_only_on_its_own_bridge(
        cluster: Cluster, kube: Kubectl) -> None:
    workdir = _local_only(cluster)
    node = kube.get("node", realnode.NODE_NAME)
    assert node is not None, "the local cluster has no real node"
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {}), "kwok manages the real node"
    info = node["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://"), info
    assert info["kubeletVersion"].startswith("v1.35."), info
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == realnode.NODE_IP, addresses
    pidfiles = sorted((workdir / "realnode" / "pids").glob("*.pid"))
    components = {p.stem for p in pidfiles}
    assert {"containerd", "kubelet", "kube-proxy", "apiserver-forward"} <= components, pidfiles
    for pidfile in pidfiles:
        pid = int(pidfile.read_text().split()[0])
        exposed = [a for a in _listening(pid)
                   if not a.startswith(("127.0.0.1:", f"{realnode.NODE_IP}:", "::1:"))]
        assert not exposed, f"{pidfile.stem} listens beyond loopback and {realnode.NODE_BRIDGE}: {exposed}"


@pytest.mark.slow
def test_two_clusters_started_at_the_same_moment_do_not_collide(cluster: Cluster) -> None:
    """Two `up`s at the same instant (as two test sessions would): distinct names, directories and
    ports, both healthy; the machine's one real node stays with its holder, and a third cluster that
    asks for it is refused at once with the holder's name instead of colliding with it."""
    _local_only(cluster)
    names = [f"twin{i}-p{os.getpid()}" for i in (1, 2)]
    third = f"twin3-p{os.getpid()}"
    env = {**os.environ, "MODELSERVE_REAL_NODE": "0"}

    def hack_cluster(*args: str, extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "hack.cluster", *args], cwd=ROOT, text=True,
                                env={**env, **(extra or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    layouts = [local.Layout.default(n, real_node=False) for n in names]
    try:
        procs = [hack_cluster("up", "--name", n) for n in names]  # no wait between the two
        outs = [p.communicate(timeout=840)[0] for p in procs]
        for name, proc, out in zip(names, procs, outs, strict=True):
            assert proc.returncode == 0, f"{name}:\n{out}"
        assert len({lay.cluster_dir for lay in layouts}) == 2
        servers = [yaml.safe_load(lay.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
                   for lay in layouts]
        assert len(set(servers)) == 2, servers
        for lay in layouts:
            assert local.healthy(lay), lay.name
        pids = [{p.name: p.read_text().strip() for p in (lay.cluster_dir / "pids").glob("*.pid")}
                for lay in layouts]
        assert pids[0] and pids[1] and not set(pids[0].values()) & set(pids[1].values()), pids

        holder = realnode.HOLDER.read_text().strip() if realnode.HOLDER.exists() else ""
        session = cluster.kubeconfig.parent.name
        if local.Layout.default(session).real_node:
            assert holder == session, f"the session cluster {session!r} should hold the real node: {holder!r}"
        if holder and local.Layout.default(holder).cluster_dir.exists():
            # Another cluster (the session's) has the real node: a third one asking for it is refused.
            proc = hack_cluster("up", "--name", third, extra={"MODELSERVE_REAL_NODE": "1"})
            out = proc.communicate(timeout=120)[0]
            assert proc.returncode == 1 and f"held by cluster {holder!r}" in out, out
            assert realnode.HOLDER.read_text().strip() == holder
            assert not local.Layout.default(third).kubeconfig.exists()
            assert local.healthy(local.Layout.default(holder))
    finally:
        for name in (*names, third):
            down = hack_cluster("down", "--name", name)
            down.communicate(timeout=300)
    for lay in layouts:
        assert not lay.cluster_dir.exists(), f"{lay.name} left {lay.cluster_dir}"
