"""Static checks of the chart, its rendered output, the YAML files and the Dockerfile:
checkov (skips only from charts/modelserve/.checkov.yaml), yamllint (.yamllint), hadolint."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.packaging.conftest import CHART, HERE, ROOT, run

CHECKOV_CONFIG = CHART / ".checkov.yaml"
NONDEFAULT = str(HERE / "values-nondefault.yaml")


def _checkov(checkov: str, directory: Path, framework: str, helm: str) -> str:
    env_path = f"{Path(helm).parent}:/usr/bin:/bin"
    proc = run([checkov, "--config-file", str(CHECKOV_CONFIG), "-d", str(directory), "--framework", framework,
                "--output", "cli"], env={"PATH": env_path, "HOME": str(Path.home())})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"checkov --framework {framework} failed:\n{output[-6000:]}"
    assert "Passed checks:" in output, f"checkov ran no check:\n{output[-3000:]}"
    assert "Failed checks: 0" in output, output[-6000:]
    return output


def test_checkov_skips_are_all_justified() -> None:
    """Each skipped check id has its own comment saying why, in the one config file."""
    config = yaml.safe_load(CHECKOV_CONFIG.read_text())
    skips = config["skip-check"]
    assert skips, "no skips: drop this test's expectation if that becomes true"
    text = CHECKOV_CONFIG.read_text()
    for check in skips:
        comment = [ln for ln in text.splitlines() if ln.strip().startswith(f"# {check} ")]
        assert comment, f"{check} is skipped without a '# {check} ...' justification"


@pytest.mark.slow
def test_checkov_helm_framework_on_the_chart(checkov: str, helm: str) -> None:
    _checkov(checkov, CHART, "helm", helm)


@pytest.mark.slow
@pytest.mark.parametrize("values", [[], ["-f", NONDEFAULT]], ids=["default", "nondefault"])
def test_checkov_kubernetes_framework_on_rendered_output(
    checkov: str, helm: str, values: list[str], tmp_path: Path
) -> None:
    proc = run([helm, "template", "modelserve", str(CHART), "--namespace", "modelserve-system", *values])
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "rendered.yaml").write_text(proc.stdout)
    output = _checkov(checkov, tmp_path, "kubernetes", helm)
    assert "Deployment.modelserve-system" in output or "Passed checks:" in output


def test_yamllint_on_chart_manifests_and_rendered_output(helm: str, tmp_path: Path) -> None:
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig(file=str(ROOT / ".yamllint"))
    targets = sorted(
        [*CHART.rglob("*.yaml"), *(ROOT / "manifests").rglob("*.yaml"), ROOT / ".yamllint",
         *HERE.glob("*.yaml")]
    )
    targets = [t for t in targets if "templates" not in t.relative_to(ROOT).parts]
    assert any(t.name == "values.yaml" for t in targets) and any(t.name == "install.yaml" for t in targets)
    for values in ([], ["-f", NONDEFAULT]):
        proc = run([helm, "template", "modelserve", str(CHART), "--namespace", "modelserve-system",
                    "--include-crds", *values])
        assert proc.returncode == 0, proc.stderr
        rendered = tmp_path / f"rendered-{len(values)}.yaml"
        rendered.write_text(proc.stdout)
        targets.append(rendered)
    problems = []
    for path in targets:
        for problem in linter.run(path.read_text(), config, str(path)):
            problems.append(f"{path}:{problem.line}:{problem.column}: {problem.level}: {problem.desc}")
    assert not problems, "\n".join(problems)


def test_yamllint_config_catches_problems() -> None:
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig(file=str(ROOT / ".yamllint"))
    bad = "key: value   \nkey: other\n"
    assert {p.rule for p in linter.run(bad, config)} >= {"trailing-spaces", "key-duplicates"}


def test_hadolint_passes_on_the_dockerfile(hadolint: str) -> None:
    proc = run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_would_catch_a_bad_dockerfile(hadolint: str, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    proc = run([hadolint, str(bad)])
    assert proc.returncode != 0 and "DL3007" in proc.stdout and "DL3013" in proc.stdout, proc.stdout


def test_no_package_registry_host_is_named_in_the_repository() -> None:
    """Mirrors are read from the machine (apt sources, pip's configuration) at run time, never written
    down: a URL whose host belongs to a package registry fails this test. The registries are named by
    a word of their host here, so this file names no host either."""
    import re
    import subprocess

    words = ("deb.debian", "security.debian", "archive.ubuntu", "pypi", "pythonhosted", "npmjs",
             "proxy.golang", "crates", "repo1.maven", "rubygems")
    # A URL's host, or a bare dotted host name ("x.y.org").
    url = re.compile(r"[a-z][a-z0-9+.-]*://([A-Za-z0-9.-]+)|\b((?:[A-Za-z0-9-]+\.)+(?:org|com|io|net|dev))\b")
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    found = []
    for name in filter(None, tracked):
        path = ROOT / name
        if not path.is_file() or path.suffix in (".onnx", ".png", ".gz"):
            continue
        text = path.read_text(errors="replace")
        for match in url.finditer(text):
            host = (match.group(1) or match.group(2)).lower()
            if any(word in host for word in words):
                found.append(f"{name}: {host}")
    assert not found, found


def test_test_module_names_are_unique() -> None:
    """The test folders are not packages (rootdir imports): two test files of the same name make
    pytest refuse to collect the whole suite, which a run of one folder alone does not show."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in set(names) if names.count(n) > 1)
