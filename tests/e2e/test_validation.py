"""Scenario 5: the API server itself rejects invalid ModelDeployments, with messages a user can act on.

Validation lives in the CRD (OpenAPI schema, CEL rules) so that `kubectl apply` fails at once,
before any operator sees the object; these tests apply through kubectl exactly as a user would
(kubectl 1.35 uses strict field validation, so an unknown field is an error, not a warning).
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import Kubectl, Release, modeldeployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

INVALID: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "min-greater-than-max",
        {"scaling": {"minReplicas": 3, "maxReplicas": 2}},
        ["spec.scaling", "minReplicas must be less than or equal to scaling.maxReplicas"],
    ),
    (
        "negative-gpus",
        {"resources": {"gpu": -1}},
        ["spec.resources.gpu", "-1", "greater than or equal to 0"],
    ),
    (
        "unknown-uri-scheme",
        {"model": {"uri": "ftp://models.example.com/iris.onnx"}},
        ["spec.model.uri", "s3://", "pvc://"],  # names the allowed schemes
    ),
    (
        "unknown-field",
        {"resources": {"gpus": 1}},
        ['unknown field "spec.resources.gpus"'],
    ),
    (
        "http-port-out-of-range",
        {"service": {"httpPort": 70000}},
        ["spec.service.httpPort", "70000", "less than or equal to 65535"],
    ),
    # Issue 10: specs that passed `kubectl apply` and then failed late (CEL rules, one row each
    # in modelserve_operator.api; the Kubernetes quantity library runs on the real API server).
    ("negative-memory", {"resources": {"requests": {"memory": "-1Gi"}}},
     ["spec.resources.requests.memory", "must be at least 32Mi"]),
    ("one-byte-memory", {"resources": {"limits": {"memory": 1}}},
     ["spec.resources.limits.memory", "must be at least 32Mi"]),
    ("min-available-999", {"disruption": {"minAvailable": "999%"}},
     ["spec.disruption.minAvailable", "at most 100%"]),
    ("min-available-never-met", {"scaling": {"maxReplicas": 3}, "disruption": {"minAvailable": 5}},
     ["spec.disruption.minAvailable", "must not exceed scaling.maxReplicas"]),
    ("toleration-exists-value",
     {"scheduling": {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}},
     ["operator Exists has no value"]),
    ("toleration-seconds", {"scheduling": {"tolerations": [{"key": "k", "operator": "Exists",
                                                            "tolerationSeconds": 5}]}},
     ["NoExecute only"]),
    ("node-selector-key", {"scheduling": {"nodeSelector": {"a b": "x"}}},
     ["spec.scheduling.nodeSelector", "must be label keys"]),
    ("topology-key", {"scheduling": {"topologySpread": {"topologyKey": "-x"}}},
     ["spec.scheduling.topologySpread.topologyKey", "must be a label key"]),
    ("pod-label-value", {"podTemplate": {"labels": {"team": "a/b"}}},
     ["spec.podTemplate.labels", "label values"]),
    ("service-annotation-key", {"service": {"annotations": {"a b": "x"}}},
     ["spec.service.annotations", "must be label keys"]),
    ("priority-class-name", {"scheduling": {"priorityClassName": "High_Prio"}},
     ["spec.scheduling.priorityClassName", "DNS subdomain"]),
    ("image-pull-secret", {"podTemplate": {"imagePullSecrets": ["Regcred"]}},
     ["spec.podTemplate.imagePullSecrets", "Secret names"]),
    ("tls-secret", {"service": {"ingress": {"host": "a.example.com", "tlsSecret": "my_cert"}}},
     ["spec.service.ingress.tlsSecret", "DNS subdomain"]),
    ("env-value-and-value-from", {"runtime": {"env": [
        {"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}},
     ["either value or valueFrom, not both"]),
    ("env-duplicate", {"runtime": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
     ["spec.runtime.env", "names must be unique"]),
    ("args-host", {"runtime": {"args": ["--host", "127.0.0.1"]}},
     ["spec.runtime.args", "must not set --host"]),
    ("uri-root", {"model": {"uri": "//"}}, ["spec.model.uri", "a local model path"]),
    ("uri-etc", {"model": {"uri": "/etc"}}, ["spec.model.uri", "a local model path"]),
    ("pvc-dot-dot", {"model": {"uri": "pvc://claim/../.."}}, ["spec.model.uri", "'..' segments"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "spec", "fragments"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_modeldeployment_is_rejected_with_a_readable_message(
    kube: Kubectl, release: Release, ns: str, case: str, spec: dict[str, Any], fragments: list[str]
) -> None:
    proc = kube.apply(modeldeployment(case, **spec), namespace=ns, check=False)
    assert proc.returncode != 0, f"{case} was accepted:\n{proc.stdout}"
    message = proc.stderr
    assert "ModelDeployment" in message or "modeldeployments" in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from kubectl's message:\n{message}"
    assert "should match '" not in message, f"a raw regular expression is not a readable message:\n{message}"
    # Nothing was stored.
    assert kube.get("modeldeployments", case, ns) is None


def test_valid_modeldeployment_is_accepted_with_defaults(kube: Kubectl, release: Release, ns: str) -> None:
    """The control case: the same path accepts a valid object, and the schema's defaults are applied."""
    kube.apply(modeldeployment("valid", scaling={"minReplicas": 1, "maxReplicas": 3},
                               resources={"gpu": 1}), namespace=ns)
    md = kube.get("modeldeployments", "valid", ns)
    assert md["spec"]["scaling"]["metric"] == "inflight"
    assert md["spec"]["scaling"]["scaleDownStabilizationSeconds"] == 300
    assert md["spec"]["model"]["version"] == "1"
