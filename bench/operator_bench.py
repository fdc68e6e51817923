"""Operator benchmark on the local cluster: reconcile latency, burst cost, and writes per idle reconcile.

Why these three figures: latency is what a user waits for after `kubectl apply`; the burst shows how
the operator's time and memory grow with the number of objects (a fleet of models, or an operator
restart); and the writes per reconcile of an unchanged spec must be zero, or every resync and every
restart turns into API-server load and etcd churn proportional to the fleet.

Set-up is the e2e tests' (real API server from hack/cluster, chart installed with helm at 0 operator
replicas, `modelserve operator` as a local process with the chart's ServiceAccount token), so RBAC
and server-side apply are the production ones. Pods are simulated by kwok: "Ready" includes the real
scheduler and controllers but no image pull or model load.

    .venv/bin/python bench/operator_bench.py [--sequential 50] [--burst 200] [--write]

`--write` replaces the "## Operator" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from e2e_support import (  # noqa: E402  (shared with the e2e tests on purpose: same set-up)
    CHART,
    GROUP,
    MODEL_URI,
    RELEASE,
    RELEASE_NAMESPACE,
    VERSION,
    Kubectl,
    OperatorProcess,
    audit_events,
    audit_size,
    serviceaccount_kubeconfig,
    wait_for,
)
from kubernetes import client, config, watch  # noqa: E402

PLURAL = "modeldeployments"
RESULTS = ROOT / "bench" / "RESULTS.md"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def cluster_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(["bash", str(ROOT / "hack" / "cluster" / "build.sh")], check=True, env=env)
    subprocess.run([sys.executable, "-m", "hack.cluster", "up"], check=True, env=env)
    out = subprocess.run(
        [sys.executable, "-m", "hack.cluster", "env"], check=True, env=env, capture_output=True, text=True
    ).stdout
    return dict(
        line.removeprefix("export ").split("=", 1) for line in out.splitlines() if line.startswith("export ")
    )


class Tracker:
    """Watches ModelDeployments and their children; records when each first existed / turned Ready."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.children: dict[str, dict[str, float]] = {}
        self.ready: dict[str, float] = {}
        self.cond = threading.Condition()
        self.errors: list[BaseException] = []
        self._stopping = False
        self._watches: list[watch.Watch] = []
        apps, core = client.AppsV1Api(), client.CoreV1Api()
        hpa, policy = client.AutoscalingV2Api(), client.PolicyV1Api()
        custom = client.CustomObjectsApi()
        self._threads = [
            threading.Thread(target=self._guard, args=(self._watch_children, kind, fn), daemon=True)
            for kind, fn in (
                ("Deployment", apps.list_namespaced_deployment),
                ("Service", core.list_namespaced_service),
                ("HorizontalPodAutoscaler", hpa.list_namespaced_horizontal_pod_autoscaler),
                ("PodDisruptionBudget", policy.list_namespaced_pod_disruption_budget),
            )
        ]
        self._threads.append(
            threading.Thread(
                target=self._guard, args=(self._watch_mds, custom.list_namespaced_custom_object), daemon=True
            )
        )
        for t in self._threads:
            t.start()

    def _guard(self, target: Callable[..., None], *args: Any) -> None:
        """Run a watch loop; its connection breaking on stop() is expected, any other error is kept."""
        try:
            target(*args)
        except Exception as exc:
            if not self._stopping:
                with self.cond:
                    self.errors.append(exc)
                    self.cond.notify_all()

    def _stream(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        w = watch.Watch()
        self._watches.append(w)
        return w.stream(fn, namespace=self.namespace, timeout_seconds=3600, **kwargs)

    def _watch_children(self, kind: str, fn: Callable[..., Any]) -> None:
        for event in self._stream(fn):
            if event["type"] == "ADDED":
                now = time.monotonic()
                with self.cond:
                    self.children.setdefault(event["object"].metadata.name, {}).setdefault(kind, now)
                    self.cond.notify_all()

    def _watch_mds(self, fn: Callable[..., Any]) -> None:
        for event in self._stream(fn, group=GROUP, version=VERSION, plural=PLURAL):
            obj = event["object"]
            status = obj.get("status") or {}
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
            )
            if ready and status.get("observedGeneration") == obj["metadata"].get("generation"):
                now = time.monotonic()
                with self.cond:
                    self.ready.setdefault(obj["metadata"]["name"], now)
                    self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: bool(self.errors) or predicate(), timeout=timeout):
                raise TimeoutError("timed out waiting for the operator")
            if self.errors:
                raise RuntimeError(f"a watch failed: {self.errors[0]!r}")

    def stop(self) -> None:
        self._stopping = True
        for w in self._watches:
            w.stop()


def md_body(name: str, scaling: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"uri": MODEL_URI}, "scaling": scaling},
    }


def create_namespace(kube: Kubectl, name: str) -> None:
    kube("delete", "namespace", name, "--ignore-not-found", "--wait=true", "--timeout=300s", timeout=330)
    kube("create", "namespace", name)
    wait_for("default ServiceAccount", lambda: kube.get("serviceaccount", "default", name), timeout=60)


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def proc_status(pid: int, key: str) -> int:
    """A /proc/<pid>/status field in KiB (VmHWM: peak resident set size; VmRSS: current)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reconcile_total(op: OperatorProcess) -> float:
    url = f"http://127.0.0.1:{op.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("modelserve_operator_reconcile_total")
    )


def sequential(kube: Kubectl, op: OperatorProcess, count: int) -> dict[str, Any]:
    ns = "bench-sequential"
    create_namespace(kube, ns)
    tracker = Tracker(ns)
    api = client.CustomObjectsApi()
    wanted = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget")
    to_children, to_ready = [], []
    try:
        for i in range(count):
            name = f"seq-{i:03d}"
            start = time.monotonic()
            api.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, md_body(name, {"minReplicas": 1, "maxReplicas": 3})
            )

            def done(name: str = name) -> bool:
                return name in tracker.ready and all(k in tracker.children.get(name, {}) for k in wanted)

            tracker.wait(
                done,
                timeout=300,
            )
            to_children.append(max(tracker.children[name][k] for k in wanted) - start)
            to_ready.append(tracker.ready[name] - start)
    finally:
        tracker.stop()
    kube("delete", "namespace", ns, "--wait=true", "--timeout=300s", timeout=330)
    return {
        "count": count,
        "children_p50": quantile(to_children, 0.50),
        "children_p99": quantile(to_children, 0.99),
        "ready_p50": quantile(to_ready, 0.50),
        "ready_p99": quantile(to_ready, 0.99),
        "ready_max": max(to_ready),
    }


def burst(kube: Kubectl, op: OperatorProcess, count: int, audit_log: Path, user: str) -> dict[str, Any]:
    ns = "bench-burst"
    create_namespace(kube, ns)
    op.stop()
    op.start()  # fresh process: its peak RSS (VmHWM) covers this burst only
    assert op.proc is not None
    rss_idle = proc_status(op.proc.pid, "VmRSS")
    tracker = Tracker(ns)
    api = client.CustomObjectsApi()
    start = time.monotonic()
    try:
        for i in range(count):
            body = md_body(f"burst-{i:03d}", {"minReplicas": 1, "maxReplicas": 1})
            api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        created = time.monotonic() - start
        tracker.wait(lambda: len(tracker.ready) >= count, timeout=1800)
        elapsed = time.monotonic() - start
    finally:
        tracker.stop()
    result: dict[str, Any] = {
        "count": count,
        "create_seconds": created,
        "all_ready_seconds": elapsed,
        "rss_idle_mib": rss_idle / 1024,
        "rss_peak_mib": proc_status(op.proc.pid, "VmHWM") / 1024,
    }

    # Writes per reconcile of unchanged specs: restart (every object is resumed) and let the resync
    # timer tick, then count the ServiceAccount's write requests in the audit log.
    time.sleep(10)  # let the burst's last status writes land before the window opens
    op.stop()
    offset = audit_size(audit_log)
    op.extra_args = [a for a in op.extra_args if not a.startswith("--resync-seconds")]
    op.extra_args.append("--resync-seconds=20")
    op.start()
    wait_for("resume reconciles", lambda: reconcile_total(op) >= count, timeout=900)
    time.sleep(45)  # about two resync rounds
    reconciles = reconcile_total(op)
    writes = Counter(
        f"{e['verb']} {(e.get('objectRef') or {}).get('resource')}"
        + (f"/{e['objectRef']['subresource']}" if (e.get("objectRef") or {}).get("subresource") else "")
        for e in audit_events(audit_log, offset)
        if e.get("user", {}).get("username") == user and e.get("verb") in WRITE_VERBS
    )
    result.update(
        {
            "idle_reconciles": reconciles,
            "idle_writes": sum(writes.values()),
            "idle_writes_by_kind": dict(writes.most_common()),
            "writes_per_reconcile": sum(writes.values()) / reconciles if reconciles else None,
        }
    )
    kube("delete", "namespace", ns, "--wait=true", "--timeout=600s", timeout=630)
    return result


def render(seq: dict[str, Any], bur: dict[str, Any], commands: list[str], minutes: float) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()
    lines = [
        "## Operator",
        "",
        f"Measured {now} in {minutes:.1f} min by `bench/operator_bench.py` on this machine: nproc "
        f"{os.cpu_count()}, python {platform.python_version()}, local cluster from hack/cluster "
        "(kube-apiserver v1.35 + etcd built from Go modules, pods simulated by kwok: Ready means scheduled "
        "and marked Ready, with no image pull or model load). The operator is `modelserve operator` as a "
        "local process with the chart's ServiceAccount token. Load average at the end: "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.",
        "",
        "```",
        *commands,
        "```",
        "",
        "| Figure | Value |",
        "| --- | --- |",
        f"| apply → Deployment, Service, HPA, PDB exist, p50 / p99 ({seq['count']} created one by one) "
        f"| {seq['children_p50']:.2f} s / {seq['children_p99']:.2f} s |",
        f"| apply → status Ready (observedGeneration current), p50 / p99 / max | {seq['ready_p50']:.2f} s / "
        f"{seq['ready_p99']:.2f} s / {seq['ready_max']:.2f} s |",
        f"| {bur['count']} created at once: all Ready after | {bur['all_ready_seconds']:.1f} s "
        f"(creating them took {bur['create_seconds']:.1f} s) |",
        f"| operator RSS idle → peak during that burst | {bur['rss_idle_mib']:.0f} MiB → "
        f"{bur['rss_peak_mib']:.0f} MiB |",
        f"| API writes per reconcile of an unchanged spec (target 0) | {bur['writes_per_reconcile']:.3f} "
        f"({bur['idle_writes']} writes over {bur['idle_reconciles']:.0f} reconciles: restart + resync) |",
        "",
    ]
    if bur["idle_writes_by_kind"]:
        lines += [
            "Writes during the unchanged-spec window, by verb and resource: "
            + ", ".join(f"`{k}` {v}" for k, v in bur["idle_writes_by_kind"].items())
            + ".",
            "",
        ]
    return "\n".join(lines)


def write_section(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    start = text.find("## Operator")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the `finally` blocks: the operator process is stopped


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sequential", type=int, default=50)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--write", action="store_true", help="write the Operator section of bench/RESULTS.md")
    args = parser.parse_args(argv)
    began = time.monotonic()
    env = cluster_env()
    kubeconfig = Path(env["KUBECONFIG"])
    audit_log = kubeconfig.parent / "logs" / "audit.log"
    kube = Kubectl(kubeconfig)
    config.load_kube_config(config_file=str(kubeconfig))
    kube.helm(
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--set",
        "operator.replicas=0",
        "--wait",
    )
    kube("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    sa = kube.get(
        "serviceaccount", namespace=RELEASE_NAMESPACE, selector=f"app.kubernetes.io/instance={RELEASE}"
    )[0]["metadata"]["name"]
    user = f"system:serviceaccount:{RELEASE_NAMESPACE}:{sa}"
    with tempfile.TemporaryDirectory() as tmp:
        op = OperatorProcess(
            kubeconfig=serviceaccount_kubeconfig(kube, RELEASE_NAMESPACE, sa, Path(tmp) / "kubeconfig"),
            log_path=Path(tmp) / "operator.log",
        )
        op.start()
        try:
            seq = sequential(kube, op, args.sequential)
            print(json.dumps(seq, indent=2), flush=True)
            bur = burst(kube, op, args.burst, audit_log, user)
            print(json.dumps(bur, indent=2), flush=True)
        finally:
            op.stop()
    python = sys.executable.replace(str(ROOT) + "/", "")
    commands = [
        " ".join(
            [python, "bench/operator_bench.py", f"--sequential {args.sequential}", f"--burst {args.burst}"]
            + (["--write"] if args.write else [])
        ),
        "modelserve operator --kubeconfig=<ServiceAccount token> --all-namespaces "
        "[--resync-seconds=20 for the unchanged-spec window]",
    ]
    section = render(seq, bur, commands, (time.monotonic() - began) / 60)
    print(section)
    if args.write:
        write_section(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
