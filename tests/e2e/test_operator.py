"""Scenarios 2 and 10: the operator as the chart's ServiceAccount, and an operator killed mid-reconcile.

The operator process authenticates with a TokenRequest token of the ServiceAccount `helm install`
created, so the chart's ClusterRole is what allows or refuses each call. The `operator` fixture fails
any test during which the API server answered the operator with 403; the control test here removes
one verb from the ClusterRole and shows that such a refusal is visible and that the operator recovers
once the permission is back.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from e2e_support import (
    MD,
    Cluster,
    Kubectl,
    OperatorProcess,
    Release,
    audit_events,
    audit_size,
    condition,
    modeldeployment,
    owned_by,
    pods_of,
    wait_for,
    wait_ready,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CHILD_KINDS = ("deployment", "service", "horizontalpodautoscaler", "poddisruptionbudget")


def test_operator_acts_as_the_charts_serviceaccount(
        kube: Kubectl, cluster: Cluster, release: Release, operator: OperatorProcess, ns: str) -> None:
    sa = Kubectl(operator.kubeconfig)
    assert sa("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout == release.user
    # The chart grants what the operator needs and nothing broader.
    assert sa("auth", "can-i", "patch", "deployments", "-n", ns, check=False).stdout.strip() == "yes"
    assert sa("auth", "can-i", "patch", "modeldeployments.serving.modelserve.io/status", "-n", ns,
              check=False).stdout.strip() == "yes"
    for verb, resource in (("get", "secrets"), ("create", "pods"), ("delete", "namespaces"),
                           ("update", "clusterroles.rbac.authorization.k8s.io")):
        assert sa("auth", "can-i", verb, resource, "-A", check=False).stdout.strip() == "no", (verb, resource)

    offset = audit_size(cluster.audit_log) if cluster.audit_log else 0
    kube.apply(modeldeployment("whoami"), namespace=ns)
    wait_ready(kube, "whoami", ns)
    if cluster.audit_log:
        # Who wrote the Deployment's spec (kube-controller-manager updates its status and revision).
        writers = {e["user"]["username"] for e in audit_events(cluster.audit_log, offset)
                   if e.get("verb") in ("create", "patch")
                   and (e.get("objectRef") or {}).get("resource") == "deployments"
                   and (e.get("objectRef") or {}).get("namespace") == ns
                   and not (e.get("objectRef") or {}).get("subresource")}
        assert writers == {release.user}, writers


def _clusterrole(kube: Kubectl, release: Release) -> dict[str, Any]:
    binding = next(b for b in kube.get("clusterrolebindings")
                   if any(s.get("name") == release.serviceaccount and s.get("namespace") == release.namespace
                          for s in b.get("subjects") or []))
    role: dict[str, Any] = kube.get("clusterrole", binding["roleRef"]["name"])
    return role


def test_a_missing_permission_is_caught_and_recovered_from(
        kube: Kubectl, cluster: Cluster, release: Release, operator_process: OperatorProcess,
        ns: str) -> None:
    """Control for the RBAC guard: take `patch services` away, see the 403, give it back, see Ready."""
    if operator_process.proc is None or operator_process.proc.poll() is not None:
        operator_process.start()
    role = _clusterrole(kube, release)
    original = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": role["metadata"]["name"], "labels": role["metadata"].get("labels", {}),
                             "annotations": role["metadata"].get("annotations", {})},
                "rules": role["rules"]}
    reduced = json.loads(json.dumps(original))
    for rule in reduced["rules"]:
        if "services" in rule.get("resources", []) and rule.get("apiGroups") == [""]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "patch"]
    log_offset = len(operator_process.log_text())
    audit_offset = audit_size(cluster.audit_log) if cluster.audit_log else 0
    kube("replace", "-f", "-", stdin=json.dumps(reduced))
    try:
        kube.apply(modeldeployment("norbac"), namespace=ns)

        def refused() -> bool:
            if cluster.audit_log:
                return any(e.get("user", {}).get("username") == release.user
                           and (e.get("responseStatus") or {}).get("code") == 403
                           and "/services" in e.get("requestURI", "")
                           for e in audit_events(cluster.audit_log, audit_offset))
            return "403" in operator_process.log_text()[log_offset:]

        wait_for("the API server to refuse the operator's Service apply", refused)
        md = kube.get(MD, "norbac", ns)
        assert (condition(md, "Ready") or {}).get("status") != "True"
        assert kube.get("service", "norbac", ns) is None
    finally:
        kube("replace", "-f", "-", stdin=json.dumps(original))
    # With the permission back the operator converges without a spec change.
    wait_ready(kube, "norbac", ns)
    assert kube.get("service", "norbac", ns) is not None


def test_operator_killed_during_reconcile_converges_without_duplicates_or_orphans(
        kube: Kubectl, operator: OperatorProcess, ns: str) -> None:
    names = [f"crash-{i:02d}" for i in range(16)]
    items = [dict(modeldeployment(n, scaling={"minReplicas": 1, "maxReplicas": 3}),
                  metadata={"name": n, "namespace": ns}) for n in names]
    kube.apply({"apiVersion": "v1", "kind": "List", "items": items})
    # Kill the operator as soon as it has started creating children: the batch is mid-reconcile.
    wait_for("the first child", lambda: kube.get("deployment", namespace=ns), interval=0.05)
    operator.kill()
    unfinished = [m["metadata"]["name"] for m in kube.get(MD, namespace=ns)
                  if (m.get("status") or {}).get("observedGeneration") != m["metadata"]["generation"]]
    assert unfinished, "the kill came too late to interrupt anything; the scenario did not happen"
    operator.start()

    mds = {n: wait_ready(kube, n, ns) for n in names}
    for kind in CHILD_KINDS:
        objs = kube.get(kind, namespace=ns)
        by_name = sorted(o["metadata"]["name"] for o in objs)
        assert by_name == sorted(names), f"{kind}: {by_name}"
        for obj in objs:
            owner = mds[obj["metadata"]["name"]]
            assert owned_by(obj, owner), obj["metadata"]
            refs = [r for r in obj["metadata"]["ownerReferences"] if r["kind"] == "ModelDeployment"]
            assert len(refs) == 1, refs
    # One live ReplicaSet per Deployment, one pod per model (minReplicas 1).
    for name in names:
        live = [rs for rs in kube.get("replicaset", namespace=ns,
                                      selector=f"serving.modelserve.io/modeldeployment={name}")
                if rs["spec"].get("replicas")]
        assert len(live) == 1, [rs["metadata"]["name"] for rs in live]
        wait_for(f"one pod of {name}", lambda name=name: len(pods_of(kube, name, ns)) == 1)  # type: ignore[misc]
