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
]


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
