"""``make demo`` (hack/demo.py) end to end: real model, real server process, three protocols."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tests.packaging.conftest import ROOT


@pytest.mark.slow
def test_demo_serves_correct_predictions_and_exits_cleanly() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "demo.py")], capture_output=True, text=True,
                          timeout=280, cwd=ROOT, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "demo OK" in proc.stdout
    for line in ("HTTP JSON (urllib)", "HTTP binary (tritonclient)", "gRPC (tritonclient)"):
        assert line in proc.stdout
    assert "server drained and exited with code 0" in proc.stdout
