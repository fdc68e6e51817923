"""Hostile input (issue 10, data plane): each case was reproduced against the server before its fix.

Where the server must refuse something the answer is a JSON 4xx (or the matching gRPC status), and a
good request right after it succeeds. Waits are bounded by generous socket timeouts, never by fixed
sleeps standing in for a condition.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from serverlib import RunningServer, ServerFactory

from modelserve_server.protocol.grpc.generated import grpc_service_pb2 as pb
from modelserve_server.protocol.grpc.generated import grpc_service_pb2_grpc as pb_grpc

X64 = [0.25] * 64
GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": X64}]}


def js(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def post(server: RunningServer, model: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    url = f"{server.url}/v2/models/{model}/infer"
    return requests.post(url, data=body, headers=headers or {}, timeout=120)


def assert_still_serves(server: RunningServer) -> None:
    assert post(server, "mlp", js(GOOD)).status_code == 200
    assert requests.get(f"{server.url}/v2/health/live", timeout=10).status_code == 200


def raw_exchange(port: int, data: bytes, *, timeout: float = 30.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it or answers an error."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        return _read_answer(sock)


def _read_answer(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
        joined = b"".join(chunks)
        head, sep, body = joined.partition(b"\r\n\r\n")
        match = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
        if sep and match and len(body) >= int(match.group(1)):
            break
    return b"".join(chunks)


# -- 1. header size and count ----------------------------------------------------------------------


def test_oversized_headers_get_431_and_health_keeps_answering(v2_server: RunningServer) -> None:
    big = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 << 20) + b"\r\n\r\n"
    answer = raw_exchange(v2_server.http_port, big)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b'"error"' in answer
    many = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(500)
    ) + b"\r\n"
    answer = raw_exchange(v2_server.http_port, many)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]

    # While one client streams a huge header, health answers on other connections.
    stop = threading.Event()

    def flood() -> None:
        address = ("127.0.0.1", v2_server.http_port)
        with socket.create_connection(address, timeout=30) as sock, contextlib.suppress(OSError):
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(256):
                if stop.is_set():
                    break
                sock.sendall(b"a" * (1 << 20))

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        for _ in range(5):
            assert requests.get(f"{v2_server.url}/v2/health/live", timeout=5).status_code == 200
    finally:
        stop.set()
        flooder.join(60)
    assert_still_serves(v2_server)


# -- 2. JSON tensors: memory bound and event loop --------------------------------------------------


def _rss(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"{field}:\s+(\d+) kB", text)
    assert match
    return int(match.group(1)) * 1024


@pytest.mark.slow
def test_large_json_body_peak_memory_is_bounded(
    server_factory: ServerFactory, onnx_models: dict[str, Path]
) -> None:
    """Short numbers are the worst case for a JSON parser (a Python float or a tape slot per 2 bytes)."""
    server = server_factory("--model", f"mlp={onnx_models['mlp']}", "--max-batch-size", "1")
    rows = 120_000  # [N,64] FP32 "1,": 7.68 M elements, 15.4 MB of JSON
    data = b"[" + b",".join([b"1"] * (rows * 64)) + b"]"
    body = (
        b'{"inputs":[{"name":"x","datatype":"FP32","shape":[%d,64],"data":' % rows + data + b"}],"
        b'"outputs":[{"name":"y","parameters":{"binary_data":true}}]}'
    )
    decoded = rows * 64 * 4
    before = _rss(server.process.pid, "VmRSS")
    done = threading.Event()
    health_ok: list[bool] = []

    def probe() -> None:
        while not done.is_set():
            try:
                ok = requests.get(f"{server.url}/v2/health/live", timeout=2).status_code == 200
            except requests.RequestException:
                ok = False
            health_ok.append(ok)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        r = post(server, "mlp", body)
    finally:
        done.set()
        prober.join(30)
    assert r.status_code == 200, r.text[:300]
    grown = _rss(server.process.pid, "VmHWM") - before
    print(f"peak growth {grown} B, body {len(body)} B ({grown / len(body):.1f}x), decoded {decoded} B")
    # README, limits: one JSON request peaks within 3x its body plus twice its decoded tensors.
    assert grown <= 3 * len(body) + 2 * decoded, (grown, len(body), decoded)
    assert health_ok and all(health_ok), health_ok


# -- 3. BYTES: signature before decoding, element cap ----------------------------------------------


def _bytes_request(shape: list[int], payload: bytes) -> tuple[bytes, dict[str, str]]:
    header = js({"inputs": [{"name": "s", "datatype": "BYTES", "shape": shape,
                             "parameters": {"binary_data_size": len(payload)}}]})  # fmt: skip
    return header + payload, {"Inference-Header-Content-Length": str(len(header))}


def test_bytes_checked_against_the_model_before_decoding(v2_server: RunningServer) -> None:
    # Shape [1, 3] is wrong for multi's s [N, 2], and the data is malformed too: the model's answer wins.
    body, headers = _bytes_request([1, 3], b"\x05\x00\x00\x00ab")
    r = post(v2_server, "multi", body, headers)
    assert r.status_code == 400
    assert "the model expects [-1, 2]" in r.json()["error"], r.json()
    assert_still_serves(v2_server)


def test_bytes_element_count_is_capped(v2_server: RunningServer) -> None:
    rows = 600_000  # 1.2 M empty strings: over the 2**20 cap
    body, headers = _bytes_request([rows, 2], b"\x00\x00\x00\x00" * (rows * 2))
    r = post(v2_server, "multi", body, headers)
    assert r.status_code == 400, r.text[:200]
    assert "over the limit" in r.json()["error"]
    doc = {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [rows, 2], "data": [""] * (rows * 2)}]}
    r = post(v2_server, "multi", js(doc))
    assert r.status_code == 400, r.text[:200]
    assert "over the limit" in r.json()["error"]
    assert_still_serves(v2_server)


# -- 4. strict numeric types -----------------------------------------------------------------------


def _c_input(data: list[Any], rows: int = 1) -> bytes:
    return js({"inputs": [{"name": "c", "datatype": "INT64", "shape": [rows, 2], "data": data}]})


STRICT = [
    ("float-as-int64", "multi", _c_input([1, 1.7]), "element 1"),
    ("bool-as-int64", "multi", _c_input([True, 1]), "element 0"),
    ("string-as-fp32", "mlp", js({"inputs": [{**GOOD["inputs"][0], "data": [*X64[:63], "0.5"]}]}),
     "element 63"),
    ("bool-as-fp32", "mlp", js({"inputs": [{**GOOD["inputs"][0], "data": [True, *X64[1:]]}]}),
     "element 0"),
    ("int-as-bool", "multi",
     js({"inputs": [{"name": "d", "datatype": "BOOL", "shape": [1, 3], "data": [True, 1, False]}]}),
     "element 1"),
    # The same mistakes in bodies large enough for the fast JSON path.
    ("float-as-int64-large", "multi", _c_input([1] * 3999 + [2.5], rows=2000), "element 3999"),
    ("bool-as-fp32-large", "mlp",
     js({"inputs": [{"name": "x", "datatype": "FP32", "shape": [100, 64], "data": [0.5] * 6399 + [False]}]}),
     "element 6399"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "model", "body", "fragment"), STRICT, ids=[c[0] for c in STRICT])
def test_no_silent_numeric_coercion(
    v2_server: RunningServer, case: str, model: str, body: bytes, fragment: str
) -> None:
    r = post(v2_server, model, body)
    assert r.status_code == 400, (case, r.text[:300])
    assert fragment in r.json()["error"], r.json()
    assert_still_serves(v2_server)


# -- 5. serve verifies a pinned sha256 on every scheme ----------------------------------------------


def test_serve_refuses_a_wrong_pin_on_a_local_file(
    server_factory: ServerFactory, onnx_models: dict[str, Path]
) -> None:
    uri = f"{onnx_models['mlp']}#sha256={'0' * 64}"
    server = server_factory("--model", f"mlp={uri}", wait_ready=False)
    assert server.process.wait(120) == 1
    assert "sha256 mismatch" in server.logs()
    file_uri = f"file://{onnx_models['mlp']}#sha256={'0' * 64}"
    server = server_factory("--model", f"mlp={file_uri}", wait_ready=False)
    assert server.process.wait(120) == 1
    assert "sha256 mismatch" in server.logs()


# -- 6. gRPC: the same tensor validation as HTTP -----------------------------------------------------


@pytest.mark.parametrize("shape", [[1] * 65, [2**31, 2**31], [-1, 64]])
def test_grpc_bad_shapes_are_invalid_argument(v2_server: RunningServer, shape: list[int]) -> None:
    with grpc.insecure_channel(v2_server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="mlp")
        request.inputs.add(name="x", datatype="FP32", shape=shape)
        request.raw_input_contents.append(b"\0" * 256)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert_still_serves(v2_server)


# -- 7. ASCII-only digits in headers and flags -------------------------------------------------------


def test_non_ascii_digit_header_length_is_a_400(v2_server: RunningServer) -> None:
    body = js(GOOD)
    head = (
        b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Inference-Header-Content-Length: \xb2\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    answer = raw_exchange(v2_server.http_port, head + body)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"Inference-Header-Content-Length" in answer
    assert_still_serves(v2_server)


@pytest.mark.parametrize("value", ["1_000", " 8", "\u0662", "+4"])
def test_numeric_flags_take_ascii_digits_only(value: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelserve_cli.main", "serve", "--model", str(tmp_path / "m.onnx"),
         "--max-batch-size", value],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "--max-batch-size" in proc.stderr


# -- 8. a drain shorter than a batch -----------------------------------------------------------------


@pytest.mark.slow
def test_drain_shorter_than_a_batch_answers_503_and_exits_non_zero(
    server_factory: ServerFactory, onnx_models: dict[str, Path]
) -> None:
    server = server_factory(
        "--model", f"slow={onnx_models['slow']}", "--max-batch-size", "1", "--drain-seconds", "1"
    )
    # 16 000 rows x ~25 M multiply-adds: a batch of several seconds even on a quiet, fast machine
    # (4 000 rows finished within the 1 s drain on a quiet CI run), so the deadline cuts it off.
    rows = 16000
    x = np.zeros((rows, 256), np.float32).tobytes()
    header = js({"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 256],
                             "parameters": {"binary_data_size": len(x)}}]})  # fmt: skip
    answers: list[Any] = []

    def call() -> None:
        headers = {"Inference-Header-Content-Length": str(len(header))}
        answers.append(post(server, "slow", header + x, headers))

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 60
    while 'modelserve_inflight_requests{model="slow"} 1.0' not in server.metrics():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    caller.join(120)
    code = server.process.wait(60)
    assert answers, "the request got no answer"
    r = answers[0]
    assert r.status_code == 503, (r.status_code, r.text[:200])
    assert r.headers["content-type"] == "application/json" and "drain" in r.json()["error"]
    assert code != 0, server.logs()
    assert re.search(r"cut off 1 request", server.logs()), server.logs()
    assert time.monotonic() - started < 30  # the process did not wait for the batch to end


# -- 9. slow headers, slow bodies, bounded connections ---------------------------------------------


def test_slow_clients_are_timed_out_and_connections_bounded(
    server_factory: ServerFactory, onnx_models: dict[str, Path]
) -> None:
    env = {
        "MODELSERVE_HTTP_HEADER_TIMEOUT_S": "1",
        "MODELSERVE_HTTP_BODY_TIMEOUT_S": "1",
        "MODELSERVE_HTTP_MAX_CONNECTIONS": "8",
    }
    server = server_factory("--model", f"mlp={onnx_models['mlp']}", env=env)
    # Slow header: a partial request head, then nothing. The server closes the connection.
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=20) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    # Slow body: headers complete, body never finishes.
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=20) as sock:
        sock.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    # Connections over the bound are refused at once with 503; the gauge shows the open ones.
    held = [socket.create_connection(("127.0.0.1", server.http_port), timeout=20) for _ in range(8)]
    try:
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=20) as extra:
            answer = _read_answer(extra)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 30
    while True:  # the held connections close asynchronously: until then, 503
        with contextlib.suppress(requests.RequestException):
            metrics = requests.get(f"{server.url}/metrics", timeout=10)
            if metrics.status_code == 200:
                text = metrics.text
                break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert re.search(r"^modelserve_http_open_connections \d", text, re.MULTILINE), text
    assert "modelserve_http_rejected_total" in text
    assert_still_serves(server)


# -- 10. keep-alive connections at SIGTERM -------------------------------------------------------------


def test_request_on_an_idle_keepalive_connection_after_sigterm_is_answered(
    server_factory: ServerFactory, onnx_models: dict[str, Path]
) -> None:
    server = server_factory("--model", f"mlp={onnx_models['mlp']}", "--drain-seconds", "10")
    session = requests.Session()
    assert session.post(f"{server.url}/v2/models/mlp/infer", data=js(GOOD), timeout=30).status_code == 200
    server.process.send_signal(signal.SIGTERM)
    # Past uvicorn's shutdown step, which closed idle connections at once before the fix.
    server.wait_listener_closed()
    r = session.post(f"{server.url}/v2/models/mlp/infer", data=js(GOOD), timeout=30)
    assert r.status_code == 200
    assert r.headers.get("connection") == "close"
    assert server.process.wait(60) == 0


@pytest.mark.slow
def test_sigterm_under_keepalive_load_loses_no_request(
    server_factory: ServerFactory, onnx_models: dict[str, Path]
) -> None:
    server = server_factory("--model", f"mlp={onnx_models['mlp']}", "--drain-seconds", "10")
    stop = threading.Event()
    lost: list[str] = []
    answered = [0]
    refused = [0]

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                r = session.post(f"{server.url}/v2/models/mlp/infer", data=js(GOOD), timeout=30)
            except requests.ConnectionError as exc:
                if "NewConnectionError" in repr(exc) or "Connection refused" in str(exc):
                    refused[0] += 1  # never sent: the listener is closed, as it should be
                    time.sleep(0.01)
                    continue
                lost.append(repr(exc))
                continue
            if r.status_code != 200:
                lost.append(f"{r.status_code} {r.text[:100]}")
            answered[0] += 1

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while answered[0] < 400:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(60)
    stop.set()
    for t in threads:
        t.join(60)
    assert code == 0, server.logs()
    assert not lost, lost[:5]
    assert refused[0] > 0  # the clients kept trying after the server left


# -- 11. NaN outputs and trailing gzip members -------------------------------------------------------


def test_nan_output_as_json_is_refused_naming_the_output(v2_server: RunningServer) -> None:
    from serverlib import V2_TO_ONNX

    inputs, payload = [], b""
    for dt in V2_TO_ONNX:
        if dt == "BYTES":
            raw = b"".join(struct.pack("<I", 1) + b"a" for _ in range(3))
        elif dt == "FP32":
            raw = np.array([[np.nan, np.inf, 1.0]], np.float32).tobytes()
        else:
            size = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "UINT32": 4,
                    "INT32": 4}.get(dt, 8)  # fmt: skip
            raw = b"\x00" * (3 * size)
        inputs.append({"name": f"in_{dt}", "datatype": dt, "shape": [1, 3],
                       "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
        payload += raw
    header = js({"inputs": inputs, "outputs": [{"name": "out_FP32"}]})
    r = post(v2_server, "alltypes", header + payload, {"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400, r.text[:300]
    assert "out_FP32" in r.json()["error"] and "binary_data" in r.json()["error"]
    # As binary, the same values come back exactly.
    header = js({"inputs": inputs, "outputs": [{"name": "out_FP32", "parameters": {"binary_data": True}}]})
    r = post(v2_server, "alltypes", header + payload, {"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 200
    length = int(r.headers["inference-header-content-length"])
    values = np.frombuffer(r.content[length:], np.float32)
    assert np.isnan(values[0]) and np.isposinf(values[1]) and values[2] == 1.0


def test_trailing_gzip_member_is_refused(v2_server: RunningServer) -> None:
    body = zlib.compress(js(GOOD), wbits=31) + zlib.compress(js(GOOD), wbits=31)
    r = post(v2_server, "mlp", body, {"Content-Encoding": "gzip"})
    assert r.status_code == 400, r.text[:200]
    assert "gzip" in r.json()["error"]
    trailing = zlib.compress(js(GOOD), wbits=31) + b"garbage"
    r = post(v2_server, "mlp", trailing, {"Content-Encoding": "gzip"})
    assert r.status_code == 400, r.text[:200]
    assert_still_serves(v2_server)


def test_text_number_parsers_take_ascii_digits_only() -> None:
    """The sweep behind item 7: every parser of numbers from text goes through parsing.ascii_uint."""
    from modelserve_server.parsing import ascii_uint
    from modelserve_server.protocol.rest.codec import parse_header_length
    from modelserve_server.registry import version_sort_key

    for bad in ("\u00b2", "\u0662", " 1", "1_0", "+1", "", "1" * 20):
        assert ascii_uint(bad) is None, bad
    assert ascii_uint("0") == 0 and ascii_uint(b"123") == 123
    assert version_sort_key("\u00b2") == (-1, "\u00b2")  # str.isdigit() is true here; int() raised
    assert version_sort_key("10") > version_sort_key("9")
    with pytest.raises(Exception, match="Inference-Header-Content-Length"):
        parse_header_length("\u00b2", 10)


def test_an_old_keepalive_connection_is_told_to_close_so_clients_rebalance(
    server_factory: ServerFactory, onnx_models: dict[str, Path]
) -> None:
    """After a scale-up, long-lived keep-alive connections would stay on the old pods forever: the
    first response after a connection's maximum age carries `Connection: close`."""
    server = server_factory("--model", f"mlp={onnx_models['mlp']}",
                            env={"MODELSERVE_HTTP_MAX_CONNECTION_AGE_S": "1"})
    session = requests.Session()
    first = session.post(f"{server.url}/v2/models/mlp/infer", data=js(GOOD), timeout=30)
    assert first.status_code == 200 and first.headers.get("connection") != "close"
    deadline = time.monotonic() + 30
    while True:  # the clock is the server's: ask until its answer says the connection is old
        r = session.post(f"{server.url}/v2/models/mlp/infer", data=js(GOOD), timeout=30)
        assert r.status_code == 200
        if r.headers.get("connection") == "close":
            break
        assert time.monotonic() < deadline, "no Connection: close after the maximum connection age"
        time.sleep(0.1)
    # The client reconnects and is served on a fresh connection.
    assert session.post(f"{server.url}/v2/models/mlp/infer", data=js(GOOD), timeout=30).status_code == 200
