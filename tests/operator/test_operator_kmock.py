"""The real kopf operator (``modelserve_operator.main.operate``) against kmock's Kubernetes emulator.

What this proves: the handlers, the reconciler and the client layer work together over HTTP
against an API that streams watch events: children are created with owner references, a spec
change patches the Deployment, a deleted or edited child is restored through the child watches
(and by the resync when no watch reported it), status follows the Deployment and the pods, an
unchanged spec and a restart cost no writes (kopf's included), API errors are retried, a spec
that cannot work is reported once, deletion is not blocked by a finalizer, every call the
operator makes (kopf's watches too) is in the RBAC table, and the ``modelserve operator``
process authenticates with a token kubeconfig.

What kmock cannot show (left to the real-cluster e2e tests, issue 4): server-side apply's field
ownership and list merging (the emulator below only creates-on-apply and merges dicts),
garbage collection, label selectors, defaulting/validation, resourceVersion and generation
(the tests write ``metadata.generation`` themselves).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import pathlib
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import kmock
import kubernetes.client
import pytest
import yaml

from modelserve_operator import metrics, rbac
from modelserve_operator.api import GROUP
from modelserve_operator.config import OperatorConfig
from modelserve_operator.main import Options, operate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

NS = "models"
MD_PATH = f"/apis/serving.modelserve.io/v1alpha1/namespaces/{NS}/modeldeployments"
DEPLOY = "apps/v1/deployments"
SERVICE = "v1/services"
HPA = "autoscaling/v2/horizontalpodautoscalers"
PDB = "policy/v1/poddisruptionbudgets"
MD_RES = "serving.modelserve.io/v1alpha1/modeldeployments"
TEST_AGENT = "modelserve-operator-tests"
WRITE_VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}
WRITES = frozenset(WRITE_VERBS)


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock plus the two things this operator needs from a real API server.

    * Server-side apply creates a missing object (kmock only patches existing ones).
    * Injected failures: ``fail(method, plural, times)`` answers the next matching requests with
      a 500 *before* any state change, as an overloaded API server would.
    """

    failures: list[list[Any]] = attrs.field(factory=list)

    def fail(self, method: str, plural: str, times: int = 1) -> None:
        self.failures.append([method, plural, times])

    async def _handle(self, request: Any) -> Any:
        res = request.resource
        for rule in self.failures:
            method, plural, left = rule
            if left > 0 and res is not None and request.method == method and res.plural == plural:
                rule[2] -= 1
                return await self._render_error(kmock.KubernetesError(500, "InternalError", "injected"))
        content_type = request.headers.get("Content-Type", "")
        if request.method == "PATCH" and "apply-patch" in content_type and res is not None:
            key = (res, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                created = attrs.evolve(request, action=kmock.action.CREATE)
                # kmock's reactions match requests by identity in its request log: swap it there.
                log = self._requests
                log[next(i for i, r in enumerate(log) if r is request)] = created
                request = created
        return await super()._handle(request)


def md_body(name: str = "iris", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.modelserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1,
                     "resourceVersion": "1"},
        "spec": {"model": {"uri": "https://models.example/iris.onnx"}, **spec},
    }


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": Emulator}


class Cluster:
    """The emulator, seen through small helpers the scenarios read well with."""

    def __init__(self, server: Emulator) -> None:
        self.server = server

    def get(self, resource: str, name: str, namespace: str = NS) -> dict[str, Any] | None:
        key = (kmock.resource(resource), namespace, name)
        if key not in self.server.objects or self.server.objects[key].deleted:
            return None
        return copy.deepcopy(dict(self.server.objects[key].raw))

    async def request(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        headers = {"User-Agent": TEST_AGENT, **({"Content-Type": content_type} if content_type else {})}
        async with self.server.request(method, path, json=body, headers=headers) as resp:
            assert resp.status < 300, (method, path, resp.status, await resp.text())
            return await resp.json()

    def operator_calls(self) -> set[tuple[str, str, str]]:
        """(API group, resource[/subresource], RBAC verb) of every request kopf or the client made."""
        calls = set()
        for r in list(self.server):
            res = r.resource
            if is_test_client(r) or res is None or not res.plural:  # the test's requests, or discovery
                continue
            if r.method == "GET":
                verb = "watch" if r.params.get("watch") == "true" else "get" if r.name else "list"
            else:
                verb = WRITE_VERBS[r.method]
            resource = f"{res.plural}/{r.subresource}" if r.subresource else res.plural
            calls.add((res.group, resource, verb))
        return calls

    def assert_rbac_covers_calls(self) -> set[tuple[str, str, str]]:
        """The chart's RBAC (the table) grants every call the operator made, kopf's included."""
        calls = self.operator_calls()
        missing = {call for call in calls if not rbac.allows(*call)}
        assert not missing, f"calls outside the RBAC table: {sorted(missing)}"
        return calls

    def writes_since(self, index: int, *, by_operator: bool = True) -> list[str]:
        """Write requests after request number ``index``: the operator's (kopf's and the client's),
        or, with ``by_operator=False``, the test's own."""
        return [
            f"{r.method} {r.url.path}" for r in list(self.server)[index:]
            if r.method in WRITES and is_test_client(r) is not by_operator
        ]


def is_test_client(request: Any) -> bool:
    """The test's own requests (kopf says "kopf/...", the kubernetes client "OpenAPI-Generator/...")."""
    return request.headers.get("User-Agent") == TEST_AGENT


async def eventually(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy (generous: the machine is loaded)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (KeyError, TypeError, IndexError, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or check}: last={last!r}")


def condition(md: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    for cond in ((md or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == ctype:
            return dict(cond)
    return {}


@pytest.fixture
async def cluster(kmock: Emulator) -> Cluster:
    kmock.resources.load_bundled()
    kmock.resources[MD_RES] = {
        "kind": "ModelDeployment", "singular": "modeldeployment", "namespaced": True,
        "verbs": ["get", "list", "watch", "create", "patch", "delete"], "shortnames": ["md"],
        "categories": [], "subresources": ["status", "scale"],
    }
    return Cluster(kmock)


@contextlib.asynccontextmanager
async def running_operator(
    cluster: Cluster, liveness_port: int = 0, resync_seconds: float = 3600
) -> AsyncIterator[threading.Thread]:
    """The operator, exactly as ``modelserve operator`` runs it, in a thread with its own loop."""
    configuration = kubernetes.client.Configuration()
    configuration.host = str(cluster.server.url).rstrip("/")
    options = Options(config=OperatorConfig(), liveness_port=liveness_port, metrics_port=0,
                      bind_address="127.0.0.1", resync_seconds=resync_seconds)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(operate(options, configuration=configuration, stop_flag=stop, debounce=0.2))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=target, name="operator", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 60)  # kmock serves from this loop: keep it running
    assert not thread.is_alive(), "the operator did not stop"
    assert not errors, errors


@pytest.fixture
async def operator(cluster: Cluster) -> AsyncIterator[threading.Thread]:
    async with running_operator(cluster) as thread:
        yield thread


SELECTOR = "app.kubernetes.io/name=modelserve-server,serving.modelserve.io/modeldeployment=iris"
SCALED = {"scaling": {"minReplicas": 1, "maxReplicas": 3}}


def md_of(cluster: Cluster, name: str = "iris") -> dict[str, Any] | None:
    return cluster.get(MD_RES, name)


def server_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return dict(next(c for c in containers if c["name"] == "server"))


def fetch_text(deployment: dict[str, Any]) -> str:
    """The fetch init container's command line, as one string (it carries the model URI)."""
    init = deployment["spec"]["template"]["spec"].get("initContainers") or []
    return " ".join(" ".join(c.get("command", []) + c.get("args", [])) for c in init)


async def converged(cluster: Cluster, name: str = "iris", generation: int = 1) -> dict[str, Any]:
    """Wait until the status reflects ``generation`` (the operator's last step of a reconcile)."""
    def check() -> dict[str, Any] | None:
        md = md_of(cluster, name)
        return md if md and (md.get("status") or {}).get("observedGeneration") == generation else None

    return dict(await eventually(check, what=f"status of generation {generation}"))


DIFF_BASE = f"{GROUP}/last-handled-configuration"


def kopf_progress(md: dict[str, Any] | None) -> dict[str, str]:
    """kopf's progress annotation of our one handler (id ``reconcile``: retry count, delay): present
    while it is unfinished or waiting to retry, purged once it has ended."""
    annotations = ((md or {}).get("metadata") or {}).get("annotations") or {}
    return {k: v for k, v in annotations.items() if k.startswith(f"{GROUP}/reconcile")}


def kopf_handled_spec(md: dict[str, Any] | None) -> bool:
    """kopf has ended its handlers for the spec as it is now (its diff-base equals the spec);
    raises AssertionError saying what is missing (``eventually`` reports the last one)."""
    annotations = ((md or {}).get("metadata") or {}).get("annotations") or {}
    assert DIFF_BASE in annotations, f"no diff-base annotation yet: {annotations}"
    assert not kopf_progress(md), f"kopf handler progress still recorded: {kopf_progress(md)}"
    handled = json.loads(annotations[DIFF_BASE]).get("spec")
    assert handled == (md or {}).get("spec"), f"diff-base spec {handled} != spec {(md or {}).get('spec')}"
    return True


def operator_idle() -> bool:
    """No reconcile running and no poked one debouncing, running or waiting to retry."""
    gauges = (metrics.RECONCILES_IN_FLIGHT, metrics.WORKQUEUE_DEPTH)
    values = {m.name: sample.value for g in gauges for m in g.collect() for sample in m.samples}
    assert all(v == 0 for v in values.values()), f"operator busy: {values}"
    return True


async def kopf_done(cluster: Cluster, name: str = "iris") -> None:
    """Wait until the operator has finished with the object as it is now: kopf has ended its
    handlers for this spec (diff-base written, progress purged) and the reconciler is idle.

    Why not a sleep: an assertion that nothing more is written is only meaningful after the work
    that could write has been seen to end; a fixed pause neither proves that nor bounds it.
    """
    await eventually(
        lambda: kopf_handled_spec(md_of(cluster, name)) and operator_idle(),
        what=f"kopf's handlers for {name}'s spec to end and the work queue to drain",
    )


async def reconciled_by(cluster: Cluster, trigger: str, before: float, name: str = "iris") -> None:
    """Wait until a reconcile triggered by ``trigger`` (e.g. ``Service-DELETED``) has ended and the
    operator is idle again; ``before`` is that trigger's count taken before the action."""
    await eventually(
        lambda: metrics.total(metrics.RECONCILES, trigger=trigger) > before and operator_idle(),
        what=f"the reconcile a {trigger} event triggers, and the work queue to drain",
    )


async def set_deployment_status(cluster: Cluster, ready: int, wanted: int = 1) -> None:
    await cluster.request(
        "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/iris/status",
        {"status": {"replicas": wanted, "readyReplicas": ready, "updatedReplicas": wanted,
                    "availableReplicas": ready}},
        content_type="application/merge-patch+json",
    )


async def test_create_applies_every_child_with_owner_references(cluster: Cluster, operator: Any) -> None:
    await cluster.request("POST", MD_PATH, md_body(**SCALED))
    children = {}
    for resource in (DEPLOY, SERVICE, HPA, PDB):
        children[resource] = await eventually(lambda r=resource: cluster.get(r, "iris"), what=resource)
    for resource, child in children.items():
        refs = child["metadata"]["ownerReferences"]
        assert [(r["kind"], r["name"], r["uid"], r["controller"]) for r in refs] == [
            ("ModelDeployment", "iris", "uid-iris", True)
        ], resource
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modelserve-operator"
    # With an HPA, the operator's own apply leaves replicas out (tested apply by apply in
    # test_reconcile_calls); at creation only the floor, minReplicas, is seeded by the handover
    # manager (kmock does not default a missing replicas to 1 as the API server does).
    assert children[DEPLOY]["spec"].get("replicas", 1) == SCALED["scaling"]["minReplicas"]
    assert "https://models.example/iris.onnx" in fetch_text(children[DEPLOY])

    md = await converged(cluster)
    status = md["status"]
    assert status["url"] == f"http://iris.{NS}.svc:8080/v2/models/iris"
    assert status["selector"] == SELECTOR
    cond = {c["type"]: c for c in status["conditions"]}
    assert cond["Ready"]["status"] == "False" and cond["Progressing"]["status"] == "True"
    # kopf's bookkeeping lives in annotations, not in the (schema-pruned) status.
    assert set(status) <= {"observedGeneration", "model", "replicas", "readyReplicas", "url", "selector",
                           "conditions"}
    calls = cluster.assert_rbac_covers_calls()
    assert ("serving.modelserve.io", "modeldeployments", "watch") in calls  # kopf's watch is in there
    assert ("serving.modelserve.io", "modeldeployments/status", "patch") in calls


async def test_update_patches_the_deployment_and_status_follows(cluster: Cluster, operator: Any) -> None:
    await cluster.request("POST", MD_PATH, md_body())
    await converged(cluster)
    assert cluster.get(HPA, "iris") is None  # min == max: fixed replicas, no HPA
    assert cluster.get(DEPLOY, "iris")["spec"]["replicas"] == 1  # type: ignore[index]

    await cluster.request(
        "PATCH", f"{MD_PATH}/iris",
        {"metadata": {"generation": 2}, "spec": {"model": {"uri": "s3://bucket/iris-v2.onnx"}}},
        content_type="application/merge-patch+json",
    )
    await eventually(lambda: "s3://bucket/iris-v2.onnx" in fetch_text(cluster.get(DEPLOY, "iris") or {}),
                     what="the new URI in the Deployment")
    await converged(cluster, generation=2)

    await set_deployment_status(cluster, ready=1)
    md = await eventually(
        lambda: condition(md_of(cluster), "Ready").get("status") == "True" and md_of(cluster), what="Ready"
    )
    assert md["status"]["readyReplicas"] == 1
    # The reconciler patches the status, then posts the Event: wait for the Event itself.
    await eventually(
        lambda: any(e["reason"] == "ReplicasReady" and e["involvedObject"]["name"] == "iris"
                    for (res, _, _), e in cluster.server.objects.items() if res.plural == "events"),
        what="a ReplicasReady Event for iris",
    )
    assert ("", "events", "create") in cluster.assert_rbac_covers_calls()


async def test_min_equals_max_deletes_the_hpa_and_back(cluster: Cluster, operator: Any) -> None:
    await cluster.request("POST", MD_PATH, md_body(**SCALED))
    await eventually(lambda: cluster.get(HPA, "iris"), what="the HPA")
    await cluster.request(
        "PATCH", f"{MD_PATH}/iris",
        {"metadata": {"generation": 2}, "spec": {"scaling": {"minReplicas": 2, "maxReplicas": 2}}},
        content_type="application/merge-patch+json",
    )
    await eventually(lambda: cluster.get(HPA, "iris") is None, what="the HPA deleted")
    await eventually(lambda: (cluster.get(DEPLOY, "iris") or {}).get("spec", {}).get("replicas") == 2,
                     what="fixed replicas applied")
    await cluster.request(
        "PATCH", f"{MD_PATH}/iris",
        {"metadata": {"generation": 3}, "spec": {"scaling": {"minReplicas": 1, "maxReplicas": 4}}},
        content_type="application/merge-patch+json",
    )
    hpa = await eventually(lambda: cluster.get(HPA, "iris"), what="the HPA again")
    assert hpa["spec"]["maxReplicas"] == 4
    assert ("autoscaling", "horizontalpodautoscalers", "delete") in cluster.assert_rbac_covers_calls()


async def test_drift_is_undone_through_the_child_watches(cluster: Cluster, operator: Any) -> None:
    await cluster.request("POST", MD_PATH, md_body())
    await converged(cluster)
    image = server_container(cluster.get(DEPLOY, "iris") or {})["image"]

    await cluster.request("DELETE", f"/api/v1/namespaces/{NS}/services/iris")
    assert cluster.get(SERVICE, "iris") is None
    await eventually(lambda: cluster.get(SERVICE, "iris"), timeout=30, what="the Service restored")

    edited = copy.deepcopy(cluster.get(DEPLOY, "iris") or {})
    edited_spec = edited["spec"]["template"]["spec"]
    for c in edited_spec["containers"]:
        if c["name"] == "server":
            c["image"] = "attacker/evil:1"
    await cluster.request("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/iris",
                          {"spec": {"template": {"spec": {"containers": edited_spec["containers"]}}}},
                          content_type="application/merge-patch+json")
    await eventually(lambda: server_container(cluster.get(DEPLOY, "iris") or {})["image"] == image,
                     timeout=30, what="the image restored")


async def test_status_reports_the_schedulers_reason(cluster: Cluster, operator: Any) -> None:
    await cluster.request("POST", MD_PATH, md_body(resources={"gpu": 8}))
    await converged(cluster)
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    await cluster.request("POST", f"/api/v1/namespaces/{NS}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "iris-7d9-x1", "namespace": NS, "labels": {
            "app.kubernetes.io/name": "modelserve-server", "serving.modelserve.io/modeldeployment": "iris",
            "app.kubernetes.io/managed-by": "modelserve-operator"}},
        "spec": {"containers": [{"name": "server", "image": "x"}]},
        "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]},
    })
    degraded = await eventually(
        lambda: (c := condition(md_of(cluster), "Degraded")).get("status") == "True" and c, what="Degraded"
    )
    assert degraded["reason"] == "Unschedulable"
    assert message in degraded["message"]


async def test_unchanged_spec_costs_no_writes(cluster: Cluster, operator: Any) -> None:
    await cluster.request("POST", MD_PATH, md_body(**SCALED))
    await converged(cluster)
    await set_deployment_status(cluster, ready=1)
    await eventually(lambda: condition(md_of(cluster), "Ready").get("status") == "True", what="Ready")
    await kopf_done(cluster)
    mark = len(list(cluster.server))

    # Child events (here: someone annotates the Deployment, then the Service) each trigger a
    # reconcile; each is awaited by its own trigger, so both passes have ended before the check.
    for kind, path in (("Deployment", f"/apis/apps/v1/namespaces/{NS}/deployments/iris"),
                       ("Service", f"/api/v1/namespaces/{NS}/services/iris")):
        before = metrics.total(metrics.RECONCILES, trigger=f"{kind}-MODIFIED")
        await cluster.request("PATCH", path, {"metadata": {"annotations": {"team": "ml"}}},
                              content_type="application/merge-patch+json")
        await reconciled_by(cluster, f"{kind}-MODIFIED", before)
    assert len(cluster.writes_since(mark, by_operator=False)) == 2  # the test's own two patches
    assert cluster.writes_since(mark) == []


async def test_api_errors_are_retried(cluster: Cluster, operator: Any) -> None:
    cluster.server.fail("PATCH", "deployments", times=2)
    await cluster.request("POST", MD_PATH, md_body())
    deployment = await eventually(lambda: cluster.get(DEPLOY, "iris"), timeout=90, what="the Deployment")
    assert deployment["metadata"]["ownerReferences"][0]["name"] == "iris"
    assert metrics.total(metrics.RECONCILES, result="retry") >= 1
    await converged(cluster)


async def test_a_spec_that_cannot_work_is_reported_not_hot_looped(cluster: Cluster, operator: Any) -> None:
    problems = metrics.total(metrics.RECONCILES, result="spec_problem")
    await cluster.request("POST", MD_PATH, md_body("shared", model={"uri": "pvc://models-pvc/iris.onnx"}))
    degraded = await eventually(lambda: (c := condition(md_of(cluster, "shared"), "Degraded")).get("reason")
                                == "ModelVolumeMissing" and c, what="Degraded=ModelVolumeMissing")
    assert "models-pvc" in degraded["message"]
    assert ("", "persistentvolumeclaims", "get") in cluster.assert_rbac_covers_calls()
    assert cluster.get(DEPLOY, "shared") is None  # nothing is applied for a spec that cannot work
    # Reported once, not retried in a loop: once kopf's handler has ended (no progress annotation,
    # so kopf holds no retry) and the work queue is empty (no poke waits to retry), nothing can
    # run the pass again until the spec changes.
    await kopf_done(cluster, "shared")
    # kopf may run the handler more than once here: kmock keeps resourceVersion at 1, so kopf cannot
    # wait for its own patch (settings.persistence.consistency_timeout) and handles stale events.
    assert metrics.total(metrics.RECONCILES, result="spec_problem") > problems


async def test_restart_resumes_without_writes(cluster: Cluster) -> None:
    async with running_operator(cluster):
        await cluster.request("POST", MD_PATH, md_body(**SCALED))
        await converged(cluster)
        await set_deployment_status(cluster, ready=1)
        await eventually(lambda: condition(md_of(cluster), "Ready").get("status") == "True", what="Ready")
        await kopf_done(cluster)
    mark = len(list(cluster.server))
    resumed = metrics.total(metrics.RECONCILES, trigger="md-resume")
    port = free_port()
    async with running_operator(cluster, liveness_port=port):
        await reconciled_by(cluster, "md-resume", resumed)
        await kopf_done(cluster)
        health = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).status
        )
        assert health == 200
    assert cluster.writes_since(mark) == []  # neither the reconciler nor kopf wrote anything


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: all held open together while chosen (two separate picks can
    return the same port, and an operator given it twice exits on the second bind)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


async def test_deleting_the_model_deployment_is_not_blocked(cluster: Cluster, operator: Any) -> None:
    """No finalizer: deletion is immediate; the children go by garbage collection (not in kmock)."""
    await cluster.request("POST", MD_PATH, md_body())
    await converged(cluster)
    await kopf_done(cluster)
    assert not (md_of(cluster) or {}).get("metadata", {}).get("finalizers")
    mark = len(list(cluster.server))
    await cluster.request("DELETE", f"{MD_PATH}/iris")
    assert md_of(cluster) is None
    # Child events after the owner is gone find nothing to reconcile, and write nothing.
    gone = metrics.total(metrics.RECONCILES, trigger="Service-DELETED", result="gone")
    await cluster.request("DELETE", f"/api/v1/namespaces/{NS}/services/iris")
    await eventually(
        lambda: metrics.total(metrics.RECONCILES, trigger="Service-DELETED", result="gone") > gone
        and operator_idle(),
        what="the Service-DELETED reconcile to find its owner gone",
    )
    assert cluster.get(SERVICE, "iris") is None
    assert cluster.writes_since(mark) == []


async def test_resync_catches_what_no_watch_reported(cluster: Cluster) -> None:
    async with running_operator(cluster, resync_seconds=3):
        await cluster.request("POST", MD_PATH, md_body())
        await converged(cluster)
        await kopf_done(cluster)
        resyncs = metrics.total(metrics.RECONCILES, trigger="resync")
        cluster.server.objects[kmock.resource(SERVICE), NS, "iris"].delete()  # silently: no watch event
        assert cluster.get(SERVICE, "iris") is None
        await eventually(lambda: cluster.get(SERVICE, "iris"), timeout=60, what="the resync to restore it")
    assert metrics.total(metrics.RECONCILES, trigger="resync") > resyncs


async def test_the_cli_process_with_a_token_kubeconfig(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    """``modelserve operator`` as its own process, as the e2e tests run it: a ServiceAccount-style
    token kubeconfig, liveness and metrics on loopback ports, JSON logs."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "op",
        "clusters": [{"name": "kmock", "cluster": {"server": str(cluster.server.url).rstrip("/")}}],
        "users": [{"name": "sa", "user": {"token": "sa-token-123"}}],
        "contexts": [{"name": "op", "context": {"cluster": "kmock", "user": "sa"}}],
    }))
    cli = pathlib.Path(sys.executable).with_name("modelserve")
    log = tmp_path / "operator.log"
    for _attempt in range(3):
        # The ports are free when chosen, but anything on the machine may take one before the operator
        # binds it; the operator then exits with one line saying so, and new ports are chosen.
        liveness, metrics_port = free_ports(2)
        with log.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                str(cli), "operator", "--kubeconfig", str(kubeconfig), "--all-namespaces",
                "--liveness-port", str(liveness), "--metrics-port", str(metrics_port),
                "--bind-address", "127.0.0.1", "--log-format", "json",
                stdout=sink, stderr=asyncio.subprocess.STDOUT,
            )
        await eventually(lambda p=proc: p.returncode is not None or "watching" in log.read_text(),
                         what="the operator to start watching or exit")
        if proc.returncode is None or "Address already in use" not in log.read_text():
            break

    def deployment() -> Any:
        if proc.returncode is not None:  # it can never create it: fail at once, with its log
            raise RuntimeError(f"the operator exited with {proc.returncode}:\n{log.read_text()}")
        return cluster.get(DEPLOY, "iris")

    try:
        await cluster.request("POST", MD_PATH, md_body())
        await eventually(deployment, what="the Deployment from the CLI process")
        await converged(cluster)

        def get(port: int, path: str) -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                return str(resp.read().decode())

        assert "modelserve_operator_reconcile_total" in await asyncio.to_thread(get, metrics_port, "/metrics")
        await asyncio.to_thread(get, liveness, "/healthz")
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=60)
    output = log.read_bytes()
    tokens = {r.headers.get("Authorization") for r in list(cluster.server) if not is_test_client(r)}
    assert tokens == {"Bearer sa-token-123"}  # kopf's watches and the client: one identity
    first = output.decode().splitlines()[0]
    assert json.loads(first)["message"], first  # JSON log lines
