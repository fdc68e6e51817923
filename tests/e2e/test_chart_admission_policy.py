"""The chart's optional admission policy on the real API server (README "Security: the trust boundary").

The session's release is upgraded (`--reuse-values`) with `admissionPolicy.enabled=true`, restrictive
lists, and a namespaceSelector naming only this module's namespace, so other tests' ModelDeployments
are never judged by it; the finally block turns it off again. The API server starts enforcing a new
policy a moment after it is created, so the fixture polls a server-side dry run until the denial
appears (with a deadline) instead of sleeping. The same CEL is evaluated offline, case by case, in
tests/packaging/test_admission_policy.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_support import (
    CHART,
    MD,
    RELEASE,
    RELEASE_NAMESPACE,
    Kubectl,
    Release,
    modeldeployment,
    unique,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SUFFIX = "(modelserve admission policy)"
ALLOWED_IMAGE = "registry.example.com/ml/modelserve-server:0.1.0"
DENIED_IMAGE = "evil.example.net/miner:1"
LISTS = {
    "allowedImagePrefixes": ["registry.example.com/ml/"],
    "allowedServiceAccounts": ["model-reader"],
    "allowedPriorityClasses": ["inference"],
    "allowedSecrets": ["s3-credentials", "regcred"],
}
S3 = "s3://bucket/iris.onnx"

DENIED: list[tuple[str, dict[str, Any], str]] = [
    ("image", {"runtime": {"image": DENIED_IMAGE}},
     f"spec.runtime.image {DENIED_IMAGE} is not allowed: "
     "images must start with one of registry.example.com/ml/"),
    ("service-account", {"podTemplate": {"serviceAccountName": "cluster-admin-sa"}},
     "spec.podTemplate.serviceAccountName cluster-admin-sa is not allowed: "
     "allowed ServiceAccounts are model-reader"),
    ("priority-class", {"scheduling": {"priorityClassName": "system-node-critical"}},
     "spec.scheduling.priorityClassName system-node-critical is not allowed: "
     "allowed PriorityClasses are inference"),
    ("credentials-secret", {"model": {"uri": S3, "credentialsSecret": "db-password"}},
     "spec.model.credentialsSecret db-password is not allowed: allowed Secrets are s3-credentials, regcred"),
    ("env-secret", {"runtime": {"env": [
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "pw"}}}]}},
     "spec.runtime.env reads Secret db-password, which is not allowed"),
    ("pull-secret", {"podTemplate": {"imagePullSecrets": ["other-team-regcred"]}},
     "spec.podTemplate.imagePullSecrets names other-team-regcred, which is not allowed"),
    ("tls-secret", {"service": {"ingress": {"host": "a.example.com", "tlsSecret": "bank-cert"}}},
     "spec.service.ingress.tlsSecret bank-cert is not allowed"),
]  # fmt: skip

ALLOWED_SPEC: dict[str, Any] = {
    "model": {"uri": S3, "credentialsSecret": "s3-credentials"},
    "runtime": {"image": ALLOWED_IMAGE, "env": [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "regcred", "key": "token"}}}]},
    "podTemplate": {"serviceAccountName": "model-reader", "imagePullSecrets": ["regcred"]},
    "scheduling": {"priorityClassName": "inference"},
}


def _dry_run(kube: Kubectl, obj: dict[str, Any], namespace: str) -> Any:
    return kube("apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(obj), check=False)


def _helm_policy(kube: Kubectl, *values: str) -> None:
    kube.helm("upgrade", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--reuse-values", *values,
              "--wait", "--timeout", "5m")


@pytest.fixture(scope="module")
def policy_ns(kube: Kubectl, release: Release) -> Iterator[str]:
    """A namespace judged by the policy; `legacy` (a denied image) was created there before it."""
    name = unique("e2e-admission")
    kube("create", "namespace", name)
    kube.apply(modeldeployment("legacy", runtime={"image": DENIED_IMAGE}), namespace=name)
    probe = modeldeployment("probe", **DENIED[0][1])
    try:
        _helm_policy(kube, "--set", "admissionPolicy.enabled=true",
                     *[arg for key, items in LISTS.items()
                       for arg in ("--set-json", f"admissionPolicy.{key}={json.dumps(items)}")],
                     "--set-json", "admissionPolicy.namespaceSelector="
                     + json.dumps({"matchLabels": {"kubernetes.io/metadata.name": name}}))
        wait_for("the admission policy to be enforced", lambda: (
            (proc := _dry_run(kube, probe, name)).returncode != 0 and SUFFIX in proc.stderr), timeout=120)
        yield name
    finally:
        try:
            _helm_policy(kube, "--set", "admissionPolicy.enabled=false",
                         *[arg for key in LISTS for arg in ("--set-json", f"admissionPolicy.{key}=[]")],
                         "--set-json", "admissionPolicy.namespaceSelector={}")
            wait_for("the admission policy to be gone",
                     lambda: _dry_run(kube, probe, name).returncode == 0, timeout=120)
        finally:
            kube("delete", MD, "--all", "-n", name, "--wait=true", "--timeout=60s", check=False, timeout=90)
            kube("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.parametrize(("case", "spec", "fragment"), DENIED, ids=[c[0] for c in DENIED])
def test_denied_spec_is_refused_with_the_policys_message(
    kube: Kubectl, policy_ns: str, case: str, spec: dict[str, Any], fragment: str
) -> None:
    proc = kube.apply(modeldeployment(case, **spec), namespace=policy_ns, check=False)
    assert proc.returncode != 0, f"{case} was accepted:\n{proc.stdout}"
    assert fragment in proc.stderr and SUFFIX in proc.stderr, proc.stderr
    assert "ValidatingAdmissionPolicy" in proc.stderr, proc.stderr
    assert kube.get(MD, case, policy_ns) is None


def test_allowed_spec_passes(kube: Kubectl, policy_ns: str) -> None:
    kube.apply(modeldeployment("allowed", **ALLOWED_SPEC), namespace=policy_ns)
    stored = kube.get(MD, "allowed", policy_ns)
    assert stored["spec"]["runtime"]["image"] == ALLOWED_IMAGE
    # A spec that leaves every restricted field to the operator's defaults passes too.
    kube.apply(modeldeployment("defaults"), namespace=policy_ns)
    assert kube.get(MD, "defaults", policy_ns) is not None


def test_updates_are_judged_when_the_spec_changes(kube: Kubectl, policy_ns: str) -> None:
    kube.apply(modeldeployment("edited", **ALLOWED_SPEC), namespace=policy_ns)
    proc = kube.apply(modeldeployment("edited", **{**ALLOWED_SPEC, "runtime": {"image": DENIED_IMAGE}}),
                      namespace=policy_ns, check=False)
    assert proc.returncode != 0 and f"spec.runtime.image {DENIED_IMAGE} is not allowed" in proc.stderr, \
        proc.stderr
    assert kube.get(MD, "edited", policy_ns)["spec"]["runtime"]["image"] == ALLOWED_IMAGE


def test_object_from_before_the_policy_takes_metadata_updates_but_no_spec_change(
    kube: Kubectl, policy_ns: str
) -> None:
    """What the operator does to an existing object (annotations, finalizers) keeps working."""
    kube("label", MD, "legacy", "-n", policy_ns, "touched=yes")
    kube("annotate", MD, "legacy", "-n", policy_ns, "example.com/note=still-served")
    proc = kube("patch", MD, "legacy", "-n", policy_ns, "--type=merge",
                "-p", json.dumps({"spec": {"runtime": {"maxBatchSize": 16}}}), check=False)
    assert proc.returncode != 0 and f"spec.runtime.image {DENIED_IMAGE} is not allowed" in proc.stderr, \
        proc.stderr


def test_namespaces_outside_the_selector_are_not_judged(kube: Kubectl, policy_ns: str) -> None:
    other = unique("e2e-admission-other")
    kube("create", "namespace", other)
    try:
        proc = _dry_run(kube, modeldeployment("free", runtime={"image": DENIED_IMAGE}), other)
        assert proc.returncode == 0, proc.stderr
    finally:
        kube("delete", "namespace", other, "--wait=false", check=False)
