"""The facts both halves share (modelserve_contract) agree everywhere they are written down.

Why: the uid was 1000 in the operator's pod template and 65532 in the Dockerfile; nothing
failed until a pod could not read its own files. Each place that states one of these facts is
held to the one constant here: Dockerfile, chart values, README, the rendered pods, the
server's CLI defaults and routes. And the contract module stays importable by both images:
standard library only.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import yaml

import modelserve_contract as contract
from modelserve_operator.config import OperatorConfig
from modelserve_operator.render import render_children

ROOT = Path(__file__).resolve().parents[2]
# The REST routes still spell the health paths out (the server's transports are being split; they
# are held to the contract by test_ports_and_paths_are_the_servers until they import it).
ROUTES: set[str] = set()
"""Modules exempt from the no-second-copy scan (none: the REST routes use the contract's paths)."""


def test_the_uid_is_the_images_everywhere() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert len(users) == 3 and all(u == g == str(contract.SERVER_UID) for u, g in users), users
    ids = re.findall(r"--(?:uid|gid) (\d+)", dockerfile)
    assert ids and set(ids) == {str(contract.SERVER_UID)}, ids

    values = yaml.safe_load((ROOT / "charts" / "modelserve" / "values.yaml").read_text())
    pod = values["operator"]["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (contract.SERVER_UID, contract.SERVER_UID)

    readme = (ROOT / "README.md").read_text()
    stated = re.findall(r"\buid (\d+)", readme)
    assert stated and set(stated) == {str(contract.SERVER_UID)}, stated

    md = {"metadata": {"name": "m", "namespace": "ns"}, "spec": {"model": {"uri": "https://h/m.onnx"}}}
    template = render_children(md, OperatorConfig()).find("Deployment")["spec"]["template"]["spec"]
    assert template["securityContext"]["runAsUser"] == contract.SERVER_UID
    assert template["securityContext"]["fsGroup"] == contract.SERVER_UID
    for container in template["containers"] + template["initContainers"]:
        assert container["securityContext"]["runAsUser"] == contract.SERVER_UID, container["name"]


def test_ports_and_paths_are_the_servers() -> None:
    from modelserve_server.cli import build_parser

    args = build_parser().parse_args([])
    assert (args.http_port, args.grpc_port) == (contract.HTTP_PORT, contract.GRPC_PORT)
    # The server's HTTP app serves the paths the probes ask for.
    from modelserve_server.protocol.rest.app import create_app
    from modelserve_server.service import InferenceService

    routes = {getattr(r, "path", None) for r in create_app(InferenceService()).routes}
    for path in (contract.LIVE_PATH, contract.READY_PATH, contract.METRICS_PATH):
        assert path in routes, (path, sorted(str(r) for r in routes))
    md = {"metadata": {"name": "m", "namespace": "ns"}, "spec": {"model": {"uri": "https://h/m.onnx"}}}
    pod = render_children(md, OperatorConfig()).find("Deployment")["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert [p["containerPort"] for p in server["ports"]] == [contract.HTTP_PORT, contract.GRPC_PORT]
    assert server["readinessProbe"]["httpGet"]["path"] == contract.READY_PATH
    assert server["livenessProbe"]["httpGet"]["path"] == contract.LIVE_PATH


def test_no_second_copy_of_the_facts_in_the_python_sources() -> None:
    """The values are assigned in no Python module but the contract (tests aside): no uid or port
    constant, no model directory or health path literal, no second file-name sanitiser. (The
    operator's own liveness port, 8080 too, is its process's and not the server's.)"""
    everywhere = re.compile(
        r"(uid|user|run_?as|gid|group)\w*\s*[:=]\s*\d|(HTTP|GRPC)\w*PORT\s*=\s*\d|_SAFE_NAME_RE"
        r"|[\"']/models[\"']|[\"']/v2/health/(live|ready)[\"']",
        re.IGNORECASE,
    )
    server_defaults = re.compile(r"default\s*=\s*808[01]\b")
    for package in ("server/modelserve_server", "operator/modelserve_operator"):
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if "generated" in path.parts or relative in ROUTES:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                in_server = package.startswith("server")
                found = everywhere.search(line) or (in_server and server_defaults.search(line))
                assert not found, f"{relative}:{number}: {line.strip()}"


def test_the_contract_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(contract.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {str(node.module).split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert imported - {"__future__"} <= sys.stdlib_module_names, imported
