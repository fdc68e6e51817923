"""Fixtures of the end-to-end tests: a real cluster, the chart installed with helm, the operator running.

The cluster is a local one from `hack/cluster` (real etcd, kube-apiserver, kube-controller-manager
and kube-scheduler, nodes simulated by kwok), private to the session: brought up for it and torn down
after it. When `MODELSERVE_E2E_KUBECONFIG` names a kubeconfig, that cluster is used instead (kind, for
example; see `hack/kind-e2e.sh`), and is neither created nor deleted.

The chart is installed with the operator Deployment at 0 replicas, and the operator runs as a local
process authenticated with a TokenRequest token of the chart's ServiceAccount: everything it does
goes through the chart's RBAC, and a forbidden call fails the test that triggered it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import realpods
from e2e_support import (
    CHART,
    CRD_NAME,
    HELM_ARGS,
    MD,
    RELEASE,
    RELEASE_NAMESPACE,
    ROOT,
    Cluster,
    Kubectl,
    OperatorProcess,
    Release,
    audit_events,
    audit_size,
    run,
    running,
    serviceaccount_kubeconfig,
    unique,
    wait_for,
)
from realpods import ModelHost, built_images, require_real_node

sys.path.insert(0, str(ROOT / "tests" / "server"))
from serverlib import build_mlp, build_slow, build_warmup_fails

sys.path.insert(0, str(ROOT))
from hack.cluster import realnode


def _cluster_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "hack.cluster", *args], check=False, timeout=timeout,
               env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The cluster of this test session.

    By default a private local cluster, `modelserve-e2e-p<pid>`, so that test sessions running at the
    same time (two engineers, or `make test` beside `make e2e`) never install, uninstall or tear down
    under each other; clusters of sessions that died are pruned first. `MODELSERVE_E2E_CLUSTER=NAME`
    uses the named local cluster instead (e.g. the one `make cluster-up` started), and leaves it up
    if it was up.
    """
    external = os.environ.get("MODELSERVE_E2E_KUBECONFIG")
    if external:
        yield Cluster(kubeconfig=Path(external), audit_log=None, local=False)
        return
    # Idempotent and fast when the binaries are cached (`make test` runs it beforehand anyway).
    build = run(["bash", str(ROOT / "hack" / "cluster" / "build.sh")], check=False, timeout=3000)
    if build.returncode != 0:
        pytest.fail(f"building the local cluster failed:\n{build.stdout}\n{build.stderr}")
    # The real node runs the images of the current sources: built (or found cached) before `up`,
    # which imports whichever of them its containerd lacks.
    if os.environ.get("MODELSERVE_REAL_NODE", "1") != "0":
        images = run(["bash", str(ROOT / "hack" / "images" / "build.sh")], check=False, timeout=3000)
        if images.returncode != 0:
            pytest.fail(f"building the images failed:\n{images.stdout[-3000:]}\n{images.stderr[-3000:]}")
    _cluster_cli("prune")
    name = ["--name", os.environ.get("MODELSERVE_E2E_CLUSTER") or f"modelserve-e2e-p{os.getpid()}"]
    was_up = _cluster_cli("status", *name).returncode == 0
    up = _cluster_cli("up", *name)
    if up.returncode != 0:
        pytest.fail(f"`python -m hack.cluster up` failed:\n{up.stdout}\n{up.stderr}")
    env = dict(line.removeprefix("export ").split("=", 1)
               for line in _cluster_cli("env", *name).stdout.splitlines() if line.startswith("export "))
    audit = Path(env["KUBECONFIG"]).parent / "logs" / "audit.log"
    try:
        yield Cluster(kubeconfig=Path(env["KUBECONFIG"]), audit_log=audit, local=True)
    finally:
        if not was_up and not os.environ.get("MODELSERVE_E2E_KEEP_CLUSTER"):
            down = _cluster_cli("down", *name)
            assert down.returncode == 0, down.stderr


@pytest.fixture(scope="session")
def kube(cluster: Cluster) -> Kubectl:
    """kubectl as the cluster's admin."""
    return Kubectl(cluster.kubeconfig)


@pytest.fixture(scope="session")
def release(kube: Kubectl) -> Iterator[Release]:
    """`helm install` of the chart, with the in-cluster operator scaled to 0 (the tests run their own)."""
    crd_existed = kube.get("crd", CRD_NAME) is not None
    skip_crds: list[str] = []
    if crd_existed:
        # helm never upgrades CRDs (and conflicts with an earlier kubectl apply of them); on a reused
        # cluster bring the CRD up to date like a user would, and let helm leave it alone.
        kube("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
        skip_crds = ["--skip-crds"]
    kube.helm("upgrade", "--install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
              "--create-namespace", "--set", "operator.replicas=0", "--wait", "--timeout", "5m",
              *skip_crds, *HELM_ARGS)
    kube("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=120s")
    accounts = kube.get("serviceaccount", namespace=RELEASE_NAMESPACE,
                        selector=f"app.kubernetes.io/instance={RELEASE}")
    assert len(accounts) == 1, f"expected one ServiceAccount from the chart, got {accounts}"
    try:
        yield Release(RELEASE_NAMESPACE, accounts[0]["metadata"]["name"])
    finally:
        kube.helm("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", check=False)


@pytest.fixture(scope="session")
def operator_process(kube: Kubectl, release: Release,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    workdir = tmp_path_factory.mktemp("operator")
    kubeconfig = serviceaccount_kubeconfig(kube, release.namespace, release.serviceaccount,
                                           workdir / "kubeconfig")
    # Sanity: the credentials really are the ServiceAccount's, not the admin's.
    whoami = Kubectl(kubeconfig)("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout
    assert whoami == release.user, whoami
    proc = OperatorProcess(kubeconfig=kubeconfig, log_path=workdir / "operator.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"\noperator log: {proc.log_path}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def operator(operator_process: OperatorProcess, cluster: Cluster, release: Release,
             request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    """The running operator; after the test, no forbidden request (RBAC) may have happened."""
    if operator_process.proc is None or operator_process.proc.poll() is not None:
        operator_process.start()  # a previous test killed it
    log_offset = len(operator_process.log_text())
    audit_offset = audit_size(cluster.audit_log) if cluster.audit_log else 0
    yield operator_process
    if request.node.stash.get(_CALL_FAILED, False):
        print("\n--- operator log during the failed test ---\n"
              + "\n".join(operator_process.log_text()[log_offset:].splitlines()[-80:]))
    proc = operator_process.proc
    if proc is None or proc.poll() is not None:
        pytest.fail(f"the operator process died (exit {proc.returncode if proc else None}):\n"
                    + operator_process.log_tail())
    problems: list[str] = []
    if cluster.audit_log:
        for event in audit_events(cluster.audit_log, audit_offset):
            if event.get("user", {}).get("username") == release.user and \
                    (event.get("responseStatus") or {}).get("code") == 403:
                problems.append(f"{event.get('verb')} {event.get('requestURI')}")
    for line in operator_process.log_text()[log_offset:].splitlines():
        if "403" in line and "orbidden" in line:
            problems.append(line)
    if problems:
        pytest.fail("the operator was refused by RBAC:\n" + "\n".join(sorted(set(problems))[:20]))


@pytest.fixture
def ns(kube: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace; its ModelDeployments are deleted (finalizers handled) before the namespace."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.removeprefix("test_").lower())[:30].strip("-")
    name = unique("e2e-" + slug)
    kube("create", "namespace", name)
    wait_for("the default ServiceAccount", lambda: kube.get("serviceaccount", "default", name), timeout=60)
    try:
        yield name
    finally:
        kube("delete", "modeldeployments.serving.modelserve.io", "--all", "-n", name, "--wait=true",
             "--timeout=60s", check=False, timeout=90)
        kube("delete", "namespace", name, "--wait=false", check=False)


# --- real pods: images, a model host, the operator in-cluster (tests/e2e/realpods.py) ---------------

@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    return built_images()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelHost]:
    """mlp.onnx, a file that is not ONNX, and a model whose every inference fails, served over HTTP."""
    root = tmp_path_factory.mktemp("model-host")
    build_mlp(root / "mlp.onnx")
    build_slow(root / "slow.onnx", layers=8, width=512)  # ~2 M MACs a row: requests queue under load
    (root / "not-onnx.onnx").write_bytes(b"<html>this is a login page, not a model</html>\n" * 20)
    build_warmup_fails(root / "warmup-fails.onnx")
    host = ModelHost(root)
    host.start()
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="module")
def incluster_operator(kube: Kubectl, release: Release, operator_process: OperatorProcess,
                       images: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The chart's operator Deployment running the operator image on the real node (the host-process
    operator of the other tests is stopped meanwhile: two operators would fight over the same objects)."""
    require_real_node(kube)
    operator_process.stop()
    repo_tag = {key: images[key].rsplit(":", 1) for key in ("OPERATOR_REF", "SERVER_REF")}
    values = [
        "--set", "operator.replicas=1",
        "--set", f"operator.image.repository={repo_tag['OPERATOR_REF'][0]}",
        "--set", f"operator.image.tag={repo_tag['OPERATOR_REF'][1]}",
        "--set", f"server.image.repository={repo_tag['SERVER_REF'][0]}",
        "--set", f"server.image.tag={repo_tag['SERVER_REF'][1]}",
        "--set-string", r"operator.nodeSelector.modelserve\.io/real-node=true",
        "--set-json", "operator.tolerations=" + json.dumps([realnode.NODE_TOLERATION]),
        "--set", "logFormat=text",
    ]
    kube.helm("upgrade", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--reuse-values", *values,
              "--wait", "--timeout", "5m")
    pods = wait_for("the operator pod Running and Ready", lambda: [
        p for p in kube.get("pods", namespace=RELEASE_NAMESPACE,
                            selector=f"app.kubernetes.io/instance={RELEASE}") if running(p)])
    try:
        yield pods[0]
    finally:
        kube.helm("upgrade", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--reuse-values",
                  "--set", "operator.replicas=0", "--wait", "--timeout", "5m", check=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The real-pod figures in the run's summary (a print in a fixture is captured and lost)."""
    if realpods.FIGURES:
        terminalreporter.write_line(
            "real-pod figures: " + json.dumps({k: round(v, 2) for k, v in realpods.FIGURES.items()}))


@pytest.fixture
def real_ns(kube: Kubectl, cluster: Cluster, release: Release, incluster_operator: dict[str, Any],
            request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace under Pod Security `restricted` (enforced); after the test, no RBAC refusal of the
    in-cluster operator may appear in the audit log."""
    name = unique("real-" + request.node.name.removeprefix("test_").replace("_", "-")[:24].strip("-"))
    kube("create", "namespace", name)
    kube("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
         "pod-security.kubernetes.io/warn=restricted")
    wait_for("the default ServiceAccount", lambda: kube.get("serviceaccount", "default", name), timeout=60)
    offset = audit_size(cluster.audit_log) if cluster.audit_log else 0
    try:
        yield name
    finally:
        if cluster.audit_log:
            events = audit_events(cluster.audit_log, offset)
            refused = [f"{e.get('verb')} {e.get('requestURI')}" for e in events
                       if e.get("user", {}).get("username") == release.user
                       and (e.get("responseStatus") or {}).get("code") == 403]
            assert not refused, f"the in-cluster operator was refused by RBAC: {sorted(set(refused))[:10]}"
        kube("delete", MD, "--all", "-n", name, "--wait=true", "--timeout=90s", check=False, timeout=120)
        kube("delete", "namespace", name, "--wait=false", check=False)
