"""Bring the local test cluster up and down: real control-plane processes, simulated nodes.

The cluster is wired by kwokctl (`--runtime binary`), an existing engine, with binaries that
hack/cluster/build.sh compiled from the Go module proxy: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler of one pinned release, plus kwok, which simulates nodes and pod lifecycles. Nothing
is downloaded at run time: every binary kwokctl would otherwise fetch is given as a local path.
Everything binds 127.0.0.1 (kwokctl binds 0.0.0.0 unless its configuration says otherwise), the API
server authorizes with RBAC and runs the default admission plugins (Pod Security included), and an
audit log of write requests is kept so tests and benchmarks can count the operator's writes.

`up` is idempotent and reuses a healthy cluster; `down` runs `kwokctl delete cluster` and then makes
sure every PID kwokctl recorded for the cluster is gone, killing leftovers by PID.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from hack.cluster import monitoring, nodes, realnode

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_NAME = "modelserve-e2e"
KWOK_VERSION = "v0.8.0"
SESSION_SUFFIX = re.compile(r"-p(\d+)$")
"""Clusters named `<name>-p<pid>` belong to one test session (process) and are pruned once it is gone."""

# The audit log serves the tests and the benchmark: every request made by a ServiceAccount (the
# operator runs as one, so a 403 from a missing RBAC rule is visible) and every write by anyone.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
"""


class ClusterError(RuntimeError):
    """The local cluster could not be built, started, or reached."""


def _pinned(go_mod: Path, module: str) -> str:
    match = re.search(rf"^require {re.escape(module)} (v\S+)", go_mod.read_text(), re.MULTILINE)
    if not match:
        raise ClusterError(f"{go_mod} does not pin {module}")
    return match.group(1)


@dataclass(frozen=True)
class Layout:
    """Where the binaries and the cluster's state live (all under ~/.cache/modelserve by default)."""

    name: str
    cache: Path
    real_node: bool = True
    """Whether the cluster gets the machine's real node (containerd + kubelet) beside the fake ones."""

    @classmethod
    def default(cls, name: str = DEFAULT_NAME, *, real_node: bool | None = None) -> Layout:
        cache = os.environ.get("MODELSERVE_CACHE") or str(Path.home() / ".cache" / "modelserve")
        if real_node is None:
            real_node = os.environ.get("MODELSERVE_REAL_NODE", "1") != "0"
        return cls(name=name, cache=Path(cache), real_node=real_node)

    @property
    def node(self) -> realnode.Node:
        return realnode.Node(cluster=self.name, cluster_dir=self.cluster_dir, cache=self.cache,
                             k8s_version=self.k8s_version)

    @property
    def k8s_version(self) -> str:
        return _pinned(ROOT / "hack" / "k8s" / "go.mod", "k8s.io/kubernetes")

    @property
    def adapter_version(self) -> str:
        return _pinned(ROOT / "hack" / "cluster" / "adapter" / "go.mod", "sigs.k8s.io/prometheus-adapter")

    @property
    def ksm_version(self) -> str:
        go_mod = ROOT / "hack" / "cluster" / "kube-state-metrics" / "go.mod"
        return _pinned(go_mod, "k8s.io/kube-state-metrics/v2")

    @property
    def etcd_version(self) -> str:
        return _pinned(ROOT / "hack" / "cluster" / "etcd" / "go.mod", "go.etcd.io/etcd/server/v3")

    @property
    def kwok_workdir(self) -> Path:
        return self.cache / "clusters"

    @property
    def cluster_dir(self) -> Path:
        return self.kwok_workdir / "clusters" / self.name

    @property
    def kubeconfig(self) -> Path:
        return self.cluster_dir / "kubeconfig.yaml"

    @property
    def contexts(self) -> Path:
        """A kubeconfig of kwokctl's own (never ~/.kube/config) that it adds/removes the context in."""
        return self.kwok_workdir / f"{self.name}-contexts.yaml"

    @property
    def audit_log(self) -> Path:
        return self.cluster_dir / "logs" / "audit.log"

    @property
    def kubectl(self) -> Path:
        return self.cache / "bin" / "kubectl"

    @property
    def kwokctl(self) -> Path:
        return self.cache / f"kwok-{KWOK_VERSION}" / "kwokctl"

    def binaries(self) -> dict[str, Path]:
        k8s = self.cache / f"k8s-{self.k8s_version}"
        return {
            "kubeApiserverBinary": k8s / "kube-apiserver",
            "kubeControllerManagerBinary": k8s / "kube-controller-manager",
            "kubeSchedulerBinary": k8s / "kube-scheduler",
            "etcdBinary": self.cache / f"etcd-{self.etcd_version}" / "etcd",
            "kwokControllerBinary": self.cache / f"kwok-{KWOK_VERSION}" / "kwok",
            "kubectlBinary": self.kubectl,
        }

    def check_binaries(self) -> None:
        missing = [str(p) for p in [*self.binaries().values(), self.kwokctl] if not os.access(p, os.X_OK)]
        if missing:
            raise ClusterError(
                "missing binaries: " + ", ".join(missing)
                + " (run `make cluster-build`, i.e. `bash hack/cluster/build.sh`;"
                " `make setup` installs kubectl)"
            )


PORT_KEYS = ("kubeApiserverPort", "etcdPort", "etcdPeerPort", "kubeControllerManagerPort",
             "kubeSchedulerPort", "kwokControllerPort")
"""The kwokctl options of every port its components listen on (runtime binary, secure port)."""


def reserve_ports(layout: Layout) -> dict[str, int]:
    """Ports for the control plane, chosen here and recorded in `<name>-ports.json`.

    Why not kwokctl's own choice: its allocator scans down from 32767 for the first port nothing
    listens on yet, so two clusters created at the same moment get the same ports, and the second
    cluster's kube-controller-manager died with "address already in use" (seen when two `up`s
    started together). Here the kernel picks ephemeral ports, all held open until the set is chosen,
    under one machine-wide lock, skipping ports other clusters recorded and may not listen on yet.
    """
    layout.kwok_workdir.mkdir(parents=True, exist_ok=True)
    mine = layout.kwok_workdir / f"{layout.name}-ports.json"
    with open(layout.kwok_workdir / "ports.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        taken: set[int] = set()
        for other in layout.kwok_workdir.glob("*-ports.json"):
            if other != mine:
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    taken |= {int(v) for v in json.loads(other.read_text()).values()}
        held: list[socket.socket] = []
        ports: dict[str, int] = {}
        try:
            for key in PORT_KEYS:
                while key not in ports:
                    sock = socket.socket()
                    sock.bind(("127.0.0.1", 0))
                    held.append(sock)
                    if (port := int(sock.getsockname()[1])) not in taken:
                        ports[key] = port
        finally:
            for sock in held:
                sock.close()
        mine.write_text(json.dumps(ports))
    return ports


def kwokctl_config(layout: Layout, ports: dict[str, int] | None = None) -> str:
    """The KwokctlConfiguration document: local binaries only, loopback only, RBAC + admission on."""
    options: dict[str, object] = {
        **(ports or {}),
        "runtime": "binary",
        "bindAddress": "127.0.0.1",
        "kubeVersion": layout.k8s_version,
        "etcdVersion": layout.etcd_version.removeprefix("v"),
        "kwokVersion": KWOK_VERSION,
        "securePort": True,
        "kubeAuthorization": True,
        "kubeAdmission": True,
        "kubeAuditPolicy": str(layout.cache / "clusters" / f"{layout.name}-audit-policy.yaml"),
        "quietPull": True,
    }
    options.update({key: str(path) for key, path in layout.binaries().items()})
    pki = layout.cluster_dir / "pki"
    apiserver_args = [
        # One Service range decided here, so the `kubernetes` Service's ClusterIP is known (and in the
        # serving cert: pods' clients verify it).
        {"key": "service-cluster-ip-range", "value": realnode.SERVICE_CIDR},
        # `kubectl logs/exec` on the real node: the API server dials the kubelet at its InternalIP with
        # the cluster's admin client certificate.
        {"key": "kubelet-client-certificate", "value": str(pki / "admin.crt")},
        {"key": "kubelet-client-key", "value": str(pki / "admin.key")},
        {"key": "kubelet-preferred-address-types", "value": "InternalIP"},
        # API aggregation (custom.metrics.k8s.io from prometheus-adapter): kwokctl sets the proxy client
        # cert; the aggregated server needs the request-header CA and names to trust it, and the
        # aggregator routes to the APIService's endpoint address (a host process) directly.
        {"key": "requestheader-client-ca-file", "value": str(pki / "ca.crt")},
        # The CA also signs ordinary client certs: only the proxy client's (kwokctl's admin) may assert users.
        {"key": "requestheader-allowed-names", "value": "kwok-admin"},
        {"key": "requestheader-username-headers", "value": "X-Remote-User"},
        {"key": "requestheader-group-headers", "value": "X-Remote-Group"},
        {"key": "requestheader-extra-headers-prefix", "value": "X-Remote-Extra-"},
        {"key": "enable-aggregator-routing", "value": "true"},
    ]
    if layout.real_node:
        # The `kubernetes` Service's endpoint: the node bridge's address, where hack/cluster/realnode
        # forwards to the loopback-bound API server, so in-cluster clients (the operator pod) reach it.
        apiserver_args.append({"key": "advertise-address", "value": realnode.NODE_IP})
        options["kubeApiserverCertSANs"] = [realnode.KUBERNETES_SERVICE_IP, realnode.NODE_IP]
    doc = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": options,
        "componentsPatches": [
            # kwok fakes only the annotated fake nodes (with --manage-all-nodes it would fake the real one).
            {"name": "kwok-controller", "extraArgs": [
                {"key": "manage-all-nodes", "value": "false", "override": True},
                {"key": "manage-nodes-with-annotation-selector", "value": "kwok.x-k8s.io/node=fake"}]},
            {"name": "kube-apiserver", "extraArgs": apiserver_args},
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def _env(layout: Layout) -> dict[str, str]:
    env = dict(os.environ)
    env["KWOK_WORKDIR"] = str(layout.kwok_workdir)
    env["KUBECONFIG"] = str(layout.kubeconfig)
    # kwokctl looks for kubectl on PATH too; make sure it finds the pinned one first.
    env["PATH"] = f"{layout.kubectl.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(layout: Layout, args: Sequence[str], *, timeout: float = 120, stdin: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=timeout,
                              env=_env(layout), check=False)
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"timed out after {timeout:.0f}s: {' '.join(args)}") from exc
    if check and proc.returncode != 0:
        raise ClusterError(f"`{' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


def kubectl(layout: Layout, *args: str, timeout: float = 60, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the pinned kubectl against the local cluster as its admin."""
    return _run(layout, [str(layout.kubectl), f"--kubeconfig={layout.kubeconfig}", *args],
                timeout=timeout, stdin=stdin, check=check)


def healthy(layout: Layout) -> bool:
    """True when the API server answers /readyz for the cluster's kubeconfig."""
    if not layout.kubeconfig.exists():
        return False
    try:
        proc = kubectl(layout, "get", "--raw=/readyz", timeout=15, check=False)
    except ClusterError:
        return False
    return proc.returncode == 0 and proc.stdout.strip() == "ok"


CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok-controller")


def component_logs(layout: Layout, components: Sequence[str] = CONTROL_PLANE, lines: int = 25) -> str:
    """The tail of each named component's log (kwokctl and the real node write them to logs/)."""
    logs = layout.cluster_dir / "logs"
    return "\n".join(realnode.log_tail(logs / f"{c}.log", lines) for c in components)


def load_factor() -> float:
    """How much slower than a quiet machine this one is right now (>= 1): scales start-up budgets."""
    try:
        return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    except OSError:
        return 1.0


def _wait(what: str, probe: Callable[[], bool], timeout: float, interval: float = 1.0,
          layout: Layout | None = None, components: Sequence[str] = CONTROL_PLANE) -> float:
    """Wait for `probe`; a timeout names what was awaited, how long, and the components' log tails."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if probe():
            return time.monotonic() - start
        if layout is not None:
            _fail_if_exited(layout)
        time.sleep(interval)
    logs = ("\n" + component_logs(layout, components)) if layout is not None else ""
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what} "
                       f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores){logs}")


def _pids(layout: Layout) -> list[int]:
    """PIDs kwokctl recorded that still run one of this cluster's binaries (never a reused PID)."""
    pids = []
    for pidfile in sorted((layout.cluster_dir / "pids").glob("*.pid")):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text().strip())
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
            if argv0.startswith(str(layout.cluster_dir) + os.sep):
                pids.append(pid)
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is gone for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1].split()[0] == "Z":
            return False
    return True


@contextlib.contextmanager
def _locked(layout: Layout) -> Iterator[None]:
    """Serialise up/down of one cluster between concurrent invocations (two pytest runs, say)."""
    layout.kwok_workdir.mkdir(parents=True, exist_ok=True)
    with open(layout.kwok_workdir / f"{layout.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fail_if_exited(layout: Layout) -> None:
    """Raise at once (with the logs) when a control-plane component kwokctl started has exited: a
    wait for something it would do (readiness, lifted taints) can then never succeed."""
    for component in CONTROL_PLANE:
        pidfile = layout.cluster_dir / "pids" / f"{component}.pid"
        with contextlib.suppress(OSError, ValueError):
            if not _alive(int(pidfile.read_text().strip())):
                raise ClusterError(f"{component} exited during start-up\n" + component_logs(layout))


def _apiserver_up(layout: Layout) -> bool:
    """/readyz answers ok; raises at once (with the logs) when a control-plane component has exited."""
    if healthy(layout):
        return True
    _fail_if_exited(layout)
    return False


ATTEMPTS = 2
"""A control plane that does not come up is torn down and started once more before `up` fails."""


def _real_node_kubectl(layout: Layout) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, check: bool = True, timeout: float = 60,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return kubectl(layout, *args, check=check, timeout=timeout, stdin=stdin)
    return run


def _start_real_node(layout: Layout, timeout: float) -> None:
    started = time.monotonic()
    try:
        realnode.start(layout.node, timeout=timeout, kubectl=_real_node_kubectl(layout))
        print(f"cluster {layout.name}: real node {realnode.NODE_NAME} Ready in "
              f"{time.monotonic() - started:.1f}s", flush=True)
        started = time.monotonic()
        monitoring.start(layout.node, adapter=monitoring.adapter_binary(layout.cache, layout.adapter_version),
                         ksm=monitoring.ksm_binary(layout.cache, layout.ksm_version),
                         kubectl_path=layout.kubectl, timeout=timeout, kubectl=_real_node_kubectl(layout))
    except realnode.NodeError as exc:
        raise ClusterError(f"real node: {exc}") from exc
    print(f"cluster {layout.name}: Prometheus and prometheus-adapter ({monitoring.APISERVICE}) up in "
          f"{time.monotonic() - started:.1f}s", flush=True)


def up(layout: Layout, *, timeout: float = 300) -> bool:
    """Start the cluster (or reuse a healthy one); returns True when this call created it.

    Every wait's budget is `timeout` times the machine's current load factor, so a busy machine gets
    longer; a control plane that still does not answer is torn down and started again once; the final
    failure names the component, the wait, and the tails of the components' logs.
    """
    layout.check_binaries()
    if layout.real_node:
        try:
            realnode.preflight(layout.node)
        except realnode.NodeError as exc:
            raise ClusterError(f"real node: {exc} (MODELSERVE_REAL_NODE=0 starts the cluster without it)") \
                from exc
    with _locked(layout):
        budget = timeout * load_factor()
        if healthy(layout):
            if layout.real_node:
                _start_real_node(layout, budget)
            _ensure_nodes(layout, budget)
            return False
        if layout.cluster_dir.exists():  # stale state from a crashed run or a reboot
            _down_locked(layout)
        if layout.real_node:
            try:
                realnode.claim(layout.node)
                realnode.bridge_up()  # before kwokctl: its serving cert lists the host's addresses
            except realnode.NodeError as exc:
                raise ClusterError(f"real node: {exc}") from exc
        policy = layout.kwok_workdir / f"{layout.name}-audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        config = layout.kwok_workdir / f"{layout.name}-kwokctl.json"
        started = time.monotonic()
        for attempt in range(1, ATTEMPTS + 1):
            budget = timeout * load_factor()
            config.write_text(kwokctl_config(layout, reserve_ports(layout)))
            try:
                _run(layout, [str(layout.kwokctl), "create", "cluster", f"--name={layout.name}",
                              f"--config={config}", f"--kubeconfig={layout.contexts}",
                              f"--timeout={int(budget)}s"],
                     timeout=budget + 30)
                _wait("the API server's /readyz", lambda: _apiserver_up(layout), budget, layout=layout)
                break
            except ClusterError as exc:
                logs = component_logs(layout) if "--- last" not in str(exc) else ""
                _down_locked(layout, keep_real_node_claim=True)
                if attempt == ATTEMPTS:
                    if layout.real_node:
                        realnode.stop(layout.node, kubectl=None)
                    raise ClusterError(f"{exc}\n{logs}".rstrip()) from exc
                print(f"cluster {layout.name}: attempt {attempt} failed ({str(exc).splitlines()[0]}); "
                      "retrying", flush=True)
                if layout.real_node:
                    realnode.bridge_up()
            except BaseException:
                _down_locked(layout)
                raise
        try:
            if layout.real_node:
                _start_real_node(layout, budget)
            _ensure_nodes(layout, budget)
        except BaseException:
            _down_locked(layout)
            raise
        print(f"cluster {layout.name}: up in {time.monotonic() - started:.1f}s; "
              f"KUBECONFIG={layout.kubeconfig}", flush=True)
        return True


def _ensure_nodes(layout: Layout, timeout: float) -> None:
    kubectl(layout, "apply", "--server-side", "--force-conflicts", "--field-manager=modelserve-cluster",
            "-f", "-", stdin=json.dumps(nodes.node_list()))
    names = [n["metadata"]["name"] for n in nodes.all_nodes()]
    kubectl(layout, "wait", "--for=condition=Ready", f"--timeout={int(timeout)}s",
            *[f"node/{n}" for n in names], timeout=timeout + 30)
    if layout.real_node:
        names.append(realnode.NODE_NAME)
    # Ready is not schedulable yet: the node lifecycle controller removes its `node.kubernetes.io/
    # not-ready` taint on its next pass (kwokctl runs it every 25 s); until then pods stay Pending.
    def untainted() -> bool:
        listed = json.loads(kubectl(layout, "get", "nodes", "-o", "json", check=False).stdout or "{}")
        return len(listed.get("items", [])) >= len(names) and not any(
            taint["key"].startswith("node.kubernetes.io/")
            for node in listed["items"] for taint in node["spec"].get("taints") or [])

    _wait("the nodes' not-ready taints to be lifted", untainted, timeout, layout=layout,
          components=("kube-controller-manager", "kwok-controller", "kubelet"))
    # Pods are only admitted once the ServiceAccount controller has created the default account.
    _wait("the default ServiceAccount",
          lambda: kubectl(layout, "get", "serviceaccount", "default", "-n", "default",
                          check=False).returncode == 0, timeout, layout=layout,
          components=("kube-controller-manager",))


def _down_locked(layout: Layout, *, keep_real_node_claim: bool = False) -> None:
    # The real node first, while the API server can still drain its pods the normal way.
    node = layout.node
    if (node.dir.exists() or realnode.running_components(node)) and not keep_real_node_claim:
        realnode.stop(node, kubectl=_real_node_kubectl(layout) if healthy(layout) else None)
        node_left = realnode.leftovers(node)
    else:
        node_left = []
        if not keep_real_node_claim:
            realnode.release(node)
    pids = _pids(layout)
    if layout.kwokctl.exists():
        _run(layout, [str(layout.kwokctl), "delete", "cluster", f"--name={layout.name}",
                      f"--kubeconfig={layout.contexts}"],
             timeout=120, check=False)
    # kwokctl stops what it started; anything still alive among its recorded PIDs is stopped here.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = [pid for pid in pids if _alive(pid)]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = [pid for pid in left if _alive(pid)]
        if not left:
            break
    if layout.cluster_dir.exists():
        shutil.rmtree(layout.cluster_dir, ignore_errors=True)
    if node_left:
        raise ClusterError("the real node left these behind after `down`: " + "; ".join(node_left[:20]))


def down(layout: Layout) -> None:
    """Delete the cluster and make sure none of its processes survive; remove its files."""
    with _locked(layout):
        _down_locked(layout)
        for suffix in ("-audit-policy.yaml", "-kwokctl.json", "-contexts.yaml", "-ports.json"):
            (layout.kwok_workdir / f"{layout.name}{suffix}").unlink(missing_ok=True)
    if SESSION_SUFFIX.search(layout.name):  # a one-off name: nobody else waits on its lock
        (layout.kwok_workdir / f"{layout.name}.lock").unlink(missing_ok=True)


def session_name(pid: int, base: str = DEFAULT_NAME) -> str:
    """The name of a cluster private to the process `pid` (a test session): `<base>-p<pid>`."""
    return f"{base}-p{pid}"


def prune(cache_layout: Layout) -> list[str]:
    """Delete session clusters (`<name>-p<pid>`) whose process is gone (a killed test run)."""
    removed = []
    for cluster_dir in sorted((cache_layout.kwok_workdir / "clusters").glob("*-p*")):
        match = SESSION_SUFFIX.search(cluster_dir.name)
        if match and not _alive(int(match.group(1))):
            layout = Layout(name=cluster_dir.name, cache=cache_layout.cache)
            down(layout)
            removed.append(layout.name)
    return removed


def env_lines(layout: Layout) -> list[str]:
    """Shell `export` lines for using the cluster from a terminal."""
    return [
        f"export KUBECONFIG={layout.kubeconfig}",
        f"export PATH={layout.kubectl.parent}:$PATH",
        f"# audit log of write requests: {layout.audit_log}",
    ]
