"""The command line contract, JSON logs, and the Prometheus metrics a real server exports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import requests
import tritonclient.http as httpclient
from serverlib import RunningServer, ServerFactory

CONTRACT_FLAGS = [
    "--model", "--model-repository", "--host", "--http-port", "--grpc-port", "--max-batch-size",
    "--max-batch-delay-ms", "--providers", "--intra-op-threads", "--max-request-bytes", "--drain-seconds",
    "--log-format",
]  # fmt: skip

ISSUE_METRICS = [
    "modelserve_requests_total",
    "modelserve_request_duration_seconds",
    "modelserve_queue_duration_seconds",
    "modelserve_compute_duration_seconds",
    "modelserve_batch_size",
    "modelserve_inflight_requests",
    "modelserve_model_ready",
    "modelserve_model_provider_info",
]


def test_serve_help_lists_the_contract() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelserve_cli.main", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    for flag in CONTRACT_FLAGS:
        assert flag in proc.stdout, flag
    assert "67108864" in proc.stdout and "auto" in proc.stdout


def test_no_models_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelserve_cli.main", "serve", "--http-port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1 and "no models" in proc.stderr


def test_json_logs_and_config_without_batching(
    server_factory: ServerFactory, onnx_models: dict[str, Path]
) -> None:
    server = server_factory(
        "--model", str(onnx_models["mlp"]), "--log-format", "json", "--max-batch-size", "1"
    )
    config = requests.get(f"{server.url}/v2/models/mlp/config", timeout=10).json()
    assert config["max_batch_size"] == 1 and "dynamic_batching" not in config
    assert server.stop() == 0
    lines = [line for line in server.logs().splitlines() if line.strip()]
    assert lines
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(entry)
    assert any("ready" in json.loads(line)["message"] for line in lines)


def test_metrics_exposition(v2_server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(v2_server.http_address)
    inp = httpclient.InferInput("x", [2, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((2, 64), np.float32))
    client.infer("mlp", [inp])
    response = requests.get(f"{v2_server.url}/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in ISSUE_METRICS:
        assert re.search(rf"^{name}(_bucket|_count|_sum)?{{", text, re.M), name
    assert 'modelserve_model_ready{model="mlp",version="1"} 1.0' in text
    assert 'modelserve_inflight_requests{model="mlp"} 0.0' in text
    assert re.search(r'modelserve_batch_size_count\{model="mlp",version="1"\} [1-9]', text)
    assert (
        'modelserve_model_provider_info{model="mlp",provider="CPUExecutionProvider",version="1"} 1.0' in text
    )
    assert "modelserve_gpu_" not in text  # no NVIDIA GPU visible here: series absent
