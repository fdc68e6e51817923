"""``--workers N``: several processes on one port behave as one server.

The V2 conformance checks (imported from test_http_conformance.py, run here against a two-worker
server), batching equivalence (test_batching_server.py) and the SIGTERM drain under load, metrics
that add up across workers, a worker's start-up failure stopping the whole server, and ``auto``
sized from the cgroup CPU quota, not the node.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import tritonclient.http as httpclient
from serverlib import RunningServer, ServerFactory, start_server
from test_batching_server import check_batching_equivalence
from test_http_conformance import (  # noqa: F401  (collected again, with this module's `client`)
    test_every_datatype_round_trips,
    test_health_and_server_metadata,
    test_mlp_equals_onnxruntime,
    test_model_metadata_and_config,
    test_multi_types_and_output_subset,
    test_static_first_dim_model,
    test_statistics_extension,
)
from test_shutdown import check_sigterm_drains

from modelserve_server.cli import worker_count
from modelserve_server.cpulimit import usable_cpus
from modelserve_server.workers import worker_argv


@pytest.fixture(scope="module")
def workers_server(
    tmp_path_factory: pytest.TempPathFactory, onnx_models: dict[str, Path]
) -> Iterator[RunningServer]:
    args: list[str] = ["--workers", "2"]
    for name in ("mlp", "multi", "alltypes", "static"):
        args += ["--model", f"{name}={onnx_models[name]}"]
    server = start_server(tmp_path_factory.mktemp("workers-server"), *args, grpc=True)
    yield server
    assert server.stop(signal.SIGTERM) == 0, server.logs()


@pytest.fixture(scope="module")
def client(workers_server: RunningServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(workers_server.http_address, network_timeout=120.0)


def _requests_total(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    found = re.findall(r'modelserve_requests_total\{[^}]*model="static"[^}]*\} (\S+)', text)
    return sum(float(v) for v in found)


def test_two_workers_started_and_metrics_add_up(workers_server: RunningServer) -> None:
    """Requests on fresh connections land on both workers; /metrics (any worker) counts all of them."""
    assert workers_server.logs().count("ready: 4 model version(s) loaded") == 2, workers_server.logs()
    before = _requests_total(workers_server.url)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4, 8], "data": [1.0] * 32}]}
    for _ in range(24):  # a new connection each: the kernel spreads them over the workers
        answer = requests.post(f"{workers_server.url}/v2/models/static/infer", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
    for _ in range(4):  # whichever worker answers /metrics renders the sum
        assert _requests_total(workers_server.url) == before + 24


@pytest.mark.slow
def test_sigterm_drains_with_two_workers(server_factory: ServerFactory, onnx_models: dict[str, Path]) -> None:
    check_sigterm_drains(server_factory, onnx_models, "--workers", "2")


@pytest.mark.slow
def test_batching_equivalence_with_two_workers(
    server_factory: ServerFactory, onnx_models: dict[str, Path], tmp_path: Path
) -> None:
    check_batching_equivalence(server_factory, onnx_models, tmp_path, "--workers", "2")


def test_a_failing_worker_fails_the_server(server_factory: ServerFactory, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx model")
    server = server_factory("--model", str(broken), "--workers", "2", wait_ready=False)
    assert server.process.wait(120) == 1
    assert "start-up failed" in server.logs() and "stopping the others" in server.logs()


def test_worker_argv_replaces_the_workers_flag() -> None:
    argv = ["--model", "m", "--workers", "auto", "--workers=3"]
    assert worker_argv(argv) == ["--model", "m", "--workers", "1"]


def test_auto_is_one_on_gpu_and_the_quota_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert worker_count(4, ("CUDAExecutionProvider", "CPUExecutionProvider")) == 1
    assert worker_count(0, ("TensorrtExecutionProvider", "CPUExecutionProvider")) == 1
    assert worker_count(3, ("CPUExecutionProvider",)) == 3
    monkeypatch.setattr("modelserve_server.cpulimit.usable_cpus", lambda: 5)
    assert worker_count(0, ("CPUExecutionProvider",)) == 5


def test_usable_cpus_follow_the_cgroup_limit_not_the_node(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit is read by runtime.cgroup (its parsing is tested in test_gpu_runtime_unit.py);
    here: how --workers auto turns it into whole CPUs, capped by the affinity."""
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(8)))
    proc = tmp_path / "self-cgroup"
    proc.write_text("0::/\n")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory\n")
    (v2 / "cpu.max").write_text("250000 100000\n")
    assert usable_cpus(v2, proc) == 2  # the quota, rounded down, not the 8 CPUs of the node
    (v2 / "cpu.max").write_text("50000 100000\n")
    assert usable_cpus(v2, proc) == 1
    (v2 / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(v2, proc) == 8
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    proc_v1 = tmp_path / "self-cgroup-v1"
    proc_v1.write_text("4:cpu,cpuacct:/\n")
    assert usable_cpus(v1, proc_v1) == 3
    assert usable_cpus(tmp_path / "absent", proc) == 8
