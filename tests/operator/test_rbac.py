"""The permissions table: exact verbs, no wildcards, and enough for everything render produces."""

from __future__ import annotations

import kubernetes_validate
import pytest

from modelserve_operator import rbac
from modelserve_operator.api import GROUP, PLURAL
from modelserve_operator.render import CHILD_KINDS

# kind -> plural resource of every child kind (the table must name the same resources).
PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Ingress": "ingresses",
    "PodMonitor": "podmonitors",
}


def group_of(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def test_no_wildcards_and_known_verbs() -> None:
    for p in rbac.PERMISSIONS:
        assert "*" not in p.api_group and "*" not in p.resource and "*" not in p.verbs, p
        assert set(p.verbs) <= rbac.VERBS, p
        assert p.why, p
    for rule in rbac.cluster_role_rules():
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule


def test_validate_rejects_wildcards() -> None:
    with pytest.raises(ValueError, match="wildcard"):
        rbac._validate([rbac.Permission("apps", "*", ("get",), "x")])
    with pytest.raises(ValueError, match="unknown verbs"):
        rbac._validate([rbac.Permission("apps", "deployments", ("escalate-all",), "x")])


@pytest.mark.parametrize(("api_version", "kind"), CHILD_KINDS)
def test_every_child_kind_is_fully_manageable(api_version: str, kind: str) -> None:
    """Server-side apply (patch, and create when it creates), read; watches for drift on all but
    the PodMonitor (whose API may not exist; the resync restores it); delete for the optional
    children only (the Deployment and Service go with their owner, by garbage collection)."""
    verbs = ["get", "create", "patch"]
    if kind != "PodMonitor":
        verbs += ["list", "watch"]
    if kind not in ("Deployment", "Service"):
        verbs.append("delete")
    for verb in verbs:
        assert rbac.allows(group_of(api_version), PLURALS[kind], verb), (kind, verb)
    if kind in ("Deployment", "Service"):
        assert not rbac.allows(group_of(api_version), PLURALS[kind], "delete"), kind


def test_custom_resource_permissions() -> None:
    assert rbac.allows(GROUP, PLURAL, "watch")
    assert rbac.allows(GROUP, PLURAL, "patch")
    assert rbac.allows(GROUP, f"{PLURAL}/status", "patch")
    # The operator never creates or deletes ModelDeployments, and never touches Secrets.
    assert not rbac.allows(GROUP, PLURAL, "create")
    assert not rbac.allows(GROUP, PLURAL, "delete")
    assert not rbac.allows("", "secrets", "get")
    assert not rbac.allows("", "pods", "delete")
    assert rbac.allows("", "pods", "list") and rbac.allows("", "events", "create")


def test_cluster_role_rules_are_merged_and_complete() -> None:
    rules = rbac.cluster_role_rules()
    seen: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert len(rule["apiGroups"]) == 1
        for resource in rule["resources"]:
            key = (rule["apiGroups"][0], resource)
            assert key not in seen, f"{key} appears in two rules"
            seen[key] = set(rule["verbs"])
    expected: dict[tuple[str, str], set[str]] = {}
    for p in rbac.PERMISSIONS:
        expected.setdefault((p.api_group, p.resource), set()).update(p.verbs)
    assert seen == expected
    # Resources with the same verbs share one rule.
    manage = next(r for r in rules if r["apiGroups"] == ["apps"] and "deployments" in r["resources"])
    assert manage["verbs"] == ["get", "list", "watch", "create", "patch"]
    assert rules == rbac.cluster_role_rules(), "not deterministic"


def test_cluster_role_is_a_valid_kubernetes_object() -> None:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "modelserve-operator"},
        "rules": rbac.cluster_role_rules(),
    }
    kubernetes_validate.validate(role, "1.35.0", strict=True)


def test_appended_rows_are_merged() -> None:
    extra = (*rbac.PERMISSIONS, rbac.Permission("apps", "deployments", ("update",), "test"))
    rule = next(r for r in rbac.cluster_role_rules(extra) if "deployments" in r["resources"])
    assert "update" in rule["verbs"] and "patch" in rule["verbs"]
    assert rbac.allows("apps", "deployments", "update", extra)
    assert not rbac.allows("apps", "deployments", "update")
