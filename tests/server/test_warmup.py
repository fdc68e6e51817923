"""Warm-up decides readiness: a model that cannot run once is a start-up error, not a Ready pod."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from serverlib import build_mlp

from modelserve_server.errors import StartupError
from modelserve_server.runtime.providers import resolve_providers
from modelserve_server.runtime.session import ModelSession


def _reshape_to_three(path: Path) -> Path:
    """Loads fine; any [N, 4] input fails to reshape to [3] at run time."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [helper.make_tensor("shape", TensorProto.INT64, [1], [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_model_whose_warm_up_fails_is_a_startup_error(tmp_path: Path) -> None:
    session = ModelSession("broken", "1", _reshape_to_three(tmp_path / "m.onnx"), resolve_providers("cpu"))
    with pytest.raises(StartupError, match=r"model broken version 1: warm-up inference .* failed"):
        session.warmup()


def test_a_model_that_warms_up_stays_batchable(tmp_path: Path) -> None:
    session = ModelSession("mlp", "1", build_mlp(tmp_path / "mlp.onnx"), resolve_providers("cpu"))
    session.warmup()
    assert session.batchable
