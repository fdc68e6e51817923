"""In-process tests of the service, repository and provider rules, on real ONNX Runtime sessions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from serverlib import build_mlp, build_static, ort_run

from modelserve_server.errors import InvalidInput, ModelNotFound, NotReady, StartupError
from modelserve_server.repository import build_index, parse_model_arg, scan_repository
from modelserve_server.runtime.providers import (
    CPU,
    CUDA,
    TENSORRT,
    ProviderPlan,
    check_session_providers,
    parse_providers,
    resolve_providers,
)
from modelserve_server.service import InferenceService
from modelserve_server.types import InferInput, InferRequest, RequestedOutput


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unit-models")
    return {"mlp": build_mlp(root / "mlp.onnx"), "static": build_static(root / "static.onnx")}


def request(model: str, x: np.ndarray, **kw: object) -> InferRequest:
    return InferRequest(model, None, "id-1", [InferInput("x", "FP32", x.shape, x)], **kw)  # type: ignore[arg-type]


async def loaded_service(models: dict[str, Path]) -> InferenceService:
    service = InferenceService(max_batch_size=8, max_batch_delay_ms=1)
    index = build_index([f"mlp={models['mlp']}", f"static={models['static']}"], None)
    assert not service.ready()
    await service.load(index, resolve_providers("cpu"))
    return service


async def test_infer_metadata_and_drain(models: dict[str, Path]) -> None:
    service = await loaded_service(models)
    try:
        assert service.ready() and service.live()
        x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
        resp = await service.infer(request("mlp", x, outputs=[RequestedOutput("y", True)]), "http")
        assert resp.id == "id-1" and resp.model_version == "1"
        np.testing.assert_allclose(resp.outputs[0].data, ort_run(models["mlp"], {"x": x})["y"], rtol=1e-5)
        results = await asyncio.gather(
            *(service.infer(request("mlp", x[i : i + 1]), "grpc") for i in range(3))
        )
        for i, r in enumerate(results):
            np.testing.assert_allclose(r.outputs[0].data, resp.outputs[0].data[i : i + 1], rtol=1e-5)

        meta = service.model_metadata("mlp")
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
        assert meta["providers"] == [CPU]
        assert service.model_config("static")["max_batch_size"] == 0
        assert service.model_config("mlp")["dynamic_batching"] == {"max_queue_delay_microseconds": 1000}
        stats = service.model_stats("mlp")["model_stats"][0]
        assert stats["inference_stats"]["success"]["count"] == 4 and stats["inference_count"] == 6

        text = service.metrics.render().decode()
        assert (
            'modelserve_model_provider_info{model="mlp",provider="CPUExecutionProvider",version="1"} 1.0'
            in text
        )
        assert 'modelserve_model_ready{model="static",version="1"} 1.0' in text
        assert 'modelserve_requests_total{code="200",model="mlp",protocol="grpc",version="1"} 3.0' in text
        assert "modelserve_gpu_" not in text  # no NVIDIA GPU here: series absent, not zero

        service.begin_drain()
        assert not service.ready() and not service.model_ready("mlp")
        late = await service.infer(request("mlp", x), "http")  # accepted work still completes
        assert late.outputs[0].data.shape == (3, 10)
        assert await service.drain(5.0)
    finally:
        service.close()


async def test_errors_are_client_errors(models: dict[str, Path]) -> None:
    service = await loaded_service(models)
    try:
        x = np.zeros((1, 64), np.float32)
        with pytest.raises(ModelNotFound):
            await service.infer(request("ghost", x), "http")
        with pytest.raises(ModelNotFound):
            service.model_metadata("mlp", "3")
        with pytest.raises(InvalidInput, match="unknown output 'z'"):
            await service.infer(request("mlp", x, outputs=[RequestedOutput("z")]), "http")
        bad = InferRequest("mlp", None, None, [InferInput("x", "INT32", (1, 64), x.astype(np.int32))])
        with pytest.raises(InvalidInput, match="INT32"):
            await service.infer(bad, "http")
        twice = InferRequest("mlp", None, None, [InferInput("x", "FP32", (1, 64), x)] * 2)
        with pytest.raises(InvalidInput, match="twice"):
            await service.infer(twice, "http")
        mismatch = InferRequest("mlp", None, None, [InferInput("x", "FP32", (2, 64), x)])
        with pytest.raises(InvalidInput, match="data has shape"):
            await service.infer(mismatch, "http")
        with pytest.raises(ModelNotFound):  # refused before its body is decoded, counted once

            async def never(_: object) -> InferRequest:
                raise AssertionError("an unknown model's body must not be decoded")

            await service.serve("http", "ghost", None, never, lambda _, r: r)
        text = service.metrics.render().decode()
        assert "ghost" not in text
        assert 'modelserve_unknown_model_requests_total{protocol="http"} 2.0' in text
    finally:
        service.close()


async def test_not_ready_while_loading(models: dict[str, Path]) -> None:
    service = InferenceService()
    index = build_index([f"mlp={models['mlp']}"], None)
    task = asyncio.create_task(service.load(index, resolve_providers("cpu")))
    await asyncio.sleep(0)  # load has registered the models but not finished
    with pytest.raises(NotReady):
        service.resolve("mlp")
    assert not service.model_ready("mlp")
    await task
    assert service.model_ready("mlp")
    service.close()


def test_parse_model_arg() -> None:
    assert parse_model_arg("/m/resnet.onnx").name == "resnet"
    assert parse_model_arg("fast=/m/resnet.onnx").name == "fast"
    assert parse_model_arg("s3://bucket/path/mlp.onnx").name == "mlp"
    src = parse_model_arg("https://h/x/model.onnx?sig=a=b#sha256=00")
    assert src.name == "x" and src.uri.startswith("https://")
    assert parse_model_arg("/repo/bert/1/model.onnx").name == "model"
    with pytest.raises(StartupError):
        parse_model_arg("bad name=/m/x.onnx")
    with pytest.raises(StartupError):
        parse_model_arg("m=")


def test_repository_tree(tmp_path: Path) -> None:
    build_mlp(tmp_path / "mlp" / "1" / "model.onnx")
    build_mlp(tmp_path / "mlp" / "10" / "model.onnx")
    build_mlp(tmp_path / "mlp" / "latest" / "model.onnx")  # not a number: skipped
    (tmp_path / "mlp" / "3").mkdir()  # no model.onnx: skipped
    found = scan_repository(tmp_path)
    assert [(f.name, f.version) for f in found] == [("mlp", "1"), ("mlp", "10")]
    index = build_index([], tmp_path)
    assert index.default_version("mlp") == "10"
    with pytest.raises(StartupError, match="already configured"):
        build_index([f"mlp={found[0].path}"], tmp_path)
    with pytest.raises(StartupError, match="no models"):
        build_index([], None)
    with pytest.raises(StartupError, match="not a directory"):
        scan_repository(tmp_path / "absent")


def test_provider_rules() -> None:
    assert parse_providers("auto") == ((TENSORRT, CUDA, CPU), False)
    assert parse_providers("tensorrt,cuda,cpu") == ((TENSORRT, CUDA, CPU), True)
    with pytest.raises(StartupError, match="unknown provider"):
        parse_providers("rocm")
    with pytest.raises(StartupError, match="refusing to fall back"):
        resolve_providers("cuda,cpu", available=[CPU])
    assert resolve_providers("auto", available=[CPU]).names == (CPU,)
    assert resolve_providers("auto", available=[CUDA, CPU]).names == (CUDA, CPU)
    with pytest.raises(StartupError, match="failed to load"):
        check_session_providers(ProviderPlan((CUDA, CPU), True), [CPU], "m/1")
    check_session_providers(ProviderPlan((CUDA, CPU), False), [CPU], "m/1")  # auto: fine
