"""Helpers of the end-to-end tests: kubectl/helm against a real cluster, polling, the operator process.

Why kubectl and helm (subprocesses) rather than a Python client: the tests check what a user sees
(`kubectl apply` error text, `kubectl get md` columns, Warning headers printed by kubectl), and the
chart is installed the way users install it. Waits poll with generous deadlines and report the last
observed state on timeout, because the cluster shares two cores with the build and the other tests;
nothing sleeps as an assertion.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MODELSERVE_CACHE") or Path.home() / ".cache" / "modelserve")
BIN = CACHE / "bin"
CHART = Path(os.environ.get("MODELSERVE_E2E_CHART") or ROOT / "charts" / "modelserve")
SAMPLES = ROOT / "manifests" / "samples"
RELEASE = "modelserve"
RELEASE_NAMESPACE = "modelserve-system"
GROUP = "serving.modelserve.io"
VERSION = "v1alpha1"
CRD_NAME = f"modeldeployments.{GROUP}"

T = TypeVar("T")

WAIT = float(os.environ.get("MODELSERVE_E2E_WAIT", "180"))
"""Default deadline of every poll (seconds); a loaded 2-core machine needs generous ones."""


def tool(name: str) -> str:
    """The pinned helm/kubectl from ~/.cache/modelserve/bin (installed by `make setup`), else PATH."""
    pinned = BIN / name
    return str(pinned) if pinned.exists() else name


class CommandFailed(AssertionError):
    def __init__(self, args: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
        super().__init__(f"`{' '.join(args)}` exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                         f"stderr:\n{proc.stderr}")
        self.proc = proc


def run(args: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None,
        check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=dict(env) if env is not None else None, check=False)
    if check and proc.returncode != 0:
        raise CommandFailed(args, proc)
    return proc


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT, interval: float = 1.0,
             explain: Callable[[], str] | None = None) -> T:
    """Poll `probe` until it returns something truthy; on timeout fail with the last value seen.

    `explain`, called only on timeout, adds the state that says why (an HPA's status, say), so a
    probe can stay a plain predicate and the failure still shows what the cluster was doing.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except CommandFailed as exc:  # transient API errors while the cluster is busy
            value, last = None, exc
        else:
            last = value
        if value:
            return value
        if time.monotonic() > deadline:
            detail = ""
            if explain is not None:
                try:
                    detail = "\n" + explain()
                except Exception as exc:  # the explanation must not hide the timeout itself
                    detail = f"\n(explaining failed: {type(exc).__name__}: {exc})"
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}{detail}")
        time.sleep(interval)


@dataclass
class Kubectl:
    """kubectl bound to one kubeconfig."""

    kubeconfig: Path

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run([tool("kubectl"), *args], env=self.env, stdin=stdin, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run([tool("helm"), *args], env=self.env, check=check, timeout=timeout)

    def get(self, kind: str, name: str | None = None, namespace: str | None = None,
            selector: str | None = None) -> Any:
        """The object as a dict, `None` when it does not exist; a list's items when name is None."""
        args = ["get", kind, "-o", "json"]
        if name:
            args.insert(2, name)
        if namespace:
            args += ["-n", namespace]
        if selector:
            args += ["-l", selector]
        proc = self(*args, check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise CommandFailed(args, proc)
        data = json.loads(proc.stdout)
        return data["items"] if name is None else data

    def apply(self, obj: Mapping[str, Any] | str, namespace: str | None = None,
              check: bool = True, server_side: bool = False) -> subprocess.CompletedProcess[str]:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        args = ["apply", "-f", "-"]
        if server_side:
            args += ["--server-side", "--field-manager=e2e"]
        if namespace:
            args += ["-n", namespace]
        return self(*args, stdin=text, check=check)


MODEL_URI = os.environ.get(
    "MODELSERVE_E2E_MODEL_URI",
    "https://github.com/onnx/models/raw/main/validated/vision/classification/mnist/model/mnist-8.onnx",
)
"""Model of the tests' ModelDeployments. On the local cluster pods are simulated and never fetch it; on
kind (real pods) it must be reachable from the cluster."""

OPERATOR_ARGS = shlex.split(os.environ.get("MODELSERVE_E2E_OPERATOR_ARGS", ""))
"""Extra flags of the operator process (kind: --server-image=... for the images loaded into the cluster)."""

HELM_ARGS = shlex.split(os.environ.get("MODELSERVE_E2E_HELM_ARGS", ""))
"""Extra flags of `helm upgrade --install` (kind: the image values)."""


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    audit_log: Path | None
    """The API server's audit log when the cluster is the local one (None for other clusters)."""
    local: bool


@dataclass(frozen=True)
class Release:
    namespace: str
    serviceaccount: str

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.serviceaccount}"


def modeldeployment(name: str, **spec: Any) -> dict[str, Any]:
    """A ModelDeployment manifest; spec defaults to a small CPU model."""
    spec.setdefault("model", {"uri": MODEL_URI})
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": spec}


def condition(obj: Mapping[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    """True when `obj` has a controller owner reference to `owner` (same uid)."""
    return any(ref.get("uid") == owner["metadata"]["uid"] and ref.get("controller")
               for ref in obj["metadata"].get("ownerReferences") or [])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


MD = "modeldeployments.serving.modelserve.io"
SELECTOR_LABEL = "serving.modelserve.io/modeldeployment"


def wait_ready(kube: Kubectl, name: str, ns: str) -> dict[str, Any]:
    """Wait until the ModelDeployment reports Ready=True for its current generation."""

    def probe() -> dict[str, Any] | None:
        md = kube.get(MD, name, ns)
        ready = condition(md, "Ready")
        if md and ready and ready["status"] == "True" and \
                md["status"].get("observedGeneration") == md["metadata"]["generation"]:
            return dict(md)
        return None

    return wait_for(f"ModelDeployment {ns}/{name} Ready", probe)


def pods_of(kube: Kubectl, name: str, ns: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = kube.get("pods", namespace=ns, selector=f"{SELECTOR_LABEL}={name}")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def running(pod: dict[str, Any]) -> bool:
    return bool(pod["status"].get("phase") == "Running" and condition(pod, "Ready")
                and condition(pod, "Ready")["status"] == "True")  # type: ignore[index]


# --- the operator as a local process, authenticated as the chart's ServiceAccount ----------------------

def serviceaccount_kubeconfig(admin: Kubectl, namespace: str, serviceaccount: str, path: Path) -> Path:
    """Write a kubeconfig that authenticates with a TokenRequest token of `serviceaccount`."""
    token = admin("create", "token", serviceaccount, "-n", namespace, "--duration=4h").stdout.strip()
    view = json.loads(admin("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = dict(view["clusters"][0]["cluster"])
    ca_file = cluster.pop("certificate-authority", None)
    if ca_file:  # inline the CA so the file stands alone
        import base64
        cluster["certificate-authority-data"] = base64.b64encode(Path(ca_file).read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": serviceaccount, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "e2e", "user": serviceaccount}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class OperatorProcess:
    """`modelserve operator` run from the virtualenv as a child process, restartable and killable."""

    kubeconfig: Path
    log_path: Path
    extra_args: list[str] = field(default_factory=lambda: list(OPERATOR_ARGS))
    proc: subprocess.Popen[bytes] | None = None
    liveness_port: int = 0
    metrics_port: int = 0
    starts: int = 0

    def command(self) -> list[str]:
        exe = Path(sys.executable).parent / "modelserve"
        return [str(exe), "operator", f"--kubeconfig={self.kubeconfig}", "--all-namespaces",
                "--bind-address=127.0.0.1", f"--liveness-port={self.liveness_port}",
                f"--metrics-port={self.metrics_port}", "--log-format=text", *self.extra_args]

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "operator already running"
        self.liveness_port, self.metrics_port = free_port(), free_port()
        env = dict(os.environ)  # MODELSERVE_* pass through (kind sets MODELSERVE_IMAGE_PULL_POLICY)
        env["KUBECONFIG"] = str(self.kubeconfig)  # never the admin's
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== operator start #{self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        wait_for("the operator's /healthz", self.healthy, timeout=120, interval=0.5)

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"the operator exited ({self.proc and self.proc.returncode}); log:\n"
                                 + self.log_tail())
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=5) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizer removal, no graceful kopf shutdown."""
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


# --- the API server's audit log (local cluster only) -------------------------------------------------

def audit_events(path: Path, since_offset: int = 0) -> Iterator[dict[str, Any]]:
    """Audit events (JSON lines) written after byte `since_offset`."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        fh.seek(since_offset)
        for line in fh:
            with contextlib.suppress(ValueError):
                yield json.loads(line)


def audit_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
