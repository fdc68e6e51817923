"""The reconciler against an in-memory API (no kopf, no HTTP): which calls it makes, and in what order.

Why not kmock here: these tests need what kmock does not keep, ``metadata.managedFields`` (who
owns ``spec.replicas``), and they need *every* call the reconciler can make in one place, to
hold the RBAC table to exactly what the code uses: a permission no code path needs is as much a
defect as a missing one (the issue asks for the exact verbs, no more).

The store below answers the client layer's one request path (:meth:`Kube._request_sync`), so
:meth:`Kube.request`'s RBAC check and URL building run for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from typing import Any

import kubernetes.client
import pytest

from modelserve_operator import rbac
from modelserve_operator.api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from modelserve_operator.config import OperatorConfig
from modelserve_operator.drift import with_hash
from modelserve_operator.handlers import build_registry
from modelserve_operator.kube import FIELD_MANAGER, HANDOVER_FIELD_MANAGER, Kube, KubeError, Resource
from modelserve_operator.reconcile import Reconciler
from modelserve_operator.render import CHILD_KINDS
from modelserve_operator.render.labels import selector_labels

NS = "models"
MD_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/iris"
DEPLOY_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/iris"


class StoreKube(Kube):
    """:class:`Kube` over a dict of path -> object; records (group, resource, verb) and applies."""

    def __init__(self) -> None:
        configuration = kubernetes.client.Configuration()
        configuration.host = "http://127.0.0.1:9"  # never contacted
        super().__init__(configuration)
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: set[tuple[str, str, str]] = set()
        self.applies: list[tuple[str, str, dict[str, Any]]] = []  # (path, field manager, body)
        self.replica_owners: dict[str, set[str]] = {}
        self.discovery = {"resources": [{"kind": "PodMonitor", "name": "podmonitors"}]}

    async def request(self, verb: str, res: Resource, **kwargs: Any) -> Any:
        result = await super().request(verb, res, **kwargs)  # RBAC-checked before reaching the store
        sub = kwargs.get("sub")
        self.calls.add((res.group, f"{res.plural}/{sub}" if sub else res.plural, verb))
        return result

    def _request_sync(self, method: str, path: str, *, query: Any = None, body: Any = None,
                      content_type: str | None = None) -> Any:
        params = dict(query or [])
        if method == "GET" and path.count("/") <= 3:  # discovery: /apis/<group>/<version>
            return copy.deepcopy(self.discovery)
        if method == "GET":
            if path in self.objects:
                return copy.deepcopy(self.objects[path])
            items = [o for p, o in self.objects.items() if p.rsplit("/", 1)[0] == path]
            if items or path.endswith(("/pods", f"/{PLURAL}")):
                return {"items": copy.deepcopy(items)}
            raise KubeError(404, "NotFound", path)
        if method == "PATCH" and path.endswith("/status"):
            self.objects[path.removesuffix("/status")]["status"] = copy.deepcopy(body["status"])
            return copy.deepcopy(self.objects[path.removesuffix("/status")])
        if method == "PATCH":
            return self._apply(path, params["fieldManager"], body)
        if method == "DELETE":
            if self.objects.pop(path, None) is None:
                raise KubeError(404, "NotFound", path)
            return {}
        if method == "POST":
            self.objects[f"{path}/{body['metadata']['name']}"] = copy.deepcopy(body)
            return copy.deepcopy(body)
        raise AssertionError(f"unexpected {method} {path}")

    def _apply(self, path: str, manager: str, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply, with the one ownership rule these tests need (as a v1.35 API server
        behaves): ``spec.replicas`` that no applier owns any more falls back to its default, 1."""
        self.applies.append((path, manager, copy.deepcopy(body)))
        live = self.objects.get(path)
        owners = self.replica_owners.setdefault(path, set())
        spec = body.get("spec", {})
        if live is not None and set(spec) == {"replicas"}:  # a partial apply of replicas alone
            merged = copy.deepcopy(live)
            merged["spec"]["replicas"] = spec["replicas"]
        else:
            merged = copy.deepcopy(body)
            merged["metadata"]["managedFields"] = (live or body)["metadata"].get("managedFields", [])
        if "replicas" in spec:
            owners.add(manager)
        elif body.get("kind") == "Deployment":
            owners.discard(manager)
            previous = (live or {}).get("spec", {}).get("replicas", 1)
            merged["spec"]["replicas"] = previous if owners else 1
        self.objects[path] = merged
        return copy.deepcopy(merged)


def md(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {"name": "iris", "namespace": NS, "uid": "uid-iris", "generation": 1},
        "spec": {"model": {"uri": "https://models.example/iris.onnx"}, **spec},
    }


def set_spec(kube: StoreKube, **spec: Any) -> None:
    kube.objects[MD_PATH]["spec"] = md(**spec)["spec"]
    kube.objects[MD_PATH]["metadata"]["generation"] += 1


async def test_fixed_to_autoscaled_hands_the_replicas_over_before_dropping_them() -> None:
    """On a real API server, dropping an Apply-owned ``replicas`` resets it to 1 (checked on
    v1.35: 3 -> 1); the handover keeps 3 until the HPA decides."""
    kube = StoreKube()
    kube.objects[MD_PATH] = md(scaling={"minReplicas": 3, "maxReplicas": 3})
    reconciler = Reconciler(kube, OperatorConfig())
    await reconciler.reconcile(kube.objects[MD_PATH], "test")
    assert kube.objects[DEPLOY_PATH]["spec"]["replicas"] == 3
    kube.objects[DEPLOY_PATH]["metadata"]["managedFields"] = [
        {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
    ]
    set_spec(kube, scaling={"minReplicas": 2, "maxReplicas": 6})
    kube.applies.clear()

    outcome = await reconciler.reconcile(kube.objects[MD_PATH], "test")
    deployment_applies = [(manager, body) for path, manager, body in kube.applies if path == DEPLOY_PATH]
    assert [manager for manager, _ in deployment_applies] == [HANDOVER_FIELD_MANAGER, FIELD_MANAGER]
    assert deployment_applies[0][1]["spec"] == {"replicas": 3}
    assert "replicas" not in deployment_applies[1][1]["spec"]
    assert kube.objects[DEPLOY_PATH]["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler/iris" in outcome.applied


async def test_a_new_autoscaled_deployment_starts_at_min_replicas() -> None:
    """A Deployment applied without ``replicas`` starts at the API default of 1; the HPA would
    raise it only at its next sync. The operator seeds ``minReplicas`` once, at creation, under
    the handover manager (so the HPA, not the operator, owns the field afterwards)."""
    kube = StoreKube()
    kube.objects[MD_PATH] = md(scaling={"minReplicas": 2, "maxReplicas": 6})
    reconciler = Reconciler(kube, OperatorConfig())
    await reconciler.reconcile(kube.objects[MD_PATH], "test")
    deployment_applies = [(manager, body) for path, manager, body in kube.applies if path == DEPLOY_PATH]
    assert [manager for manager, _ in deployment_applies] == [FIELD_MANAGER, HANDOVER_FIELD_MANAGER]
    assert "replicas" not in deployment_applies[0][1]["spec"]
    assert deployment_applies[1][1]["spec"] == {"replicas": 2}
    assert kube.objects[DEPLOY_PATH]["spec"]["replicas"] == 2

    kube.applies.clear()  # an unchanged spec: the seed is not repeated
    await reconciler.reconcile(kube.objects[MD_PATH], "test")
    assert [path for path, _, _ in kube.applies if path == DEPLOY_PATH] == []


async def test_no_handover_when_the_operator_does_not_own_the_replicas() -> None:
    """Once the HPA has written replicas (its manager owns them), changes apply directly."""
    kube = StoreKube()
    kube.objects[MD_PATH] = md(scaling={"minReplicas": 1, "maxReplicas": 4})
    reconciler = Reconciler(kube, OperatorConfig())
    await reconciler.reconcile(kube.objects[MD_PATH], "test")
    kube.objects[DEPLOY_PATH]["spec"]["replicas"] = 4
    kube.objects[DEPLOY_PATH]["metadata"]["managedFields"] = [
        {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {}}}},
        {"manager": "kube-controller-manager", "operation": "Update",
         "fieldsV1": {"f:spec": {"f:replicas": {}}}},
    ]
    set_spec(kube, scaling={"minReplicas": 1, "maxReplicas": 4}, runtime={"maxBatchSize": 8})
    kube.applies.clear()
    await reconciler.reconcile(kube.objects[MD_PATH], "test")
    assert [m for p, m, _ in kube.applies if p == DEPLOY_PATH] == [FIELD_MANAGER]


def kopf_calls() -> set[tuple[str, str, str]]:
    """What kopf itself does with this registry and settings: list + watch every resource a
    handler names, and patch the ModelDeployment (its progress and diff-base annotations)."""
    registry = build_registry()
    calls: set[tuple[str, str, str]] = set()
    for handler in [*registry._changing.get_all_handlers(), *registry._watching.get_all_handlers()]:
        selector = handler.selector
        assert selector is not None and selector.group is not None
        plural = selector.plural or selector.any_name
        assert isinstance(plural, str)
        calls |= {(selector.group, plural, "list"), (selector.group, plural, "watch")}
    return calls | {(GROUP, PLURAL, "patch")}


async def reconciler_calls() -> set[tuple[str, str, str]]:
    """Every call the reconciler makes across its paths: create all children, read a pvc:// claim,
    list pods, write status and events, delete unwanted children, resync."""
    kube = StoreKube()
    spec_all: dict[str, Any] = {
        "scaling": {"minReplicas": 1, "maxReplicas": 3},
        "service": {"ingress": {"host": "iris.example.com"}},
    }
    kube.objects[MD_PATH] = md(**spec_all)
    kube.objects[f"/api/v1/namespaces/{NS}/pods/iris-1"] = {
        "metadata": {"name": "iris-1", "namespace": NS, "labels": selector_labels("iris")},
        "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                   "message": "0/1 nodes are available"}]},
    }
    reconciler = Reconciler(kube, OperatorConfig(), debounce=0)
    outcome = await reconciler.reconcile(kube.objects[MD_PATH], "test")
    assert {a.split("/")[0] for a in outcome.applied} == {kind for _, kind in CHILD_KINDS}

    set_spec(kube, model={"uri": "pvc://claim/iris.onnx"}, monitoring={"podMonitor": False})
    kube.objects[f"/api/v1/namespaces/{NS}/persistentvolumeclaims/claim"] = {"metadata": {"name": "claim"}}
    outcome = await reconciler.reconcile(kube.objects[MD_PATH], "test")
    assert set(outcome.deleted) == {"HorizontalPodAutoscaler/iris", "PodDisruptionBudget/iris",
                                    "Ingress/iris", "PodMonitor/iris"}

    resync = asyncio.create_task(reconciler.resync_forever((NS,), 0.01))
    while ("serving.modelserve.io", PLURAL, "list") not in kube.calls:
        await asyncio.sleep(0.01)
    resync.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await resync
    await reconciler.close()
    return kube.calls


async def test_rbac_table_is_exactly_what_the_code_uses() -> None:
    used = kopf_calls() | await reconciler_calls()
    # Checked by the API server on the calls above rather than made as requests: a server-side
    # apply that creates its object needs "create", and ownerReferences with blockOwnerDeletion
    # need "update" on the owner's finalizers (OwnerReferencesPermissionEnforcement).
    implied = {(group, resource, "create") for group, resource, verb in used
               if verb == "patch" and group != GROUP}
    implied |= {(GROUP, f"{PLURAL}/finalizers", "update")}
    granted = {(p.api_group, p.resource, verb) for p in rbac.PERMISSIONS for verb in p.verbs}
    assert granted - (used | implied) == set(), "permissions no code path needs"
    assert (used | implied) - granted == set(), "calls the table does not grant"


@pytest.mark.parametrize("owned", [True, False])
def test_applied_by_reads_managed_fields(owned: bool) -> None:
    from modelserve_operator.drift import applied_by

    fields: dict[str, Any] = {"f:spec": {"f:replicas": {}}} if owned else {"f:spec": {"f:template": {}}}
    live = with_hash({"metadata": {"managedFields": [
        {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": fields},
        {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
    ]}})
    assert applied_by(live, FIELD_MANAGER, ("spec", "replicas")) is owned
    assert not applied_by(live, "kubectl", ("spec", "replicas"))  # an Update is not an apply
