"""Triton's perf_analyzer against a real server (HTTP binary, HTTP JSON, gRPC), when it is available.

perf_analyzer (PyPI ``perf-analyzer``) is a manylinux_2_38 binary; on a glibc 2.36 machine it runs
only through Debian 13's loader and libraries (see the field notes). Point ``MODELSERVE_PERF_ANALYZER``
at an executable (the binary or a wrapper script that starts it through that loader) to run this
test; without it the test is skipped, saying why.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from serverlib import ServerFactory

PERF_ANALYZER = os.environ.get("MODELSERVE_PERF_ANALYZER", "")


@pytest.mark.slow
@pytest.mark.skipif(not PERF_ANALYZER, reason="set MODELSERVE_PERF_ANALYZER to a runnable perf_analyzer")
@pytest.mark.parametrize(
    ("protocol", "extra"),
    [
        ("http", []),
        ("http", ["--input-tensor-format", "json", "--output-tensor-format", "json", "-b", "2"]),
        ("grpc", []),
    ],
    ids=["http-binary", "http-json", "grpc"],
)
def test_perf_analyzer_runs_clean(
    server_factory: ServerFactory, onnx_models: dict[str, Path], protocol: str, extra: list[str]
) -> None:
    models = ["--model", f"mlp={onnx_models['mlp']}", "--model", f"multi={onnx_models['multi']}"]
    server = server_factory(*models, grpc=True)
    address = server.http_address if protocol == "http" else server.grpc_address
    # perf_analyzer itself refuses FP16 tensors in JSON, so the JSON run uses the FP32 model only.
    for model in ("mlp",) if "json" in extra else ("mlp", "multi"):
        proc = subprocess.run(
            [PERF_ANALYZER, "-m", model, "-u", address, "-i", protocol, "--concurrency-range", "2",
             "--measurement-interval", "3000", "--stability-percentage", "100", *extra],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-4000:]
        match = re.search(r"Successful request count: (\d+)", output)
        assert match and int(match.group(1)) > 0, output[-4000:]
