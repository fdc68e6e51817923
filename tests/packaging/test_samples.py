"""manifests/samples/: every ModelDeployment parses with the typed API and validates against the
generated CRD's OpenAPI schema; the other objects validate against the Kubernetes schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from tests.packaging.conftest import K8S_VERSION, ROOT

SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
CRD = ROOT / "charts" / "modelserve" / "crds" / "serving.modelserve.io_modeldeployments.yaml"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("served")]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_the_required_samples_exist() -> None:
    specs = {p.name: [d["spec"] for d in _docs(p) if d["kind"] == "ModelDeployment"] for p in SAMPLES}
    flat = [s for group in specs.values() for s in group]
    assert any(s.get("resources", {}).get("gpu", 0) == 0 for s in flat), "no CPU model sample"
    assert any(
        s.get("resources", {}).get("gpu", 0) > 0
        and s["scaling"].get("metric", "inflight") == "inflight"
        and s["scaling"]["maxReplicas"] > s["scaling"].get("minReplicas", 1)
        for s in flat
    ), "no GPU sample autoscaled on in-flight requests"
    assert any(s["model"]["uri"].startswith("s3://") and s["model"].get("credentialsSecret") for s in flat)
    fixed = [s for s in flat if s["scaling"]["minReplicas"] == s["scaling"]["maxReplicas"]]
    assert fixed, "no fixed-size sample"


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_is_valid(path: Path) -> None:
    from modelserve_operator.api import API_VERSION, KIND, parse_spec

    docs = _docs(path)
    assert any(d["kind"] == KIND for d in docs)
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    for doc in docs:
        if doc["kind"] == KIND:
            assert doc["apiVersion"] == API_VERSION
            spec = parse_spec(doc["spec"])
            # The schema the API server enforces (CEL rules aside, which the typed model mirrors);
            # a CRD's openAPIV3Schema is OpenAPI 3.0, i.e. draft-4 keywords (boolean exclusiveMinimum).
            stored = {k: v for k, v in doc.items() if k != "status"}
            jsonschema.Draft4Validator(_crd_schema()).validate(stored)
            if spec.model.credentials_secret:
                assert spec.model.credentials_secret in secrets, "the credentials Secret is not in the sample"
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
