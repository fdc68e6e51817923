"""The local cluster's real node: containerd + runc + CNI, a kubelet and kube-proxy, on this machine.

Beside kwok's fake GPU and CPU nodes, one real node runs real pods, so the e2e tests see the inference
server start in a pod, its init container fetch a model, its probes gate readiness and a Service route
to it through kube-proxy's iptables rules. The traps this machine sets (no CAP_SYS_RESOURCE, cgroup v1,
no systemd, no pullable pause image, no `dummy` link driver) and their fixes are in
../shared/FIELD-NOTES.md, "Real pods here"; each setting below that exists for one of them says so.

Everything is named and placed so that `down` can remove exactly what `up` made and nothing else:
  - two Linux bridges, `ms-node0` (the node's address; the control plane binds it too, so pods reach the
    API server) and `ms-cni0` (the pods' network, made by the CNI bridge plugin);
  - the daemons, started with setsid and recorded by PID (argv[0] checked, so a reused PID is never hit);
  - containerd's root, state and socket, kubelet's root dir and the CNI state, all under the cluster's
    directory or /run/modelserve/<cluster>;
  - kube-proxy's KUBE-* chains (removed with `kube-proxy --cleanup`) and the CNI plugins' per-pod rules;
  - two sysctls (ip_forward, bridge-nf-call-iptables), restored to the values found.
A machine has one real node at a time (kube-proxy owns the host's KUBE-* chains, kubelet its ports):
a second cluster asking for one is refused with the name of the cluster holding it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

NODE_NAME = "modelserve-node"
NODE_LABEL = "modelserve.io/real-node"
"""Label of the real node (value "true"): tests and the chart's operator pod select it."""
NODE_TAINT = {"key": NODE_LABEL, "value": "true", "effect": "NoSchedule"}
"""Taint of the real node: only pods that ask for it land there (the fast e2e tests' pods stay on the
fake nodes, where kwok plays them; a real kubelet would try to fetch their unreachable models)."""
NODE_TOLERATION = {"key": NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}
NODE_BRIDGE = "ms-node0"
NODE_IP = "10.237.0.1"
NODE_PREFIX = 24
CNI_BRIDGE = "ms-cni0"
POD_CIDR = "10.238.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
"""The `kubernetes` Service's ClusterIP (the first address of SERVICE_CIDR): in the API server's cert."""
KUBELET_PORT = 10250
KUBELET_HEALTHZ = 10248
PROXY_HEALTHZ = 10256
SYSCTLS = {"/proc/sys/net/ipv4/ip_forward": "1", "/proc/sys/net/bridge/bridge-nf-call-iptables": "1"}
CNI_CHAINS = ("CNI-FORWARD", "CNI-ADMIN")
LOG_TAIL = 40
CORE_COMPONENTS = ("containerd", "apiserver-forward", "kubelet", "kube-proxy")


class NodeError(RuntimeError):
    """The real node could not be prepared, started or stopped (message says which component, why)."""


def log_tail(path: Path, lines: int = LOG_TAIL) -> str:
    """The last `lines` lines of a component's log, framed, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text) + "\n--- end ---"


def wait_component(component: str, probe: Callable[[], bool], timeout: float, log: Path | None,
                   proc_alive: Callable[[], int | None] | None = None, interval: float = 0.5) -> float:
    """Wait for `probe()`; on timeout or death raise with the component, the wait and its log tail."""
    start = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            if probe():
                return time.monotonic() - start
        if proc_alive is not None:
            code = proc_alive()
            if code is not None:
                raise NodeError(f"{component} exited with status {code} after "
                                f"{time.monotonic() - start:.0f}s\n" + (log_tail(log) if log else ""))
        if time.monotonic() - start > timeout:
            tail = log_tail(log) if log else ""
            raise NodeError(f"{component} not healthy after {timeout:.0f}s\n{tail}")
        time.sleep(interval)


def _sh(args: Sequence[str], *, check: bool = True, timeout: float = 120, stdin: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, input=stdin,
                              check=False, env=env)
    except FileNotFoundError as exc:
        raise NodeError(f"{args[0]} is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise NodeError(f"timed out after {timeout:.0f}s: {' '.join(args)}") from exc
    if check and proc.returncode != 0:
        raise NodeError(f"`{' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip() or proc.stdout}")
    return proc


@dataclass(frozen=True)
class Node:
    """Where one cluster's real node keeps its files, and the binaries it runs."""

    cluster: str
    cluster_dir: Path
    cache: Path
    k8s_version: str

    @property
    def dir(self) -> Path:
        return self.cluster_dir / "realnode"

    @property
    def run_dir(self) -> Path:
        # Short and on tmpfs: the containerd socket path must stay under 108 bytes.
        return Path("/run/modelserve") / self.cluster

    @property
    def socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def logs(self) -> Path:
        return self.cluster_dir / "logs"

    @property
    def pki(self) -> Path:
        return self.cluster_dir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.cluster_dir / "kubeconfig.yaml"

    def binary(self, name: str) -> Path:
        return self.cache / f"k8s-{self.k8s_version}" / name

    @property
    def images_dir(self) -> Path:
        return self.cache / "images"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def pidfile(self, component: str) -> Path:
        return self.dir / "pids" / f"{component}.pid"


# --- preflight and the machine-wide lock --------------------------------------------------------

def image_refs(images_dir: Path) -> dict[str, str]:
    """The refs hack/images/build.sh last built (BASE_REF, PAUSE_REF, OPERATOR_REF, SERVER_REF)."""
    path = images_dir / "refs.env"
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def preflight(node: Node) -> None:
    """Fail with one line naming what is missing: Linux, root, a daemon, a plugin, the images."""
    if platform.system() != "Linux":
        raise NodeError(f"the real node needs Linux (this is {platform.system()})")
    if os.geteuid() != 0:
        raise NodeError("the real node needs root (containerd, kubelet, bridges and iptables)")
    missing = [tool for tool in ("containerd", "runc", "iptables", "ip", "ctr", "socat", "conntrack")
               if shutil.which(tool) is None]
    missing += [str(p) for p in (Path("/usr/lib/cni/bridge"), Path("/usr/lib/cni/host-local"))
                if not p.exists()]
    missing += [str(node.binary(b)) for b in ("kubelet", "kube-proxy")
                if not os.access(node.binary(b), os.X_OK)]
    if missing:
        raise NodeError("the real node is missing " + ", ".join(missing)
                        + " (`make setup` installs the packages, `make cluster-build` the binaries)")
    refs = image_refs(node.images_dir)
    absent = [k for k in ("PAUSE_REF", "OPERATOR_REF", "SERVER_REF") if not refs.get(k)]
    if absent:
        raise NodeError(f"no local images ({', '.join(absent)}): run `bash hack/images/build.sh`")


HOLDER = Path("/run/modelserve/real-node.holder")


def claim(node: Node) -> None:
    """Take the machine's one real node for `node.cluster`, or say which cluster holds it."""
    HOLDER.parent.mkdir(parents=True, exist_ok=True)
    with open(HOLDER.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        held = HOLDER.read_text().strip() if HOLDER.exists() else ""
        if held and held != node.cluster and (node.cluster_dir.parent / held).exists():
            raise NodeError(f"the machine's real node is held by cluster {held!r}: "
                            f"`python -m hack.cluster down --name {held}` first")
        HOLDER.write_text(node.cluster + "\n")


def release(node: Node) -> None:
    with contextlib.suppress(OSError):
        if HOLDER.read_text().strip() == node.cluster:
            HOLDER.unlink()


# --- daemons by PID ---------------------------------------------------------------------------

def _pid_of(node: Node, component: str) -> int | None:
    """The recorded PID of a component, only if it still runs the binary recorded with it."""
    path = node.pidfile(component)
    with contextlib.suppress(OSError, ValueError):
        pid_text, argv0 = path.read_text().split("\n", 1)
        pid = int(pid_text)
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode() == argv0.strip():
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            return None if state == "Z" else pid
    return None


def _spawn(node: Node, component: str, argv: Sequence[str],
           cwd: Path | None = None) -> subprocess.Popen[bytes]:
    node.pidfile(component).parent.mkdir(parents=True, exist_ok=True)
    node.logs.mkdir(parents=True, exist_ok=True)
    with open(node.log(component), "ab") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=cwd)
    node.pidfile(component).write_text(f"{proc.pid}\n{argv[0]}\n")
    return proc


def _stop(node: Node, component: str, grace: float = 20) -> None:
    pid = _pid_of(node, component)
    if pid is not None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while _pid_of(node, component) is not None and time.monotonic() < deadline:
                time.sleep(0.2)
            if _pid_of(node, component) is None:
                break
    node.pidfile(component).unlink(missing_ok=True)


def running_components(node: Node) -> list[str]:
    return [p.stem for p in sorted((node.dir / "pids").glob("*.pid")) if _pid_of(node, p.stem) is not None]


# --- configuration files ----------------------------------------------------------------------

def containerd_config(node: Node, pause_ref: str) -> str:
    """containerd 1.6 (config version 2): private root/state/socket, and this machine's two fixes."""
    return f"""\
version = 2
root = "{node.dir / 'containerd'}"
state = "{node.run_dir / 'containerd'}"
[grpc]
  address = "{node.socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{node.dir / 'containerd-opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  # No registry serves registry.k8s.io/pause here: the static one hack/images/build.sh made.
  sandbox_image = "{pause_ref}"
  # The machine's processes lack CAP_SYS_RESOURCE: without this every sandbox fails in runc create.
  restrict_oom_score_adj = true
  # Network namespaces under our own state dir, so `down` can find and remove exactly ours.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{node.dir / 'cni' / 'net.d'}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = false
"""


def cni_config(node: Node) -> str:
    """bridge (host-local IPAM, hairpin) + firewall + portmap + loopback, as one conflist."""
    return json.dumps({
        "cniVersion": "1.0.0",
        "name": "modelserve-pods",
        "plugins": [
            {"type": "bridge", "bridge": CNI_BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(node.dir / "cni" / "ipam")}},
            # The FORWARD policy may be DROP (dockerd sets it): the firewall plugin admits pod traffic.
            {"type": "firewall"},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }, indent=2) + "\n"


def kubelet_config(node: Node) -> str:
    return json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # No systemd here, and the host is cgroup v1, which kubelet 1.35 refuses unless told.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{node.socket}",
        "address": NODE_IP,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": KUBELET_HEALTHZ,
        # `kubectl logs/exec`: the API server presents the cluster's admin client cert, which the
        # kubelet checks against the cluster CA and authorizes by SubjectAccessReview.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(node.pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "failSwapOn": False,
        "resolvConf": "/etc/resolv.conf",
        "clusterDomain": "cluster.local",
        "registerNode": True,
        "serializeImagePulls": False,
        # Images are imported, never pulled: image GC must not delete them on a full disk.
        "imageGCHighThresholdPercent": 100,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "maxPods": 50,
        "shutdownGracePeriod": "0s",
    }, indent=2) + "\n"


def kube_proxy_config(node: Node) -> str:
    return json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(node.kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_CIDR,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{PROXY_HEALTHZ}",
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        # Leave the host's conntrack sysctls alone.
        "conntrack": {"maxPerCore": 0},
        # Pod -> ClusterIP -> pod on the same bridge: SNAT so replies come back through the host.
        "iptables": {"masqueradeAll": True},
    }, indent=2) + "\n"


# --- the network ------------------------------------------------------------------------------

def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def bridge_up() -> None:
    """The node's address on an empty bridge (the kernel has no `dummy` driver; loopback is refused)."""
    if not _link_exists(NODE_BRIDGE):
        _sh(["ip", "link", "add", NODE_BRIDGE, "type", "bridge"])
    addrs = _sh(["ip", "-o", "-4", "addr", "show", "dev", NODE_BRIDGE]).stdout
    if f"{NODE_IP}/{NODE_PREFIX}" not in addrs:
        _sh(["ip", "addr", "add", f"{NODE_IP}/{NODE_PREFIX}", "dev", NODE_BRIDGE])
    _sh(["ip", "link", "set", NODE_BRIDGE, "up"])


def _set_sysctls(node: Node) -> None:
    saved_path = node.dir / "sysctls.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    for path, value in SYSCTLS.items():
        p = Path(path)
        if not p.exists():
            if "bridge" in path:  # br_netfilter absent: masqueradeAll still covers same-bridge replies
                continue
            raise NodeError(f"{path} does not exist")
        saved.setdefault(path, p.read_text().strip())
        p.write_text(value)
    saved_path.write_text(json.dumps(saved))


def _restore_sysctls(node: Node) -> None:
    saved_path = node.dir / "sysctls.json"
    with contextlib.suppress(OSError, ValueError):
        for path, value in json.loads(saved_path.read_text()).items():
            with contextlib.suppress(OSError):
                Path(path).write_text(value)


def _iptables_cleanup() -> None:
    """Remove the CNI plugins' rules for our pod subnet, then their chains if nothing else uses them."""
    for table_chain in CNI_CHAINS:
        listed = _sh(["iptables", "-S", table_chain], check=False)
        if listed.returncode != 0:
            continue
        for rule in listed.stdout.splitlines():
            if rule.startswith("-A ") and (POD_CIDR.split("/")[0].rsplit(".", 2)[0] in rule
                                           or CNI_BRIDGE in rule):
                _sh(["iptables", "-D", *rule.split()[1:]], check=False)
    # CNI-FORWARD jumps to CNI-ADMIN; both are empty of ours now. Drop them when no rule is left.
    forward = _sh(["iptables", "-S", "CNI-FORWARD"], check=False)
    if forward.returncode == 0 and all(not r.startswith("-A ") or "CNI-ADMIN" in r
                                       for r in forward.stdout.splitlines()):
        _sh(["iptables", "-D", "FORWARD", "-m", "comment", "--comment", "CNI firewall plugin rules",
             "-j", "CNI-FORWARD"], check=False)
        _sh(["iptables", "-F", "CNI-FORWARD"], check=False)
        _sh(["iptables", "-X", "CNI-FORWARD"], check=False)
        admin = _sh(["iptables", "-S", "CNI-ADMIN"], check=False)
        if admin.returncode == 0 and not any(r.startswith("-A ") for r in admin.stdout.splitlines()):
            _sh(["iptables", "-X", "CNI-ADMIN"], check=False)


KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")
"""Chains the kubelet itself makes (kube-proxy --cleanup removes only kube-proxy's)."""


def _kubelet_chains_cleanup() -> None:
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            listed = _sh([tool, "-t", table, "-S"], check=False).stdout.splitlines()
            for rule in listed:
                parts = rule.split()
                if rule.startswith("-A ") and parts[-1] in KUBELET_CHAINS and parts[-2] == "-j":
                    _sh([tool, "-t", table, "-D", *parts[1:]], check=False)
            for chain in KUBELET_CHAINS:
                if f"-N {chain}" in listed:
                    _sh([tool, "-t", table, "-F", chain], check=False)
                    _sh([tool, "-t", table, "-X", chain], check=False)


def _mounts_under(*roots: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if any(target == str(r) or target.startswith(str(r) + "/") for r in roots):
            found.append(target)
    return sorted(found, key=len, reverse=True)


def _unmount_all(*roots: Path) -> None:
    for _ in range(3):
        targets = _mounts_under(*roots)
        if not targets:
            return
        for target in targets:
            _sh(["umount", "-l", target], check=False)


# --- up and down ------------------------------------------------------------------------------

def _ctr(node: Node, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return _sh(["ctr", "--address", str(node.socket), "--namespace", "k8s.io", *args], timeout=timeout)


def api_port(node: Node) -> int:
    """The API server's secure port, read from the cluster's kubeconfig (kwokctl picks it)."""
    import re
    match = re.search(r"server: https?://[^:]+:(\d+)", node.kubeconfig.read_text())
    if not match:
        raise NodeError(f"no API server port in {node.kubeconfig}")
    return int(match.group(1))


def _tcp_open(host: str, port: int) -> bool:
    import socket
    with socket.create_connection((host, port), timeout=2):
        return True


def _http_ok(url: str) -> bool:
    import urllib.request
    with urllib.request.urlopen(url, timeout=3) as response:
        return bool(response.status == 200)


def start(node: Node, *, timeout: float, kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """Start containerd, import the images, start kubelet and kube-proxy; wait for the node Ready."""
    preflight(node)
    refs = image_refs(node.images_dir)
    for d in (node.dir / "cni" / "net.d", node.dir / "cni" / "ipam", node.run_dir):
        d.mkdir(parents=True, exist_ok=True)
    _set_sysctls(node)
    (node.dir / "containerd.toml").write_text(containerd_config(node, refs["PAUSE_REF"]))
    (node.dir / "cni" / "net.d" / "10-modelserve.conflist").write_text(cni_config(node))
    (node.dir / "kubelet.json").write_text(kubelet_config(node))
    (node.dir / "kube-proxy.json").write_text(kube_proxy_config(node))

    if _pid_of(node, "containerd") is None:
        proc = _spawn(node, "containerd", [shutil.which("containerd") or "containerd",
                                           "--config", str(node.dir / "containerd.toml")])
        wait_component("containerd", lambda: _ctr(node, "version", timeout=10).returncode == 0, timeout,
                       node.log("containerd"), proc.poll)
    present = _ctr(node, "images", "ls", "-q").stdout.split()
    for key in ("PAUSE_REF", "OPERATOR_REF", "SERVER_REF"):
        ref = refs[key]
        if f"{ref}" in present or f"docker.io/{ref}" in present:
            continue
        tar = node.images_dir / (ref.replace("/", "_").replace(":", "_") + ".tar")
        started = time.monotonic()
        _ctr(node, "images", "import", str(tar))
        print(f"real node: imported {ref} in {time.monotonic() - started:.1f}s", flush=True)

    if _pid_of(node, "apiserver-forward") is None:
        # Pods reach the API server through the `kubernetes` Service, whose endpoint is the advertised
        # node address and the API server's port; the API server itself stays bound to loopback.
        port = api_port(node)
        proc = _spawn(node, "apiserver-forward", [
            shutil.which("socat") or "socat", f"TCP-LISTEN:{port},bind={NODE_IP},fork,reuseaddr",
            f"TCP:127.0.0.1:{port}"])
        wait_component("apiserver-forward (socat)", lambda: _tcp_open(NODE_IP, port), timeout,
                       node.log("apiserver-forward"), proc.poll)
    if _pid_of(node, "kubelet") is None:
        proc = _spawn(node, "kubelet", [
            str(node.binary("kubelet")), f"--config={node.dir / 'kubelet.json'}",
            f"--kubeconfig={node.kubeconfig}", f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
            f"--root-dir={node.dir / 'kubelet'}", f"--cert-dir={node.dir / 'kubelet-pki'}",
            f"--node-labels={NODE_LABEL}=true",
            f"--register-with-taints={NODE_TAINT['key']}={NODE_TAINT['value']}:{NODE_TAINT['effect']}",
            "--v=1"])
        wait_component("kubelet", lambda: _http_ok(f"http://127.0.0.1:{KUBELET_HEALTHZ}/healthz"), timeout,
                       node.log("kubelet"), proc.poll)
    if _pid_of(node, "kube-proxy") is None:
        proc = _spawn(node, "kube-proxy", [str(node.binary("kube-proxy")),
                                           f"--config={node.dir / 'kube-proxy.json'}", "--v=1"])
        wait_component("kube-proxy", lambda: _http_ok(f"http://127.0.0.1:{PROXY_HEALTHZ}/healthz"), timeout,
                       node.log("kube-proxy"), proc.poll)

    def node_ready() -> bool:
        got = kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if got.returncode != 0:
            return False
        conditions = json.loads(got.stdout)["status"].get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_component(f"node {NODE_NAME} (kubelet registration, CNI)", node_ready, timeout, node.log("kubelet"))


def stop(node: Node, *, kubectl: Callable[..., subprocess.CompletedProcess[str]] | None) -> None:
    """Stop what `start` started and remove what it made; safe to call on a half-started node."""
    # Add-ons started beside the node (hack/cluster/monitoring.py) go first; they record PIDs here too.
    for component in running_components(node):
        if component not in CORE_COMPONENTS:
            _stop(node, component)
    # Pods first, through the kubelet, so the CNI DEL and volume unmounts run the normal way.
    if kubectl is not None and _pid_of(node, "kubelet") is not None:
        with contextlib.suppress(Exception):
            kubectl("cordon", NODE_NAME, check=False, timeout=20)
            kubectl("delete", "pods", "--all-namespaces", "--field-selector", f"spec.nodeName={NODE_NAME}",
                    "--grace-period=1", "--wait=false", check=False, timeout=30)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                if not _ctr(node, "tasks", "ls", "-q", timeout=10).stdout.split():
                    break
                time.sleep(1)
    _stop(node, "kubelet")
    # Whatever is left (a kubelet that died): kill its tasks and remove the containers.
    if _pid_of(node, "containerd") is not None:
        with contextlib.suppress(NodeError):
            for task in _ctr(node, "tasks", "ls", "-q", timeout=20).stdout.split():
                _sh(["ctr", "--address", str(node.socket), "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL",
                     task], check=False, timeout=20)
            time.sleep(1)
            for container in _ctr(node, "containers", "ls", "-q", timeout=20).stdout.split():
                _sh(["ctr", "--address", str(node.socket), "-n", "k8s.io", "tasks", "delete", "-f",
                     container], check=False, timeout=20)
                _sh(["ctr", "--address", str(node.socket), "-n", "k8s.io", "containers", "delete", container],
                    check=False, timeout=20)
    _stop(node, "containerd")
    _stop(node, "apiserver-forward")
    # Leftover shims of our containerd (they outlive it by design) are found by their -address flag.
    for pid_dir in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = pid_dir.joinpath("cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(node.socket).encode() in argv:
                os.kill(int(pid_dir.name), signal.SIGKILL)
    if _pid_of(node, "kube-proxy") is not None or (node.dir / "kube-proxy.json").exists():
        _stop(node, "kube-proxy")
        if node.binary("kube-proxy").exists():
            _sh([str(node.binary("kube-proxy")), "--cleanup", f"--config={node.dir / 'kube-proxy.json'}"],
                check=False, timeout=60)
    # Network namespaces (containerd keeps them under its state dir), then mounts, bridges, rules.
    netns_dir = node.run_dir / "containerd" / "io.containerd.grpc.v1.cri" / "netns"
    _unmount_all(node.dir, node.run_dir)
    for ns in netns_dir.glob("*") if netns_dir.exists() else []:
        ns.unlink(missing_ok=True)
    for link in (CNI_BRIDGE, NODE_BRIDGE):
        if _link_exists(link):
            _sh(["ip", "link", "delete", link], check=False)
    # veths whose peer was in a removed namespace disappear with it; any left on our bridge went above.
    _iptables_cleanup()
    _kubelet_chains_cleanup()
    _restore_sysctls(node)
    _remove_cgroups()
    shutil.rmtree(node.run_dir, ignore_errors=True)
    release(node)


def leftovers(node: Node) -> list[str]:
    """What `stop` should have removed and did not: processes, links, chains, mounts (empty: clean)."""
    found = [f"process {c}" for c in running_components(node)]
    found += [f"link {link}" for link in (CNI_BRIDGE, NODE_BRIDGE) if _link_exists(link)]
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            rules = _sh([tool, "-t", table, "-S"], check=False).stdout.splitlines()
            found += [f"{tool} -t {table}: {r}" for r in rules
                      if r.startswith("-N KUBE-") or (CNI_BRIDGE in r) or (POD_CIDR in r)]
    found += [f"mount {m}" for m in _mounts_under(node.dir, node.run_dir)]
    for pid_dir in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = pid_dir.joinpath("cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(node.socket).encode() in argv:
                found.append(f"process containerd-shim {pid_dir.name}")
    return found


def _remove_cgroups() -> None:
    """kubelet's `kubepods` hierarchy under each v1 controller (and v2), deepest first, once empty."""
    root = Path("/sys/fs/cgroup")
    candidates = [root / "kubepods", root / "kubepods.slice"]
    candidates += [c / "kubepods" for c in root.iterdir() if c.is_dir()] if root.exists() else []
    for top in candidates:
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
