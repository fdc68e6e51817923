"""The chart's optional ValidatingAdmissionPolicy (admissionPolicy.*): rendered only when asked, with
exactly the lists of the values baked into its CEL, and the CEL itself evaluated offline (cel-python,
as tests/operator/test_crd.py evaluates the CRD's rules) against specs it must admit and refuse.

Every spec below first passes the CRD (``admit``, the offline API server of test_crd), so a refusal
here is the policy's, not the schema's. The e2e twin is tests/e2e/test_chart_admission_policy.py.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import celpy
import pytest
from tests.operator.test_crd import SCHEMA, admit, apply_defaults
from tests.packaging.conftest import CHART, Render, by_kind, run

POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
ALLOWED = [
    "--set", "admissionPolicy.enabled=true",
    "--set", "admissionPolicy.allowedImagePrefixes={registry.example.com/ml/,registry.example.com/base:}",
    "--set", "admissionPolicy.allowedServiceAccounts={model-reader}",
    "--set", "admissionPolicy.allowedPriorityClasses={inference}",
    "--set", "admissionPolicy.allowedSecrets={s3-credentials,regcred}",
]
_CEL = celpy.Environment()


def _policy(render: Render, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    objects = render(*args)
    (policy,) = by_kind(objects, "ValidatingAdmissionPolicy")
    (binding,) = by_kind(objects, "ValidatingAdmissionPolicyBinding")
    return policy, binding


def _eval(expression: str, activation: dict[str, Any]) -> Any:
    result = _CEL.program(_CEL.compile(expression)).evaluate(activation)
    if isinstance(result, Exception):
        raise AssertionError(f"{expression!r} failed to evaluate: {result}")
    return result


def refusals(policy: dict[str, Any], spec: dict[str, Any], *, old_spec: dict[str, Any] | None = None
             ) -> list[str]:
    """What the API server answers for a ModelDeployment with ``spec`` (an UPDATE from ``old_spec``
    when given): [] when admitted, else the messages of the failed validations, as the API server
    builds them (messageExpression)."""
    md = {"apiVersion": "serving.modelserve.io/v1alpha1", "kind": "ModelDeployment",
          "metadata": {"name": "md", "namespace": "team-a"}, "spec": spec}
    assert admit(md) == [], f"the CRD itself refuses {spec}: {admit(md)}"
    obj = apply_defaults(SCHEMA, md)  # the API server defaults before admission
    old = None if old_spec is None else apply_defaults(SCHEMA, {**md, "spec": old_spec})
    activation: dict[str, Any] = {
        "object": celpy.json_to_cel(obj),
        "oldObject": celpy.json_to_cel(old),
        "request": celpy.json_to_cel({"operation": "CREATE" if old is None else "UPDATE"}),
    }
    spec_of_policy = policy["spec"]
    if not all(_eval(c["expression"], activation) for c in spec_of_policy.get("matchConditions", [])):
        return []
    variables: dict[str, Any] = {}
    for variable in spec_of_policy.get("variables", []):  # in order: a variable may use earlier ones
        activation["variables"] = celpy.celtypes.MapType(variables)
        variables[celpy.celtypes.StringType(variable["name"])] = _eval(variable["expression"], activation)
    activation["variables"] = celpy.celtypes.MapType(variables)
    messages = []
    for validation in spec_of_policy["validations"]:
        if not _eval(validation["expression"], activation):
            message = str(_eval(validation["messageExpression"], activation))
            assert message and "\n" not in message, validation  # else the API server uses `message`
            messages.append(message)
    return messages


MODEL = {"uri": "https://models.example.com/iris.onnx"}
SECRET_ENV = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "token"}}}

def with_model(**fields: Any) -> dict[str, Any]:
    """A spec with the default model and ``fields``."""
    return {"model": MODEL, **fields}


S3 = "s3://bucket/iris.onnx"
INGRESS = {"host": "a.example.com"}

ADMITTED: list[tuple[str, dict[str, Any]]] = [
    ("defaults only", with_model()),
    ("image under an allowed registry path",
     with_model(runtime={"image": "registry.example.com/ml/modelserve-server:0.1.0"})),
    ("image, any tag of an allowed repository", with_model(runtime={"image": "registry.example.com/base:2"})),
    ("allowed ServiceAccount", with_model(podTemplate={"serviceAccountName": "model-reader"})),
    ("allowed PriorityClass", with_model(scheduling={"priorityClassName": "inference"})),
    ("allowed credentials Secret", {"model": {"uri": S3, "credentialsSecret": "s3-credentials"}}),
    ("allowed env Secret, and env that reads no Secret", with_model(runtime={"env": [
        SECRET_ENV, {"name": "A", "value": "1"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "not-a-secret", "key": "k"}}}]})),
    ("allowed pull Secrets", with_model(podTemplate={"imagePullSecrets": ["regcred", "s3-credentials"]})),
    ("allowed TLS Secret", with_model(service={"ingress": {**INGRESS, "tlsSecret": "regcred"}})),
    ("an Ingress without TLS", with_model(service={"ingress": INGRESS})),
]  # fmt: skip

REFUSED: list[tuple[str, dict[str, Any], list[str]]] = [
    ("image from another registry", with_model(runtime={"image": "evil.example.net/miner:1"}),
     ["spec.runtime.image evil.example.net/miner:1 is not allowed",
      "registry.example.com/ml/, registry.example.com/base:"]),
    ("registry host as a mere string prefix", with_model(runtime={"image": "registry.example.com/mlx/a:1"}),
     ["spec.runtime.image registry.example.com/mlx/a:1 is not allowed"]),
    ("a repository next to an allowed one", with_model(runtime={"image": "registry.example.com/based:1"}),
     ["spec.runtime.image registry.example.com/based:1 is not allowed"]),
    ("image without a registry host", with_model(runtime={"image": "modelserve-server:0.1.0"}),
     ["spec.runtime.image modelserve-server:0.1.0 is not allowed"]),
    ("ServiceAccount", with_model(podTemplate={"serviceAccountName": "cluster-admin-sa"}),
     ["spec.podTemplate.serviceAccountName cluster-admin-sa is not allowed",
      "ServiceAccounts are model-reader"]),
    ("the default ServiceAccount named explicitly", with_model(podTemplate={"serviceAccountName": "default"}),
     ["spec.podTemplate.serviceAccountName default is not allowed"]),
    ("PriorityClass", with_model(scheduling={"priorityClassName": "system-node-critical"}),
     ["spec.scheduling.priorityClassName system-node-critical is not allowed",
      "PriorityClasses are inference"]),
    ("credentials Secret", {"model": {"uri": S3, "credentialsSecret": "db-password"}},
     ["spec.model.credentialsSecret db-password is not allowed", "Secrets are s3-credentials, regcred"]),
    ("env Secret", with_model(runtime={"env": [SECRET_ENV, {"name": "PW", "valueFrom": {
        "secretKeyRef": {"name": "db-password", "key": "pw"}}}]}),
     ["spec.runtime.env reads Secret db-password, which is not allowed",
      "Secrets are s3-credentials, regcred"]),
    ("env Secret without a name", with_model(runtime={"env": [
        {"name": "PW", "valueFrom": {"secretKeyRef": {"key": "pw"}}}]}),
     ["spec.runtime.env reads Secret , which is not allowed"]),
    ("pull Secret", with_model(podTemplate={"imagePullSecrets": ["regcred", "other-team-regcred"]}),
     ["spec.podTemplate.imagePullSecrets names other-team-regcred, which is not allowed"]),
    ("TLS Secret", with_model(service={"ingress": {**INGRESS, "tlsSecret": "bank-cert"}}),
     ["spec.service.ingress.tlsSecret bank-cert is not allowed"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def policy(render: Render) -> dict[str, Any]:
    return _policy(render, *ALLOWED)[0]


def test_off_by_default(render: Render) -> None:
    assert not [o for o in render() if o["kind"] in POLICY_KINDS]
    assert not [o for o in render("--set", "admissionPolicy.allowedSecrets={a}") if o["kind"] in POLICY_KINDS]


def test_enabled_policy_and_binding(render: Render) -> None:
    policy, binding = _policy(render, *ALLOWED)
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["matchConstraints"] == {"resourceRules": [{
        "apiGroups": ["serving.modelserve.io"], "apiVersions": ["v1alpha1"],
        "operations": ["CREATE", "UPDATE"], "resources": ["modeldeployments"]}]}
    assert all(v["reason"] == "Forbidden" and v["message"] for v in policy["spec"]["validations"])
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}


def test_crd_coordinates_match_the_api() -> None:
    from modelserve_operator import api

    assert api.GROUP == "serving.modelserve.io" and api.API_VERSION.endswith("/v1alpha1")
    assert api.PLURAL == "modeldeployments"


def test_binding_namespace_selector(render: Render) -> None:
    selector = {"matchLabels": {"modelserve.io/restricted": "true"}}
    _, binding = _policy(render, *ALLOWED, "--set-json",
                         f"admissionPolicy.namespaceSelector={json.dumps(selector)}")
    assert binding["spec"]["matchResources"] == {"namespaceSelector": selector}


def test_only_the_non_empty_lists_are_checked(render: Render) -> None:
    policy, _ = _policy(render, "--set", "admissionPolicy.enabled=true",
                        "--set", "admissionPolicy.allowedPriorityClasses={inference}")
    assert len(policy["spec"]["validations"]) == 1
    for _, spec, fragments in REFUSED:
        expected = 1 if fragments[0].startswith("spec.scheduling.priorityClassName") else 0
        assert len(refusals(policy, spec)) == expected, spec


def test_enabled_with_every_list_empty_fails_the_render(helm: str) -> None:
    proc = run([helm, "template", "modelserve", str(CHART), "--set", "admissionPolicy.enabled=true"])
    assert proc.returncode != 0
    assert "every admissionPolicy.allowed* list is empty" in proc.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--set", "admissionPolicy.allowedImagePrefixes={registry.example.com}"], "allowedImagePrefixes"),
        (["--set", "admissionPolicy.allowedImagePrefixes={bad prefix/}"], "allowedImagePrefixes"),
        (["--set", "admissionPolicy.allowedImagePrefixes={\"a/\",\"a/\"}"], "allowedImagePrefixes"),
        (["--set", "admissionPolicy.allowedSecrets={Reg_Cred}"], "allowedSecrets"),
        (["--set", "admissionPolicy.allowedServiceAccounts={it's}"], "allowedServiceAccounts"),
        (["--set", "admissionPolicy.allowedPriorityClasses={\"x\\\"]\"}"], "allowedPriorityClasses"),
        (["--set", "admissionPolicy.enabled=yes"], "enabled"),
        (["--set", "admissionPolicy.allowImages={a/}"], "allowImages"),
    ],
)
def test_values_schema_rejects_wrong_policy_values(helm: str, args: list[str], complaint: str) -> None:
    """Entries must be names or image-prefix characters (they are baked into CEL string literals)
    and a prefix must end at a boundary ('/', ':' or '@'), so 'registry.example.com' cannot also
    allow 'registry.example.com.evil.net/...'."""
    proc = run([helm, "template", "modelserve", str(CHART), "--set", "admissionPolicy.enabled=true", *args])
    assert proc.returncode != 0, f"{args} accepted"
    assert "schema" in proc.stderr.lower() and complaint in proc.stderr, proc.stderr


@pytest.mark.parametrize(("case", "spec"), ADMITTED, ids=[c[0] for c in ADMITTED])
def test_policy_admits(policy: dict[str, Any], case: str, spec: dict[str, Any]) -> None:
    assert refusals(policy, spec) == []


@pytest.mark.parametrize(("case", "spec", "fragments"), REFUSED, ids=[c[0] for c in REFUSED])
def test_policy_refuses_with_the_offending_value(policy: dict[str, Any], case: str, spec: dict[str, Any],
                                                 fragments: list[str]) -> None:
    (message,) = refusals(policy, spec)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert message.endswith("(modelserve admission policy)"), message


def test_updates_are_checked_only_when_the_spec_changes(policy: dict[str, Any]) -> None:
    """An object created before the policy keeps taking metadata patches (the operator's annotations,
    finalizer removal on delete); changing its spec is checked like a create."""
    bad = {"model": MODEL, "scheduling": {"priorityClassName": "system-node-critical"}}
    assert refusals(policy, bad, old_spec=bad) == []
    assert refusals(policy, bad, old_spec={"model": MODEL}) != []
    fixed = copy.deepcopy(bad)
    fixed["scheduling"]["priorityClassName"] = "inference"
    assert refusals(policy, fixed, old_spec=bad) == []
