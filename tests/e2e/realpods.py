"""Helpers of the real-pod tests: the node, the images, a model server on the node's network, load.

The real node (hack/cluster/realnode.py) runs the images hack/images/build.sh built from the project's
Dockerfile. Models reach the pods the way a user's would, over HTTP from a server on the node's network
(here: a thread on the host bound to the node bridge's address), pinned by sha256. Load comes from
the host to a Service's ClusterIP, through kube-proxy's rules, and every request's outcome is counted.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from e2e_support import CACHE, ROOT, Kubectl, modeldeployment, run, wait_for

sys.path.insert(0, str(ROOT))
from hack.cluster import realnode

IMAGES = CACHE / "images"


def dockerfile_uid() -> int:
    """The uid the Dockerfile's final stages run as (`USER uid:gid`): what pods must really run as."""
    users = set(re.findall(r"^USER (\d+):\d+$", (ROOT / "Dockerfile").read_text(), re.MULTILINE))
    assert len(users) == 1, f"the Dockerfile's stages disagree on USER: {users}"
    return int(users.pop())


def built_images() -> dict[str, str]:
    """The refs of the images the cluster fixture built for the current sources (and `up` imported)."""
    refs = realnode.image_refs(IMAGES)
    current = run(["bash", str(ROOT / "hack" / "images" / "build.sh"), "refs"]).stdout
    stale = [line for line in current.splitlines() if "=" in line and refs.get(line.split("=", 1)[0])
             != line.split("=", 1)[1]]
    if stale:
        pytest.fail(f"the built images are not those of the current sources ({stale}): "
                    "run `bash hack/images/build.sh` and `python -m hack.cluster up` again")
    return refs


def require_real_node(kube: Kubectl) -> dict[str, Any]:
    """The real node, Ready; a test that needs it fails (never skips) with the reason when it is absent."""
    nodes = kube.get("nodes", selector=f"{realnode.NODE_LABEL}=true")
    if not nodes:
        pytest.fail(f"no node labelled {realnode.NODE_LABEL}=true: the local cluster was started without "
                    "its real node (MODELSERVE_REAL_NODE=0?), or the cluster named by "
                    "MODELSERVE_E2E_KUBECONFIG has no node with that label")
    node = nodes[0]
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True", f"the real node is not Ready: {node['status']}"
    return dict(node)


REAL_NODE_SCHEDULING: dict[str, Any] = {"nodeSelector": {realnode.NODE_LABEL: "true"},
                                        "tolerations": [realnode.NODE_TOLERATION]}
SMALL = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "768Mi"}}
"""Requests of one real server pod: a 2-core node holds the operator, a client and several of these."""

FIGURES: dict[str, float] = {}
"""Durations and values measured by the real-pod tests, printed in pytest's terminal summary
(bench/RESULTS.md quotes them)."""


def real_md(name: str, uri: str, sha256: str | None = None, **spec: Any) -> dict[str, Any]:
    model: dict[str, Any] = {"uri": uri}
    if sha256:
        model["sha256"] = sha256
    spec.setdefault("resources", SMALL)
    spec.setdefault("scheduling", REAL_NODE_SCHEDULING)
    spec.setdefault("runtime", {})
    spec["runtime"].setdefault("drainSeconds", 10)
    return modeldeployment(name, model=model, **spec)


def expected_outputs(rows: np.ndarray, path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["y"], {"x": rows})[0])




# --- a model server on the node's network --------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class ModelHost:
    """Files served over HTTP on the node bridge's address, reachable from every pod."""

    root: Path
    port: int = 0
    _server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        handler = functools.partial(_Quiet, directory=str(self.root))
        self._server = http.server.ThreadingHTTPServer((realnode.NODE_IP, 0), handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def url(self, name: str) -> str:
        return f"http://{realnode.NODE_IP}:{self.port}/{name}"

    def sha256(self, name: str) -> str:
        return hashlib.sha256((self.root / name).read_bytes()).hexdigest()


# --- load from the host through the ClusterIP -------------------------------------------------------

def service_ip(kube: Kubectl, name: str, ns: str) -> str:
    svc = wait_for(f"Service {ns}/{name}", lambda: kube.get("service", name, ns))
    return str(svc["spec"]["clusterIP"])


def infer_body(rows: np.ndarray, input_name: str = "input") -> bytes:
    return json.dumps({"inputs": [{"name": input_name, "shape": list(rows.shape), "datatype": "FP32",
                                   "data": rows.ravel().tolist()}]}).encode()


@dataclass
class Load:
    """Closed-loop load from `workers` threads, each on its own keep-alive connection; counts outcomes.

    Each request is a V2 JSON inference of one row; anything but a 200 whose output has the right
    shape is a failure, recorded with its cause, so a test can assert that none happened.
    """

    url: str
    body: bytes
    workers: int = 4
    think_s: float = 0.0
    """Pause after each request (0: closed loop); a trickle of load uses it."""
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _worker(self) -> None:
        import requests
        session = requests.Session()
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                response = session.post(self.url, data=self.body, timeout=30,
                                        headers={"Content-Type": "application/json"})
                good = response.status_code == 200 and response.json()["outputs"][0]["shape"][0] == 1
                outcome = None if good else f"HTTP {response.status_code}: {response.text[:200]}"
            except Exception as exc:  # a refused, reset or timed-out request is exactly what we count
                outcome = f"{type(exc).__name__}: {exc}"
            with self._lock:
                if outcome is None:
                    self.ok += 1
                    self.latencies.append(time.monotonic() - start)
                else:
                    self.failures.append(outcome)
            if self.think_s:
                self._stop.wait(self.think_s)

    def __enter__(self) -> Load:
        self._start(self.workers)
        return self

    def _start(self, count: int) -> None:
        for _ in range(count):
            thread = threading.Thread(target=self._worker, daemon=True)
            thread.start()
            self._threads.append(thread)

    def add_workers(self, count: int) -> None:
        """More closed-loop workers on a running load (a test ramps until the server sees enough)."""
        self.workers += count
        self._start(count)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.ok, len(self.failures)


@contextlib.contextmanager
def steady_load(url: str, body: bytes, workers: int = 4, warm: int = 20,
                think_s: float = 0.0) -> Iterator[Load]:
    """Load that is already succeeding (`warm` good answers) before the block runs."""
    with Load(url, body, workers=workers, think_s=think_s) as load:
        wait_for(f"{warm} successful requests to {url}", lambda: load.snapshot()[0] >= warm, timeout=120,
                 interval=0.2)
        yield load
