"""The Helm chart: lint, offline schema validation of what it renders, values.schema.json, and the
contracts with the operator (flags and MODELSERVE_* variables it reads, permissions it needs)."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
from tests.packaging.conftest import CHART, HERE, K8S_VERSION, Render, by_kind, run

NONDEFAULT = str(HERE / "values-nondefault.yaml")
VARIANTS = {
    "default": [],
    "nondefault": ["-f", NONDEFAULT],
    "operator-scaled-to-zero": ["--set", "operator.replicas=0"],
}
CLUSTER_SCOPED_KINDS = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace",
                        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def _deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(objects, "Deployment")
    return deployment


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _deployment(objects)["spec"]["template"]["spec"]["containers"]
    return container


def _triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _operator_triples() -> set[tuple[str, str, str]]:
    from modelserve_operator.rbac import PERMISSIONS

    return {(p.api_group, p.resource, v) for p in PERMISSIONS for v in p.verbs}


@pytest.mark.parametrize("values", [[], ["-f", NONDEFAULT]], ids=["default", "nondefault"])
def test_helm_lint_strict(helm: str, values: list[str]) -> None:
    proc = run([helm, "lint", "--strict", str(CHART), *values])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rendered_objects_validate_against_kubernetes_schemas(render: Render, variant: str) -> None:
    objects = render("--include-crds", *VARIANTS[variant])
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "ServiceAccount", "CustomResourceDefinition", "Service"} <= kinds
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # Only prometheus-operator's kinds are outside the built-in schemas.
            assert obj["apiVersion"].startswith("monitoring.coreos.com/"), f"no schema for {name}"
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{variant}: {name} does not validate against Kubernetes {K8S_VERSION}: {exc}")


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--set", "operator.replicas=2"], "replicas"),
        (["--set", "logFormat=xml"], "logFormat"),
        (["--set", "noSuchValue=1"], "noSuchValue"),
        (["--set", "operator.image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "operator.metricsPort=70000"], "metricsPort"),
        (["--set", "watchNamespaces={Team_A}"], "watchNamespaces"),
        (["--set", "server.gpuResource=gpu"], "gpuResource"),
        (["--set", "operator.securityContext.runAsRoot=true"], "runAsRoot"),
        (["--set", "operator.resources.requests.cpu=lots"], "cpu"),
        (["--set", "metrics.serviceMonitor.interval=soon"], "interval"),
        (["--set", "operator.image.digest=latest"], "digest"),
    ],
)
def test_values_schema_rejects_wrong_values(helm: str, args: list[str], complaint: str) -> None:
    template = [helm, "template", "modelserve", str(CHART), *args]
    for cmd in (template, [helm, "lint", "--strict", str(CHART), *args]):
        proc = run(cmd)
        assert proc.returncode != 0, f"{' '.join(cmd[1:])} accepted a wrong value"
        output = proc.stdout + proc.stderr
        assert "schema" in output.lower() and complaint in output, output


def test_values_schema_forbids_unknown_keys_everywhere() -> None:
    """additionalProperties: false on every object the schema declares (maps are typed instead)."""
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" or "properties" in node:
                assert "additionalProperties" in node, f"{path} allows unknown keys"
                assert node["additionalProperties"] is False or isinstance(node["additionalProperties"], dict)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(schema, "#")


def test_every_value_is_commented() -> None:
    """Each value in values.yaml has a comment directly above it or above one of its parent keys."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, commented) of the enclosing keys
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        commented = i > 0 and lines[i - 1].strip().startswith("#")
        inherited = commented or any(c for _, c in stack)
        if stripped.endswith(":"):  # a section: itself or its values carry the comments
            stack.append((indent, inherited))
            continue
        assert inherited, f"values.yaml line {i + 1} ({stripped!r}) is not documented by a comment"


def test_operator_deployment_defaults(render: Render) -> None:
    objects = render()
    deployment = _deployment(objects)
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    container = _container(objects)
    assert container["args"][0] == "operator"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"liveness": 8080, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    # Pod Security "restricted".
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["readOnlyRootFilesystem"] is True
    assert all("emptyDir" in v for v in pod["volumes"])
    assert pod["serviceAccountName"] == by_kind(objects, "ServiceAccount")[0]["metadata"]["name"]
    (service,) = by_kind(objects, "Service")
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


@pytest.mark.parametrize("variant", ["default", "nondefault"])
def test_operator_reads_the_flags_and_environment_the_chart_sets(render: Render, variant: str) -> None:
    """The rendered args and env, parsed by the operator's own parser, give the configured values."""
    from modelserve_operator.main import parse_args

    objects = render(*VARIANTS[variant])
    container = _container(objects)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    options = parse_args(container["args"][1:], environ=env)
    config = options.config
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert options.liveness_port == ports["liveness"]
    assert options.metrics_port == ports["metrics"]
    if variant == "default":
        assert config.watch_namespaces == ()
        assert config.server_image == "modelserve-server:0.1.0"
        assert config.server_gpu_image == "modelserve-server-gpu:0.1.0"
        assert config.gpu_resource == "nvidia.com/gpu"
        assert config.log_format == "json"
        assert config.image_pull_policy == "IfNotPresent"
        assert config.fetch_image is None
        assert container["image"] == "modelserve-operator:0.1.0"
    else:
        assert config.watch_namespaces == ("team-a", "team-b")
        assert config.server_image == "registry.example.com/ml/modelserve-server:0.1.0"
        assert config.server_gpu_image == "registry.example.com/ml/modelserve-server-gpu:0.1.0-cuda13"
        assert config.gpu_resource == "amd.com/gpu"
        assert config.log_format == "text"
        assert config.image_pull_policy == "Always"
        assert config.fetch_image == "registry.example.com/ml/modelserve-server:0.1.0"
        assert options.resync_seconds == 120
        assert container["image"].endswith("@sha256:" + "0123456789abcdef" * 4)


def test_cluster_wide_rbac_is_exactly_the_operator_permissions(render: Render) -> None:
    objects = render()
    (role,) = by_kind(objects, "ClusterRole")
    assert _triples(role["rules"]) == _operator_triples()
    assert not by_kind(objects, "Role")
    (binding,) = by_kind(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (sa,) = by_kind(objects, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "modelserve-system"}
    ]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]


def test_watch_namespaces_gives_roles_per_namespace(render: Render) -> None:
    from hack.packaging_gen import CLUSTER_SCOPED

    objects = render("-f", NONDEFAULT)
    roles = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = by_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["subjects"][0]["name"] == "modelserve-operator"
    # A ClusterRole only for cluster-scoped permissions, and none when the operator needs none.
    cluster = {t for role in by_kind(objects, "ClusterRole") for t in _triples(role["rules"])}
    assert all((g, r.split("/")[0]) in CLUSTER_SCOPED for g, r, _ in cluster)
    for role in roles:
        namespaced = _triples(role["rules"])
        assert all((g, r.split("/")[0]) not in CLUSTER_SCOPED for g, r, _ in namespaced)
        assert cluster | namespaced == _operator_triples()


def test_operator_can_be_scaled_to_zero_for_out_of_cluster_runs(render: Render, helm: str) -> None:
    objects = render("--set", "operator.replicas=0")
    assert _deployment(objects)["spec"]["replicas"] == 0
    assert by_kind(objects, "ServiceAccount") and by_kind(objects, "ClusterRole")
    notes = run([helm, "install", "modelserve", str(CHART), "--dry-run=client", "--namespace", "x",
                 "--set", "operator.replicas=0"])
    assert notes.returncode == 0, notes.stderr
    assert "operator.replicas=0" in notes.stdout and "x/modelserve" in notes.stdout


@pytest.mark.parametrize("variant", ["default", "nondefault"])
def test_namespaced_objects_carry_their_namespace(render: Render, variant: str) -> None:
    for obj in render("--include-crds", *VARIANTS[variant]):
        if obj["kind"] in CLUSTER_SCOPED_KINDS:
            assert "namespace" not in obj["metadata"], obj["metadata"]
        else:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            assert obj["metadata"].get("namespace"), f"{name} has no namespace"


def test_optional_monitoring_objects(render: Render) -> None:
    assert not by_kind(render(), "ConfigMap") and not by_kind(render(), "ServiceMonitor")
    objects = render("-f", NONDEFAULT)
    maps = {c["metadata"]["name"]: c for c in by_kind(objects, "ConfigMap")}
    dashboard = maps["ms-dashboard"]
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["modelserve-models.json"])["uid"] == "modelserve-models"
    adapter = maps["ms-prometheus-adapter"]
    assert "modelserve_inflight_requests" in adapter["data"]["config.yaml"]
    (monitor,) = by_kind(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (policy,) = by_kind(objects, "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
