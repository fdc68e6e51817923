"""Warm-up decides readiness: a model that cannot run once is a start-up error, not a Ready pod."""

from __future__ import annotations

from pathlib import Path

import pytest
from serverlib import build_mlp, build_warmup_fails

from modelserve_server.errors import StartupError
from modelserve_server.runtime.providers import resolve_providers
from modelserve_server.runtime.session import ModelSession


def test_a_model_whose_warm_up_fails_is_a_startup_error(tmp_path: Path) -> None:
    session = ModelSession("broken", "1", build_warmup_fails(tmp_path / "m.onnx"), resolve_providers("cpu"))
    with pytest.raises(StartupError, match=r"model broken version 1: warm-up inference .* failed"):
        session.warmup()


def test_a_model_that_warms_up_stays_batchable(tmp_path: Path) -> None:
    session = ModelSession("mlp", "1", build_mlp(tmp_path / "mlp.onnx"), resolve_providers("cpu"))
    session.warmup()
    assert session.batchable
