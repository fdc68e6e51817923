"""README.md: the promises the issue makes about it, checked against the repository."""

from __future__ import annotations

import re

from tests.packaging.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    match = re.search(rf"(?ms)^## {re.escape(title)}\n(.*?)(?=^## )", README)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def test_exactly_two_setup_commands() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", _section("Try it: two commands"), re.DOTALL)
    # The two set-up commands, then the one optional third (the product's real path), nothing else.
    assert len(blocks) == 2
    commands = [[ln.split("#")[0].strip() for ln in block.splitlines() if ln.split("#")[0].strip()]
                for block in blocks]
    assert commands == [["make demo", "make test"], ["make demo-cluster"]]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"(?m)^demo:", makefile) and re.search(r"(?m)^test:", makefile)
    assert re.search(r"(?m)^demo-cluster:", makefile)
    assert "hack/demo.py" in makefile and "hack/demo_cluster.py" in makefile


def test_flow_diagram_names_every_stage() -> None:
    diagram = re.search(r"```mermaid\n(.*?)```", README, re.DOTALL)
    assert diagram
    for node in ("ModelDeployment", "operator", "Deployment", "Service", "HorizontalPodAutoscaler",
                 "pods", "Prometheus", "prometheus-adapter"):
        assert node in diagram.group(1), node


def test_comparison_is_present_and_points_to_measurements() -> None:
    section = _section("How it compares")
    for name in ("KServe", "Triton", "MLServer"):
        assert name in section
    assert "bench/RESULTS.md" in section
    assert (ROOT / "bench" / "RESULTS.md").is_file()


def test_relative_links_point_to_existing_files() -> None:
    for target in re.findall(r"\]\((?!https?://|#)([^)#]+)", README):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_required_sections() -> None:
    for title in ("Install on a cluster", "A first ModelDeployment", "Calling a model", "Autoscaling", "GPUs",
                  "Metrics reference", "ModelDeployment reference", "Troubleshooting",
                  "Local cluster and kind"):
        _section(title)
    assert "kubectl describe md" in _section("Troubleshooting")
    assert "docker build --target server-gpu" in README
    assert "modelserve_inflight_requests" in _section("Autoscaling")


def test_trust_boundary_states_the_operators_exact_permissions() -> None:
    """The section's list of what the operator may do is the permissions table, both ways, and what
    it says the operator cannot do is absent from the table."""
    from modelserve_operator.rbac import PERMISSIONS

    section = _section("Security: the trust boundary")
    listed: set[tuple[str, str]] = set()
    for match in re.finditer(r"(?m)^- ((?:`[^`]+`(?:, )?)+): ([a-z, \n]+?)(?: \(|\n(?!  ))", section):
        verbs = [v.strip() for v in match.group(2).replace("\n", " ").split(",")]
        listed |= {(r, v) for r in re.findall(r"`([^`]+)`", match.group(1)) for v in verbs}
    assert listed == {(p.resource, v) for p in PERMISSIONS for v in p.verbs}
    for resource in ("secrets", "configmaps", "serviceaccounts", "pods/exec", "roles", "clusterroles"):
        assert not [p for p in PERMISSIONS if p.resource == resource], resource
    assert not [p for p in PERMISSIONS if p.resource == "pods" and "create" in p.verbs]
    assert "It cannot read Secrets, ConfigMaps or ServiceAccounts" in section


def test_trust_boundary_names_every_policy_value_and_restricted_field() -> None:
    import yaml

    section = _section("Security: the trust boundary")
    values = yaml.safe_load((ROOT / "charts" / "modelserve" / "values.yaml").read_text())["admissionPolicy"]
    for key in values:
        assert f"admissionPolicy.{key}" in section, key
    for field in ("runtime.image", "podTemplate.serviceAccountName", "runtime.env[].valueFrom.secretKeyRef",
                  "model.credentialsSecret", "podTemplate.imagePullSecrets", "scheduling.priorityClassName",
                  "system-node-critical", "runtime.args", "pod-security.kubernetes.io/enforce=restricted"):
        assert field in section, field
