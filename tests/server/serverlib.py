"""Helpers for the server tests: ONNX model builders, a reference runner, and server processes.

Imported by ``conftest.py`` (fixtures) and by test modules (``from serverlib import ...``); the module
name is unique so that it never collides with another directory's ``conftest``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import requests
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 9

#: V2 datatype -> ONNX element type, for the ``alltypes`` model.
V2_TO_ONNX = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_mlp(path: Path, *, bias: float = 0.0, seed: int = 0) -> Path:
    """x FP32 [N,64] -> relu(x W1 + b1) W2 + b2 + bias -> y FP32 [N,10]."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((64, 32)) / 8).astype(np.float32)
    b1 = rng.standard_normal(32).astype(np.float32)
    w2 = (rng.standard_normal((32, 10)) / 6).astype(np.float32)
    b2 = (rng.standard_normal(10) + bias).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    return _save(graph, path)


def build_multi(path: Path) -> Path:
    """Several inputs and outputs of different types, all with a dynamic batch dimension."""
    two_i32 = numpy_helper.from_array(np.array(2, dtype=np.int32), "two_i32")
    two_f16 = numpy_helper.from_array(np.array(2, dtype=np.float16), "two_f16")
    nodes = [
        helper.make_node("Mul", ["a", "two_i32"], ["a_times_2"]),
        helper.make_node("Add", ["b", "b"], ["b_sum"]),
        helper.make_node("Mul", ["b", "two_f16"], ["b_times_2"]),
        helper.make_node("Neg", ["c"], ["c_neg"]),
        helper.make_node("Not", ["d"], ["d_not"]),
        helper.make_node("Identity", ["s"], ["s_out"]),
    ]
    t = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "multi",
        [
            t("a", TensorProto.INT32, ["N", 4]),
            t("b", TensorProto.FLOAT16, ["N", 4]),
            t("c", TensorProto.INT64, ["N", 2]),
            t("d", TensorProto.BOOL, ["N", 3]),
            t("s", TensorProto.STRING, ["N", 2]),
        ],
        [
            t("a_times_2", TensorProto.INT32, ["N", 4]),
            t("b_sum", TensorProto.FLOAT16, ["N", 4]),
            t("b_times_2", TensorProto.FLOAT16, ["N", 4]),
            t("c_neg", TensorProto.INT64, ["N", 2]),
            t("d_not", TensorProto.BOOL, ["N", 3]),
            t("s_out", TensorProto.STRING, ["N", 2]),
        ],
        [two_i32, two_f16],
    )
    return _save(graph, path)


def build_alltypes(path: Path) -> Path:
    """One Identity per V2 datatype: ``in_<DT>`` [N,3] -> ``out_<DT>`` [N,3]."""
    t = helper.make_tensor_value_info
    nodes = [helper.make_node("Identity", [f"in_{dt}"], [f"out_{dt}"]) for dt in V2_TO_ONNX]
    graph = helper.make_graph(
        nodes, "alltypes",
        [t(f"in_{dt}", et, ["N", 3]) for dt, et in V2_TO_ONNX.items()],
        [t(f"out_{dt}", et, ["N", 3]) for dt, et in V2_TO_ONNX.items()],
    )
    return _save(graph, path)


def build_static(path: Path) -> Path:
    """x FP32 [4,8] -> y = 3x [4,8]: a static first dimension, so the server never batches it."""
    three = numpy_helper.from_array(np.array(3, dtype=np.float32), "three")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "three"], ["y"])], "static",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
        [three],
    )
    return _save(graph, path)


def build_warmup_fails(path: Path) -> Path:
    """x FP32 [N,4] -> Reshape to [3]: loads (nothing static is wrong), but every inference fails."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [helper.make_tensor("shape", TensorProto.INT64, [1], [3])],
    )
    return _save(graph, path)


def build_slow(path: Path, layers: int = 24, width: int = 1024) -> Path:
    """x FP32 [N,256] -> ``layers`` x (MatMul by one shared width x width weight, Tanh) -> y FP32 [N,8].

    About 25 M multiply-adds per row, so a batch takes milliseconds to tens of milliseconds: long
    enough for requests to queue up behind it (batching and drain tests), with a 4 MiB file.
    """
    rng = np.random.default_rng(1)
    w_in = (rng.standard_normal((256, width)) / 16).astype(np.float32)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    w_out = (rng.standard_normal((width, 8)) / 32).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w_in, "w_in"), (w, "w"), (w_out, "w_out"))]
    nodes = [helper.make_node("MatMul", ["x", "w_in"], ["h0"])]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"h{layers}", "w_out"], ["y"]))
    graph = helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        inits,
    )
    return _save(graph, path)






def ort_run(
    model: Path, feeds: dict[str, np.ndarray], outputs: list[str] | None = None
) -> dict[str, np.ndarray]:
    """The reference: the same model in-process with ONNX Runtime (strings as str, like ORT wants)."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = outputs or [o.name for o in session.get_outputs()]
    fixed = {
        k: (np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(v)
            if v.dtype == object else v)
        for k, v in feeds.items()
    }
    return dict(zip(names, session.run(names, fixed), strict=True))




def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    """A ``modelserve serve`` subprocess. ``url`` is ``http://127.0.0.1:<http_port>``."""

    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_address(self) -> str:
        """``host:port`` as tritonclient.http wants it."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        """``host:port`` as tritonclient.grpc wants it (0 when gRPC is disabled)."""
        return f"127.0.0.1:{self.grpc_port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.logs()}")

    def wait_listener_closed(self, timeout: float = 30.0) -> None:
        """Wait until a new TCP connection is refused: after SIGTERM, uvicorn closes its listener
        and, in the same step, hands every open connection its shutdown (no await between)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.http_port), timeout=2).close()
            except ConnectionRefusedError:
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the listener still accepted after {timeout}s:\n{self.logs()}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit code (kills after ``timeout``)."""
        if self.alive():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)

    def metrics(self) -> str:
        return requests.get(f"{self.url}/metrics", timeout=10).text


ServerFactory = Callable[..., RunningServer]


def start_server(
    tmp_dir: Path, *args: str, grpc: bool = False, env: dict[str, str] | None = None,
    wait_ready: bool = True, timeout: float = 120.0,
) -> RunningServer:
    http_port = free_port()
    grpc_port = free_port() if grpc else 0
    argv = [
        sys.executable, "-m", "modelserve_cli.main", "serve",
        "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
        "--log-format", "text", *args,
    ]
    log_path = tmp_dir / f"server-{http_port}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = RunningServer(process, http_port, grpc_port, log_path, list(args))
    if wait_ready:
        try:
            server.wait_ready(timeout)
        except BaseException:
            server.stop(signal.SIGKILL)
            raise
    return server
