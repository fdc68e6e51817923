"""SIGTERM under load: readiness goes at once, every accepted request completes, exit code 0.

Also start-up failures: a bad model or an unavailable explicit provider exits non-zero and never
turns ready.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from serverlib import ServerFactory, ort_run


def inflight(url: str, model: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    match = re.search(rf'modelserve_inflight_requests{{model="{model}"}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


@pytest.mark.slow
def test_sigterm_drains_in_flight_and_queued_requests(
    server_factory: ServerFactory, onnx_models: dict[str, Path]
) -> None:
    check_sigterm_drains(server_factory, onnx_models)


def check_sigterm_drains(server_factory: ServerFactory, onnx_models: dict[str, Path], *extra: str) -> None:
    """SIGTERM under load: readiness 503 at once, no new connection, every accepted request answered.

    ``extra``: more ``serve`` arguments (test_workers.py runs this with ``--workers 2``).
    """
    # Batching off: the 16 requests run one after another, so most of them are still queued
    # inside the server when SIGTERM arrives.
    server = server_factory(
        "--model", f"slow={onnx_models['slow']}", "--max-batch-size", "1", "--drain-seconds", "120", *extra
    )
    rng = np.random.default_rng(11)
    inputs = [rng.standard_normal((128, 256)).astype(np.float32) for _ in range(16)]
    results: dict[int, object] = {}

    def call(i: int) -> None:
        client = httpclient.InferenceServerClient(server.http_address, network_timeout=300)
        inp = httpclient.InferInput("x", [128, 256], "FP32")
        inp.set_data_from_numpy(inputs[i], binary_data=True)
        try:
            results[i] = client.infer("slow", [inp]).as_numpy("y")
        except Exception as exc:  # recorded, asserted below
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while inflight(server.url, "slow") + len(results) < len(inputs):  # all accepted by the server
        assert time.monotonic() < deadline, "requests never all reached the server"
        time.sleep(0.02)
    server.process.send_signal(signal.SIGTERM)
    server.wait_listener_closed()  # raises if a new connection is still accepted after SIGTERM
    still_draining = server.alive()
    for t in threads:
        t.join(300)
    code = server.process.wait(120)

    assert code == 0, server.logs()
    for i, x in enumerate(inputs):
        got = results[i]
        assert isinstance(got, np.ndarray), f"request {i} was dropped: {got!r}"
        np.testing.assert_allclose(got, ort_run(onnx_models["slow"], {"x": x})["y"], rtol=1e-4, atol=1e-5)
    assert still_draining or "drain" in server.logs()
    assert "draining" in server.logs()


def test_idle_sigterm_exits_zero(server_factory: ServerFactory, onnx_models: dict[str, Path]) -> None:
    server = server_factory("--model", str(onnx_models["mlp"]))
    assert server.stop(signal.SIGTERM) == 0


def test_unloadable_model_fails_startup(server_factory: ServerFactory, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx model")
    server = server_factory("--model", str(broken), wait_ready=False)
    assert server.process.wait(120) == 1
    assert "broken" in server.logs() and "start-up failed" in server.logs()


def test_missing_model_file_fails_startup(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory("--model", f"m={tmp_path / 'absent.onnx'}", wait_ready=False)
    assert server.process.wait(120) == 1
    assert "absent.onnx" in server.logs()


def test_explicit_unavailable_provider_is_a_startup_error(
    server_factory: ServerFactory, onnx_models: dict[str, Path]
) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime build has CUDA; the refusal path needs one without")
    server = server_factory("--model", str(onnx_models["mlp"]), "--providers", "cuda,cpu", wait_ready=False)
    assert server.process.wait(120) == 1
    assert "CUDAExecutionProvider" in server.logs() and "refusing to fall back" in server.logs()


def test_port_in_use_fails_startup(server_factory: ServerFactory, onnx_models: dict[str, Path]) -> None:
    first = server_factory("--model", str(onnx_models["mlp"]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelserve_cli.main",
            "serve",
            "--model",
            str(onnx_models["mlp"]),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(first.http_port),
            "--grpc-port",
            "0",
            "--log-format",
            "text",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr
