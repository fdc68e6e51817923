"""Fixtures for the server tests: generated ONNX models and real ``modelserve serve`` processes.

Everything here is real: models are built with the ``onnx`` helper API and run by ONNX Runtime, and
servers are ``python -m modelserve_cli.main serve ...`` subprocesses on a free 127.0.0.1 port.

Reusable fixtures (also for the gRPC and fetch tests):

* ``onnx_models`` (session): ``dict[str, Path]`` of generated models: ``mlp`` (FP32 [N,64] -> [N,10]),
  ``multi`` (INT32, FP16, INT64, BOOL, STRING inputs and outputs, dynamic batch), ``alltypes`` (an
  Identity per V2 datatype, ``in_<DT>`` -> ``out_<DT>``, shape [N,3]), ``static`` (FP32 [4,8], static
  first dim, never batched) and ``slow`` (FP32 [N,256], a few ms per row, for batching and drain).
* ``model_repository`` (session): a Triton tree with ``mlp`` versions 1 and 2 (2 adds 1.0 to ``y``).
* ``server_factory``: ``server_factory(*args, grpc=False, env=None, wait_ready=True, timeout=120)``
  starts a server with the extra CLI ``args`` and returns a :class:`RunningServer`; every server
  it started is stopped at teardown.
* ``v2_server`` (session): one shared server with ``mlp``, ``multi``, ``alltypes`` and ``static``,
  gRPC enabled.
* ``ort_run(model_path, feeds)``: in-process ONNX Runtime, the reference for result equality.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from serverlib import (
    RunningServer,
    ServerFactory,
    build_alltypes,
    build_mlp,
    build_multi,
    build_slow,
    build_static,
    ort_run,
    start_server,
)


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx-models")
    return {
        "mlp": build_mlp(root / "mlp.onnx"),
        "multi": build_multi(root / "multi.onnx"),
        "alltypes": build_alltypes(root / "alltypes.onnx"),
        "static": build_static(root / "static.onnx"),
        "slow": build_slow(root / "slow.onnx"),
    }


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model-repository")
    build_mlp(root / "mlp" / "1" / "model.onnx")
    build_mlp(root / "mlp" / "2" / "model.onnx", bias=1.0)
    return root


@pytest.fixture(name="ort_run")
def ort_run_fixture() -> Callable[..., dict[str, np.ndarray]]:
    return ort_run


@pytest.fixture()
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    started: list[RunningServer] = []

    def factory(*args: str, **kwargs: object) -> RunningServer:
        server = start_server(tmp_path, *args, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop(signal.SIGKILL if not server.alive() else signal.SIGTERM, timeout=30)


@pytest.fixture(scope="session")
def v2_server(
    tmp_path_factory: pytest.TempPathFactory, onnx_models: dict[str, Path]
) -> Iterator[RunningServer]:
    args: list[str] = []
    for name in ("mlp", "multi", "alltypes", "static"):
        args += ["--model", f"{name}={onnx_models[name]}"]
    server = start_server(tmp_path_factory.mktemp("v2-server"), *args, grpc=True)
    yield server
    server.stop()

