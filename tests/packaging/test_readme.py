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
