"""The ModelDeployment CRD: generated, structural, validating, and in step with the typed model.

What the API server would do with a ModelDeployment is reproduced offline here: apply the
schema's defaults, validate the OpenAPI schema (with unknown fields rejected, as kubectl's
strict field validation does), and evaluate every CEL rule (cel-python). Invalid specs must be
rejected both by that and by the pydantic model, with the same readable message.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pydantic
import pytest
import yaml

from modelserve_operator import api
from modelserve_operator.cli import crd_main
from modelserve_operator.crd import CRD_OUTPUT_PATHS, build_crd, render_crd_yaml
from modelserve_operator.quantity import parse_quantity, try_parse_quantity

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
CRD = build_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


# --------------------------------------------------------------------------- an offline API server


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """Structural defaulting as the API server does it: parents first, then their fields."""
    obj = copy.deepcopy(obj)
    if isinstance(obj, dict) and "properties" in schema:
        for name, prop in schema["properties"].items():
            if name not in obj and "default" in prop:
                obj[name] = copy.deepcopy(prop["default"])
            if name in obj:
                obj[name] = apply_defaults(prop, obj[name])
    elif isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        obj = {k: apply_defaults(schema["additionalProperties"], v) for k, v in obj.items()}
    elif isinstance(obj, list) and "items" in schema:
        obj = [apply_defaults(schema["items"], item) for item in obj]
    return obj


def strict_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema as Draft 4 JSON Schema, with unknown fields rejected (strict field validation)."""
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if "properties" in schema:
        out["properties"] = {k: strict_json_schema(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = strict_json_schema(schema["additionalProperties"])
    if "items" in schema:
        out["items"] = strict_json_schema(schema["items"])
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    return out


_CEL = celpy.Environment()


class CelQuantity:
    """A value of the Kubernetes CEL quantity library (``quantity('1Gi')``), compared exactly."""

    def __init__(self, text: Any) -> None:
        self.value = parse_quantity(str(text))


def _is_quantity(text: Any) -> celpy.celtypes.BoolType:
    return celpy.celtypes.BoolType(try_parse_quantity(str(text)) is not None)


def _compare(a: CelQuantity, b: CelQuantity) -> celpy.celtypes.IntType:
    return celpy.celtypes.IntType((a.value > b.value) - (a.value < b.value))


# The API server's Kubernetes CEL libraries that the rules use, over the operator's own quantity
# parser (cel-python has none of them).
KUBERNETES_CEL_FUNCTIONS: dict[str, Any] = {
    "quantity": CelQuantity,
    "isQuantity": _is_quantity,
    "compareTo": _compare,
    "isLessThan": lambda a, b: celpy.celtypes.BoolType(a.value < b.value),
    "isGreaterThan": lambda a, b: celpy.celtypes.BoolType(a.value > b.value),
    "sign": lambda a: celpy.celtypes.IntType((a.value > 0) - (a.value < 0)),
}


def typed(schema: dict[str, Any], obj: Any) -> Any:
    """Values as CEL sees them on the API server: a ``number`` field is a double even if written 5."""
    if schema.get("type") == "number" and isinstance(obj, int):
        return float(obj)
    if isinstance(obj, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {
            k: typed(props.get(k) or (extra if isinstance(extra, dict) else {}), v) for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [typed(schema.get("items", {}), v) for v in obj]
    return obj


def cel_failures(schema: dict[str, Any], obj: Any, path: str = "") -> Iterator[str]:
    """Messages of every CEL rule that ``obj`` breaks, evaluated where the schema declares it."""
    for rule in schema.get("x-kubernetes-validations", []):
        program = _CEL.program(_CEL.compile(rule["rule"]), functions=KUBERNETES_CEL_FUNCTIONS)
        result = program.evaluate({"self": celpy.json_to_cel(typed(schema, obj))})
        if isinstance(result, Exception) or not bool(result):
            yield rule["message"]
    if isinstance(obj, dict):
        for name, prop in schema.get("properties", {}).items():
            if name in obj:
                yield from cel_failures(prop, obj[name], f"{path}.{name}")
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            yield from cel_failures(schema["items"], item, f"{path}[{i}]")


def admit(md: dict[str, Any]) -> list[str]:
    """What an API server with this CRD says about ``md``: [] when admitted, else the errors."""
    defaulted = apply_defaults(SCHEMA, md)
    validator = jsonschema.Draft4Validator(strict_json_schema(SCHEMA))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(defaulted)]
    return errors or list(cel_failures(SCHEMA, defaulted))


def samples() -> list[tuple[str, dict[str, Any]]]:
    found = [(p.name, yaml.safe_load(p.read_text())) for p in sorted(GOLDEN.glob("*.input.yaml"))]
    for path in sorted((ROOT / "manifests" / "samples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == api.KIND:
                found.append((f"{path.name}:{doc['metadata']['name']}", doc))
    return found


def md_with(spec: dict[str, Any], name: str = "demo") -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": spec}


# --------------------------------------------------------------------------- generated and committed


@pytest.mark.parametrize("relative", CRD_OUTPUT_PATHS)
def test_committed_crd_is_generated(relative: str) -> None:
    path = ROOT / relative
    assert path.exists(), f"{relative} missing: run `make generate`"
    assert path.read_text() == render_crd_yaml(), f"{relative} is stale: run `make generate`"
    assert path.read_text().startswith("# generated by `make generate`, do not edit")


def test_generate_step_writes_the_same_files(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("modelserve_generate", ROOT / "hack" / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    written = generate.crds(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(CRD_OUTPUT_PATHS)
    for relative in CRD_OUTPUT_PATHS:
        assert (tmp_path / relative).read_text() == (ROOT / relative).read_text()


def test_modelserve_crd_prints_it() -> None:
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert crd_main([]) == 0
    assert buf.getvalue() == render_crd_yaml()
    assert list(yaml.safe_load_all(buf.getvalue())) == [CRD]


# --------------------------------------------------------------------------- shape of the CRD


def test_crd_validates_against_kubernetes_schema() -> None:
    kubernetes_validate.validate(CRD, "1.35.0", strict=True)


def test_names_scope_subresources_and_columns() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "modeldeployments.serving.modelserve.io"
    assert spec["group"] == api.GROUP and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ModelDeployment" and spec["names"]["plural"] == "modeldeployments"
    assert spec["names"]["shortNames"] == ["md"]
    assert VERSION["name"] == "v1alpha1" and VERSION["served"] and VERSION["storage"]
    assert VERSION["subresources"]["status"] == {}
    assert VERSION["subresources"]["scale"] == {
        "specReplicasPath": ".spec.scaling.minReplicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = [c["name"].upper() for c in VERSION["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["MODEL", "READY", "REPLICAS", "URL", "METRICS", "AGE"]
    # Every column points at a field the schema declares (or metadata).
    for column in VERSION["additionalPrinterColumns"]:
        top, field = column["jsonPath"].split(".")[1:3]
        field = field.split("[")[0]
        if top != "metadata":
            assert field in SCHEMA["properties"][top]["properties"], column


def _walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from _walk(prop, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def test_schema_is_structural() -> None:
    text = json.dumps(SCHEMA)
    assert "$ref" not in text and '"null"' not in text and '"title"' not in text
    for path, node in _walk(SCHEMA):
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            assert "type" not in node, path
            continue
        assert "anyOf" not in node and "oneOf" not in node and "allOf" not in node, path
        assert node.get("type") in ("object", "array", "string", "integer", "number", "boolean"), path
        if "properties" in node:
            assert "additionalProperties" not in node, path
        if node.get("type") == "array":
            assert "items" in node, path
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert node["type"] == "object" and "properties" not in node, path


# Free-form Kubernetes types, and nothing else, keep unknown fields.
PRESERVE_UNKNOWN = {".spec.runtime.env[].valueFrom", ".spec.scheduling.affinity"}
# Optional fields whose absence means something (documented in their descriptions), so no default.
NO_DEFAULT = {
    ".spec.model", ".spec.model.uri", ".spec.model.name", ".spec.model.sha256",
    ".spec.model.credentialsSecret",
    ".spec.runtime.image", ".spec.runtime.intraOpThreads", ".spec.runtime.args", ".spec.runtime.env",
    ".spec.resources.gpuResource", ".spec.resources.limits.cpu", ".spec.resources.limits.memory",
    ".spec.scaling.target", ".spec.scheduling.nodeSelector", ".spec.scheduling.tolerations",
    ".spec.scheduling.affinity", ".spec.scheduling.priorityClassName", ".spec.scheduling.runtimeClassName",
    ".spec.service.annotations", ".spec.service.ingress", ".spec.podTemplate.labels",
    ".spec.podTemplate.annotations", ".spec.podTemplate.serviceAccountName",
    ".spec.podTemplate.imagePullSecrets",
    ".spec.runtime.accelerator.gpuMemLimit", ".spec.runtime.accelerator.engineCache.claimName",
    ".spec.runtime.accelerator.dynamicDims",
}  # fmt: skip


def test_every_field_has_a_description_and_spec_fields_defaults() -> None:
    preserved = set()
    for path, node in _walk(SCHEMA):
        if not path or path in (".apiVersion", ".kind", ".metadata"):
            continue
        if path.endswith(("[]", ".*")):
            continue  # items of a list or map share the field's description
        assert node.get("description"), f"{path} has no description"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            preserved.add(path)
    assert preserved == PRESERVE_UNKNOWN
    spec_fields = {p: n for p, n in _walk(SCHEMA["properties"]["spec"], ".spec")}
    for path, node in spec_fields.items():
        if path == ".spec" or "[]" in path or path.endswith(".*") or ".ingress." in path:
            continue
        if path in NO_DEFAULT:
            assert "default" not in node, f"{path} unexpectedly has a default"
        else:
            assert "default" in node, f"{path} has no default (add one, or list it in NO_DEFAULT)"


def test_defaults_pass_the_cel_rules_as_written() -> None:
    """The API server evaluates each default against the rules at its level, without nested
    defaulting (a real kube-apiserver refused ``default: {}`` on ``scaling`` for this reason)."""
    checked = 0
    for path, node in _walk(SCHEMA):
        if "default" in node and node.get("x-kubernetes-validations"):
            assert list(cel_failures(node, node["default"])) == [], path
            checked += 1
    assert checked >= 2


def test_crd_defaults_equal_the_models_defaults() -> None:
    """Defaulting by the API server and by pydantic give the same spec."""
    for name, md in samples():
        by_server = apply_defaults(SCHEMA["properties"]["spec"], md["spec"])
        by_model = api.dump_spec(api.parse_spec(md["spec"]))

        def prune(value: Any) -> Any:
            if isinstance(value, dict):
                pruned = {k: prune(v) for k, v in value.items()}
                return {k: v for k, v in pruned.items() if v not in ([], {})}
            return value

        assert prune(by_server) == prune(by_model), name


EXPECTED_RULES = {
    "self.minReplicas <= self.maxReplicas",
    "self.grpcPort == 0 || self.grpcPort != self.httpPort",
    "!has(self.credentialsSecret) || self.uri.startsWith('s3://')",
    "!has(self.sha256) || !self.uri.startsWith('pvc://')",
}


def test_cel_rules_present_with_messages() -> None:
    rules = {}
    for _, node in _walk(SCHEMA):
        for rule in node.get("x-kubernetes-validations", []):
            rules[rule["rule"]] = rule["message"]
            _CEL.compile(rule["rule"])  # parses as CEL
            assert len(rule["message"]) > 20, rule
    assert set(rules) >= EXPECTED_RULES
    assert any("metadata.name" in r for r in rules)
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert spec["resources"]["properties"]["gpu"]["minimum"] == 0
    assert spec["scaling"]["properties"]["target"]["minimum"] == 0
    assert spec["scaling"]["properties"]["target"]["exclusiveMinimum"] is True
    assert spec["service"]["properties"]["httpPort"]["minimum"] == 1
    assert spec["service"]["properties"]["httpPort"]["maximum"] == 65535
    assert spec["scaling"]["properties"]["metric"]["enum"] == ["inflight", "rps", "cpu", "gpu"]


def test_every_status_field_is_declared() -> None:
    status = SCHEMA["properties"]["status"]
    assert set(status["properties"]) == {f.alias for f in api.ModelDeploymentStatus.model_fields.values()}
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["properties"]) >= {
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration",
    }  # fmt: skip


def test_status_the_reconciler_writes_is_declared() -> None:
    """Whatever ``modelserve_operator.status.compute_status`` writes survives the API server's pruning."""
    from modelserve_operator.config import OperatorConfig
    from modelserve_operator.render import context_for
    from modelserve_operator.status import Problem, compute_status

    md = {
        "metadata": {"name": "m", "namespace": "ns", "generation": 3},
        "spec": {"model": {"uri": "/m.onnx"}},
    }
    ctx = context_for(md, OperatorConfig())
    deployment = {"metadata": {"generation": 1}, "spec": {"replicas": 2}, "status": {"replicas": 2}}
    for problem in (None, Problem("ModelFetchFailed", "boom")):
        update = compute_status(md, ctx, deployment=deployment, problem=problem)
        declared = SCHEMA["properties"]["status"]
        validator = jsonschema.Draft4Validator(strict_json_schema(declared))
        errors = [e.message for e in validator.iter_errors(update.status)]
        assert errors == [], errors
        assert {"observedGeneration", "conditions", "url", "selector", "model"} <= set(update.status)


def test_model_signature_the_reconciler_writes_is_declared() -> None:
    """``status.modelSignature`` (from a pod's fetch container, cut or not) survives pruning."""
    import json

    from modelserve_operator.config import OperatorConfig
    from modelserve_operator.render import context_for
    from modelserve_operator.render.deployment import fetch_args
    from modelserve_operator.status import compute_status

    md = {"metadata": {"name": "m", "namespace": "ns", "generation": 3},
          "spec": {"model": {"uri": "/m.onnx"}}}  # fmt: skip
    ctx = context_for(md, OperatorConfig())
    tensor = {"name": "x", "datatype": "FP32", "shape": [-1, 4]}
    body = {"models": [{"file": "m.onnx", "sha256": "a" * 64, "opset": 17, "inputs": [tensor],
                        "outputs": [tensor], "truncated": True, "inputCount": 9, "outputCount": 1}],
            "truncated": True, "modelCount": 2}  # fmt: skip
    pod = {"metadata": {"name": "m-1"},
           "spec": {"initContainers": [{"name": "fetch", "args": fetch_args(ctx)}]},
           "status": {"initContainerStatuses": [{"name": "fetch", "ready": True, "state": {"terminated": {
               "exitCode": 0, "message": "ModelSignature: " + json.dumps(body)}}}]}}  # fmt: skip
    update = compute_status(md, ctx, deployment={"spec": {"replicas": 1}, "status": {}}, pods=[pod])
    assert update.status["modelSignature"]["models"][0]["inputCount"] == 9
    validator = jsonschema.Draft4Validator(strict_json_schema(SCHEMA["properties"]["status"]))
    errors = [e.message for e in validator.iter_errors(update.status)]
    assert errors == [], errors


# --------------------------------------------------------------------------- admission


@pytest.mark.parametrize(("name", "md"), samples(), ids=[n for n, _ in samples()])
def test_samples_are_admitted(name: str, md: dict[str, Any]) -> None:
    assert admit(md) == []
    api.parse_spec(md["spec"])


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("requireBatching of a pvc:// model",
     {"model": {"uri": "pvc://store/m.onnx"}, "runtime": {"requireBatching": True}},
     "runtime.requireBatching is checked when the model is fetched"),
    ("min > max", {"model": {"uri": "/m.onnx"}, "scaling": {"minReplicas": 3, "maxReplicas": 2}},
     "minReplicas must be less than or equal to scaling.maxReplicas"),
    ("min > default max", {"model": {"uri": "/m.onnx"}, "scaling": {"minReplicas": 2}},
     "minReplicas must be less than or equal to scaling.maxReplicas"),
    ("negative gpus", {"model": {"uri": "/m.onnx"}, "resources": {"gpu": -1}}, "gpu"),
    ("max 0", {"model": {"uri": "/m.onnx"}, "scaling": {"minReplicas": 0, "maxReplicas": 0}}, "maxReplicas"),
    ("unknown scheme", {"model": {"uri": "ftp://host/m.onnx"}}, "model.uri must be an absolute path or a"),
    ("relative path", {"model": {"uri": "models/m.onnx"}}, "model.uri must be an absolute path or a"),
    ("unknown field", {"model": {"uri": "/m.onnx"}, "replicas": 3}, "replicas"),
    ("unknown nested field", {"model": {"uri": "/m.onnx", "format": "onnx"}}, "format"),
    ("target 0", {"model": {"uri": "/m.onnx"}, "scaling": {"maxReplicas": 3, "target": 0}}, "target"),
    ("port too big", {"model": {"uri": "/m.onnx"}, "service": {"httpPort": 70000}}, "httpPort"),
    ("port 0", {"model": {"uri": "/m.onnx"}, "service": {"httpPort": 0}}, "httpPort"),
    ("same ports", {"model": {"uri": "/m.onnx"}, "service": {"httpPort": 9000, "grpcPort": 9000}},
     "httpPort and service.grpcPort must differ"),
    ("sha256 on pvc", {"model": {"uri": "pvc://c/m.onnx", "sha256": "a" * 64}},
     "cannot be verified for a pvc"),
    ("credentials on http", {"model": {"uri": "https://h/m.onnx", "credentialsSecret": "s"}},
     "credentialsSecret is used for s3:// URIs only"),
    ("pvc without path", {"model": {"uri": "pvc://claim"}}, "pvc://<claim>/<path"),
    ("bad metric", {"model": {"uri": "/m.onnx"}, "scaling": {"metric": "memory"}}, "metric"),
    ("cpu target over 1000%", {"model": {"uri": "/m.onnx"}, "scaling": {"metric": "cpu", "target": 5000}},
     "utilisation percentage"),
    ("bad quantity", {"model": {"uri": "/m.onnx"}, "resources": {"requests": {"memory": "lots"}}}, "memory"),
    ("no model", {}, "model"),
    # Issue 10: specs that passed `kubectl apply` and then broke (each fails before the fix).
    ("negative cpu", {"model": {"uri": "/m.onnx"}, "resources": {"requests": {"cpu": "-1"}}},
     "resources.requests.cpu must be greater than 0"),
    ("negative memory limit", {"model": {"uri": "/m.onnx"}, "resources": {"limits": {"memory": "-1Gi"}}},
     "resources.limits.memory must be at least 32Mi"),
    ("one byte of memory", {"model": {"uri": "/m.onnx"}, "resources": {"requests": {"memory": 1}}},
     "resources.requests.memory must be at least 32Mi"),
    ("request over limit", {"model": {"uri": "/m.onnx"},
                            "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
     "resources.requests.memory must not exceed resources.limits.memory"),
    ("minAvailable 999%", {"model": {"uri": "/m.onnx"}, "disruption": {"minAvailable": "999%"}},
     "at most 100%"),
    ("minAvailable never met", {"model": {"uri": "/m.onnx"}, "scaling": {"maxReplicas": 3},
                                "disruption": {"minAvailable": 5}}, "must not exceed scaling.maxReplicas"),
    ("toleration Exists with value", {"model": {"uri": "/m.onnx"}, "scheduling": {"tolerations": [
        {"key": "k", "operator": "Exists", "value": "v"}]}}, "operator Exists has no value"),
    ("toleration without key", {"model": {"uri": "/m.onnx"}, "scheduling": {"tolerations": [{"value": "v"}]}},
     "without a key must use operator Exists"),
    ("tolerationSeconds without NoExecute", {"model": {"uri": "/m.onnx"}, "scheduling": {"tolerations": [
        {"key": "k", "operator": "Exists", "tolerationSeconds": 5}]}}, "NoExecute only"),
    ("toleration bad key", {"model": {"uri": "/m.onnx"}, "scheduling": {"tolerations": [
        {"key": "bad key", "operator": "Exists"}]}}, "tolerations[].key must be a label key"),
    ("nodeSelector bad key", {"model": {"uri": "/m.onnx"}, "scheduling": {"nodeSelector": {"a b": "x"}}},
     "scheduling.nodeSelector keys must be label keys"),
    ("nodeSelector bad value",
     {"model": {"uri": "/m.onnx"}, "scheduling": {"nodeSelector": {"zone": "a b"}}},
     "and its values label values"),
    ("bad topologyKey",
     {"model": {"uri": "/m.onnx"}, "scheduling": {"topologySpread": {"topologyKey": "-x"}}},
     "topologyKey must be a label key"),
    ("bad pod label", {"model": {"uri": "/m.onnx"}, "podTemplate": {"labels": {"team": "a/b"}}},
     "podTemplate.labels keys must be label keys"),
    ("bad service annotation key", {"model": {"uri": "/m.onnx"}, "service": {"annotations": {"a b": "x"}}},
     "service.annotations keys must be label keys"),
    ("bad priorityClassName", {"model": {"uri": "/m.onnx"}, "scheduling": {"priorityClassName": "High_Prio"}},
     "scheduling.priorityClassName must be a lower-case DNS subdomain"),
    ("bad imagePullSecret", {"model": {"uri": "/m.onnx"}, "podTemplate": {"imagePullSecrets": ["Regcred"]}},
     "podTemplate.imagePullSecrets must be Secret names"),
    ("bad tlsSecret", {"model": {"uri": "/m.onnx"},
                       "service": {"ingress": {"host": "a.example.com", "tlsSecret": "my_cert"}}},
     "service.ingress.tlsSecret must be a lower-case DNS subdomain"),
    ("env value and valueFrom", {"model": {"uri": "/m.onnx"}, "runtime": {"env": [
        {"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}},
     "either value or valueFrom, not both"),
    ("duplicate env", {"model": {"uri": "/m.onnx"}, "runtime": {"env": [{"name": "A", "value": "1"},
                                                                       {"name": "A", "value": "2"}]}},
     "runtime.env names must be unique"),
    ("args --host", {"model": {"uri": "/m.onnx"}, "runtime": {"args": ["--host", "127.0.0.1"]}},
     "runtime.args must not set --host"),
    ("args --http-port=", {"model": {"uri": "/m.onnx"}, "runtime": {"args": ["--http-port=9000"]}},
     "runtime.args must not set --host"),
    ("args abbreviated --mod", {"model": {"uri": "/m.onnx"}, "runtime": {"args": ["--mod", "x=/y"]}},
     "runtime.args must not set --host"),
    ("uri //", {"model": {"uri": "//"}}, "a local model path"),
    ("uri /etc", {"model": {"uri": "/etc"}}, "a local model path"),
    ("uri file:///", {"model": {"uri": "file:///"}}, "a local model path"),
    ("uri with ..", {"model": {"uri": "/opt/../etc/passwd"}}, "a local model path"),
    ("pvc ../..", {"model": {"uri": "pvc://claim/../.."}}, "without empty, '.' or '..' segments"),
    # Issue 13's accelerator options, held to the same rules.
    ("negative gpuMemLimit",
     {"model": {"uri": "/m.onnx"}, "runtime": {"accelerator": {"gpuMemLimit": "-8Gi"}}},
     "runtime.accelerator.gpuMemLimit must be greater than 0"),
    ("zero engine cache", {"model": {"uri": "/m.onnx"},
                           "runtime": {"accelerator": {"engineCache": {"sizeLimit": 0}}}},
     "runtime.accelerator.engineCache.sizeLimit must be greater than 0"),
    ("engine cache claim not a name",
     {"model": {"uri": "/m.onnx"}, "runtime": {"accelerator": {"engineCache": {"claimName": "My_Cache"}}}},
     "claimName"),
    ("dynamic dim 0", {"model": {"uri": "/m.onnx"}, "runtime": {"accelerator": {"dynamicDims": {"seq": 0}}}},
     "dynamicDims"),
]  # fmt: skip

VALID_EDGES: list[tuple[str, dict[str, Any]]] = [
    ("requireBatching of a fetched model",
     {"model": {"uri": "https://h/m.onnx"}, "runtime": {"requireBatching": True}}),
    ("a model directory", {"model": {"uri": "/opt/models/resnet/1"}}),
    ("args the operator does not own",
     {"model": {"uri": "/m.onnx"},
      "runtime": {"args": ["--max-request-bytes", "1024", "--max-batch-size=4"]}}),
    ("toleration Exists without key", {"model": {"uri": "/m.onnx"},
                                       "scheduling": {"tolerations": [{"operator": "Exists"}]}}),
    ("prefixed label keys", {"model": {"uri": "/m.onnx"}, "podTemplate": {"labels": {"example.com/team": ""}},
                             "scheduling": {"nodeSelector": {"topology.kubernetes.io/zone": "eu-1a"}}}),
    ("minAvailable 100% and = max", {"model": {"uri": "/m.onnx"}, "scaling": {"maxReplicas": 3},
                                     "disruption": {"minAvailable": 3}}),
    ("env valueFrom with empty value", {"model": {"uri": "/m.onnx"}, "runtime": {"env": [
        {"name": "A", "value": "", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}}),
    ("accelerator options", {"model": {"uri": "/m.onnx"}, "resources": {"gpu": 1}, "runtime": {
        "accelerator": {
        "gpuMemLimit": "8Gi", "fp16": True, "dynamicDims": {"seq": 128},
        "engineCache": {"claimName": "engines", "sizeLimit": "8Gi"}}}}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "spec"), VALID_EDGES, ids=[c for c, _ in VALID_EDGES])
def test_valid_edges_are_admitted_by_crd_and_model(case: str, spec: dict[str, Any]) -> None:
    assert admit(md_with(spec)) == [], case
    api.parse_spec(spec)


@pytest.mark.parametrize(("case", "spec", "expected"), INVALID, ids=[c for c, _, _ in INVALID])
def test_invalid_specs_are_rejected_by_crd_and_model(case: str, spec: dict[str, Any], expected: str) -> None:
    errors = admit(md_with(spec))
    assert errors, f"{case}: the CRD admitted it"
    assert any(expected in e for e in errors), errors
    with pytest.raises(pydantic.ValidationError) as info:
        api.parse_spec(spec)
    assert expected in str(info.value), str(info.value)


@pytest.mark.parametrize("name", ["1abc", "a_b", "Upper", "x" * 64])
def test_object_name_must_be_a_dns_label(name: str) -> None:
    errors = admit(md_with({"model": {"uri": "/m.onnx"}}, name=name))
    assert any("DNS-1035 label" in e for e in errors), errors


def test_minimal_object_is_admitted_and_defaulted() -> None:
    md = md_with({"model": {"uri": "s3://bucket/models/m.onnx"}})
    assert admit(md) == []
    spec = apply_defaults(SCHEMA, md)["spec"]
    assert spec["scaling"] == {
        "minReplicas": 1, "maxReplicas": 1, "metric": "inflight", "scaleDownStabilizationSeconds": 300,
    }  # fmt: skip
    assert spec["service"] == {"type": "ClusterIP", "httpPort": 8080, "grpcPort": 8081}
    assert spec["resources"]["gpu"] == 0
    assert spec["scheduling"]["topologySpread"]["enabled"] is True


# --------------------------------------------------------------------------- CRD and model agree

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_URIS = [
    "/m.onnx", "file:///m.onnx", "https://h/m.onnx", "http://h/m.onnx", "s3://b/k.onnx", "pvc://c/p/m.onnx",
    "pvc://c", "pvc://Bad_Claim/m.onnx", "ftp://h/m.onnx", "m.onnx", "", "s3://", "gs://b/m.onnx",
]  # fmt: skip


@st.composite
def edge_specs(draw: st.DrawFn) -> dict[str, Any]:
    """Specs near every boundary the API enforces, valid or not."""
    model: dict[str, Any] = {"uri": draw(st.sampled_from(_URIS))}
    if draw(st.booleans()):
        model["sha256"] = draw(st.sampled_from(["a" * 64, "A" * 64, "a" * 63]))
    if draw(st.booleans()):
        model["credentialsSecret"] = draw(st.sampled_from(["creds", "Bad"]))
    spec: dict[str, Any] = {"model": model}
    ints = st.integers(-2, 6)
    scaling = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "minReplicas": ints,
                "maxReplicas": ints,
                "metric": st.sampled_from(["inflight", "rps", "cpu", "gpu", "memory"]),
                "target": st.sampled_from([-1, 0, 0.5, 1, 999, 1000, 1000.5, 5000]),
            },
        )
    )
    if scaling:
        spec["scaling"] = scaling
    ports = st.sampled_from([-1, 0, 1, 8080, 8081, 65535, 65536])
    service = draw(st.fixed_dictionaries({}, optional={"httpPort": ports, "grpcPort": ports}))
    if service:
        spec["service"] = service
    if draw(st.booleans()):
        spec["resources"] = {"gpu": draw(st.integers(-1, 65))}
    return spec


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=edge_specs())
def test_crd_and_model_accept_the_same_specs(spec: dict[str, Any]) -> None:
    crd_errors = admit(md_with(spec))
    try:
        api.parse_spec(spec)
        model_error = None
    except pydantic.ValidationError as exc:
        model_error = str(exc)
    assert bool(crd_errors) == (model_error is not None), (crd_errors, model_error)
