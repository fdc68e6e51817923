"""Malformed requests: each gets the right 4xx with an ``{"error": ...}`` body, and a good request
succeeds right after each one (the server stays live and unpoisoned).

Also: bodies over ``--max-request-bytes`` are refused with 413 without being read.
"""

from __future__ import annotations

import json
import socket
import struct
import time
import zlib
from typing import Any

import pytest
import requests
from serverlib import RunningServer, ServerFactory

X64 = [0.25] * 64
GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": X64}]}


def js(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def mlp(**fields: Any) -> bytes:
    """A request for ``mlp`` whose single input has ``fields`` replaced."""
    inp = {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": X64, **fields}
    return js({"inputs": [{k: v for k, v in inp.items() if v is not None}]})


def binary(header: dict[str, Any], payload: bytes, length: int | None = None) -> tuple[bytes, dict[str, str]]:
    head = js(header)
    return head + payload, {"Inference-Header-Content-Length": str(len(head) if length is None else length)}


FLOATS = struct.pack("<64f", *X64)
BIN_X = {"name": "x", "datatype": "FP32", "shape": [1, 64], "parameters": {"binary_data_size": 256}}

# (id, model path, body, extra headers, expected status, a fragment the error must contain)
CASES: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
    ("malformed-json", "mlp", b'{"inputs": [', {}, 400, "JSON"),
    ("not-an-object", "mlp", b"[1, 2]", {}, 400, "object"),
    ("empty-body", "mlp", b"", {}, 400, "JSON"),
    ("no-inputs", "mlp", js({}), {}, 400, "inputs"),
    ("empty-inputs", "mlp", js({"inputs": []}), {}, 400, "inputs"),
    ("input-not-object", "mlp", js({"inputs": [3]}), {}, 400, "inputs[0]"),
    (
        "input-without-name",
        "mlp",
        js({"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}),
        {},
        400,
        "name",
    ),
    ("unknown-input", "mlp", mlp(name="z"), {}, 400, "'z'"),
    ("wrong-datatype", "mlp", mlp(datatype="INT32", data=[1] * 64), {}, 400, "INT32"),
    ("unknown-datatype", "mlp", mlp(datatype="FLOAT"), {}, 400, "FLOAT"),
    ("wrong-rank", "mlp", mlp(shape=[64]), {}, 400, "shape"),
    ("wrong-static-dim", "mlp", mlp(shape=[1, 63], data=[0.0] * 63), {}, 400, "[1, 63]"),
    ("element-count", "mlp", mlp(data=[1.0] * 10), {}, 400, "10 elements"),
    ("absurd-shape", "mlp", mlp(shape=[10**12, 64]), {}, 400, "elements"),
    ("overflowing-shape", "mlp", mlp(shape=[2**62, 2**62]), {}, 400, "elements"),
    ("beyond-uint64-shape", "mlp", mlp(shape=[2**70, 64]), {}, 400, "shape"),
    ("negative-dim", "mlp", mlp(shape=[-1, 64]), {}, 400, "non-negative"),
    ("bool-dim", "mlp", mlp(shape=[True, 64]), {}, 400, "non-negative"),
    ("shape-not-list", "mlp", mlp(shape="1,64"), {}, 400, "shape"),
    ("huge-rank", "mlp", mlp(shape=[1] * 100), {}, 400, "rank"),
    ("strings-for-fp32", "mlp", mlp(data=["a"] * 64), {}, 400, "FP32"),
    ("dict-data", "mlp", mlp(data={"a": 1}), {}, 400, "data"),
    ("ragged-data", "mlp", mlp(data=[[1.0] * 64, [1.0]]), {}, 400, "x"),
    ("data-deeper-than-shape", "mlp", mlp(shape=[1, 64], data=[[[v] for v in X64]]), {}, 400, "deeper"),
    ("no-data", "mlp", mlp(data=None), {}, 400, "data"),
    (
        "deep-parameters",
        "mlp",
        js({**GOOD, "parameters": json.loads('{"a":' * 40 + "1" + "}" * 40)}),
        {},
        400,
        "deeper",
    ),
    (
        "fp16-overflow",
        "multi",
        js({"inputs": [{"name": "b", "datatype": "FP16", "shape": [1, 4], "data": [1e300] * 4}]}),
        {},
        400,
        "FP16",
    ),
    (
        "deep-unknown-field",
        "mlp",
        js({"inputs": [{**GOOD["inputs"][0], "extra": json.loads("[" * 30 + "]" * 30)}]}),
        {},
        400,
        "deeper",
    ),
    ("deep-json", "mlp", b"[" * 100_000 + b"]" * 100_000, {}, 400, "JSON"),
    ("parameters-not-object", "mlp", js({**GOOD, "parameters": [1]}), {}, 400, "parameters"),
    ("duplicate-input", "mlp", js({"inputs": GOOD["inputs"] * 2}), {}, 400, "twice"),
    ("unknown-output", "mlp", js({**GOOD, "outputs": [{"name": "nope"}]}), {}, 400, "'nope'"),
    ("outputs-not-list", "mlp", js({**GOOD, "outputs": {"name": "y"}}), {}, 400, "outputs"),
    (
        "classification",
        "mlp",
        js({**GOOD, "outputs": [{"name": "y", "parameters": {"classification": 2}}]}),
        {},
        400,
        "classification",
    ),
    (
        "binary-data-flag-not-bool",
        "mlp",
        js({**GOOD, "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]}),
        {},
        400,
        "binary_data",
    ),
    ("id-not-string", "mlp", js({**GOOD, "id": 5}), {}, 400, "id"),
    (
        "int32-overflow",
        "multi",
        js({"inputs": [{"name": "a", "datatype": "INT32", "shape": [1, 4], "data": [2**40] * 4}]}),
        {},
        400,
        "INT32",
    ),
    (
        "bool-from-strings",
        "multi",
        js({"inputs": [{"name": "d", "datatype": "BOOL", "shape": [1, 3], "data": ["false"] * 3}]}),
        {},
        400,
        "BOOL",
    ),
    (
        "missing-input",
        "multi",
        js({"inputs": [{"name": "a", "datatype": "INT32", "shape": [1, 4], "data": [1] * 4}]}),
        {},
        400,
        "missing",
    ),
    (
        "bytes-not-strings",
        "multi",
        js({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1, 2], "data": [1, 2]}]}),
        {},
        400,
        "strings",
    ),
    (
        "static-wrong-batch",
        "static",
        js({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 8], "data": [0.0] * 16}]}),
        {},
        400,
        "[4, 8]",
    ),
    # -- Triton binary tensor data extension ------------------------------------------------------
    (
        "header-length-not-number",
        "mlp",
        *binary({"inputs": [BIN_X]}, FLOATS, length=None)[:1],
        {"Inference-Header-Content-Length": "abc"},
        400,
        "Inference-Header-Content-Length",
    ),
    (
        "header-length-negative",
        "mlp",
        binary({"inputs": [BIN_X]}, FLOATS)[0],
        {"Inference-Header-Content-Length": "-5"},
        400,
        "Inference-Header-Content-Length",
    ),
    ("header-length-past-body", "mlp", *binary({"inputs": [BIN_X]}, FLOATS, length=10**6), 400, "exceeds"),
    (
        "header-length-huge",
        "mlp",
        *binary({"inputs": [BIN_X]}, FLOATS, length=10**30),
        400,
        "Inference-Header-Content-Length",
    ),
    ("header-length-zero", "mlp", *binary({"inputs": [BIN_X]}, FLOATS, length=0), 400, "JSON"),
    ("header-length-cuts-json", "mlp", *binary({"inputs": [BIN_X]}, FLOATS, length=20), 400, "JSON"),
    ("binary-size-past-data", "mlp", *binary({"inputs": [BIN_X]}, FLOATS[:100]), 400, "runs past"),
    ("binary-leftover", "mlp", *binary({"inputs": [BIN_X]}, FLOATS + b"xx"), 400, "not claimed"),
    (
        "binary-size-wrong-for-shape",
        "mlp",
        *binary({"inputs": [{**BIN_X, "parameters": {"binary_data_size": 200}}]}, FLOATS[:200]),
        400,
        "needs 256",
    ),
    (
        "binary-size-negative",
        "mlp",
        *binary({"inputs": [{**BIN_X, "parameters": {"binary_data_size": -1}}]}, FLOATS),
        400,
        "binary_data_size",
    ),
    (
        "binary-size-not-int",
        "mlp",
        *binary({"inputs": [{**BIN_X, "parameters": {"binary_data_size": "256"}}]}, FLOATS),
        400,
        "binary_data_size",
    ),
    (
        "binary-size-without-header",
        "mlp",
        js({"inputs": [BIN_X]}),
        {},
        400,
        "Inference-Header-Content-Length",
    ),
    ("binary-and-data", "mlp", *binary({"inputs": [{**BIN_X, "data": X64}]}, FLOATS), 400, "both"),
    (
        "binary-absurd-shape",
        "mlp",
        *binary({"inputs": [{**BIN_X, "shape": [10**12, 64]}]}, FLOATS),
        400,
        "elements",
    ),
    (
        "binary-large-shape",
        "mlp",
        *binary({"inputs": [{**BIN_X, "shape": [10**9, 64]}]}, FLOATS),
        400,
        "needs",
    ),
    (
        "bytes-truncated-prefix",
        "multi",
        *binary(
            {
                "inputs": [
                    {"name": "s", "datatype": "BYTES", "shape": [1, 2], "parameters": {"binary_data_size": 9}}
                ]
            },
            b"\x03\x00\x00\x00abc\x00\x00",
        ),
        400,
        "truncated",
    ),
    (
        "bytes-element-past-end",
        "multi",
        *binary(
            {
                "inputs": [
                    {"name": "s", "datatype": "BYTES", "shape": [1, 2], "parameters": {"binary_data_size": 9}}
                ]
            },
            b"\x01\x00\x00\x00a\xff\x00\x00\x00",
        ),
        400,
        "runs past",
    ),
    (
        "bytes-absurd-count",
        "multi",
        *binary(
            {
                "inputs": [
                    {
                        "name": "s",
                        "datatype": "BYTES",
                        "shape": [10**9, 2],
                        "parameters": {"binary_data_size": 5},
                    }
                ]
            },
            b"\x01\x00\x00\x00a",
        ),
        400,
        "cannot hold",
    ),
    ("bytes-not-utf8-for-string-model", "alltypes", b"", {}, 400, "UTF-8"),  # body filled in below
    ("unsupported-content-encoding", "mlp", js(GOOD), {"Content-Encoding": "br"}, 400, "Content-Encoding"),
    ("corrupt-gzip", "mlp", b"not gzip at all", {"Content-Encoding": "gzip"}, 400, "decompress"),
    # -- unknown model or version -------------------------------------------------------------------
    ("unknown-model", "nope", js(GOOD), {}, 404, "nope"),
    ("unknown-version", "mlp/versions/9", js(GOOD), {}, 404, "version"),
]


def _alltypes_non_utf8() -> tuple[bytes, dict[str, str]]:
    from serverlib import V2_TO_ONNX

    inputs, payload = [], b""
    for dt in V2_TO_ONNX:
        if dt == "BYTES":
            raw = b"".join(struct.pack("<I", 1) + b"\xff" for _ in range(3))
        else:
            size = {
                "BOOL": 1,
                "UINT8": 1,
                "INT8": 1,
                "UINT16": 2,
                "INT16": 2,
                "FP16": 2,
                "UINT32": 4,
                "INT32": 4,
                "FP32": 4,
            }.get(dt, 8)
            raw = b"\x00" * (3 * size)
        inputs.append(
            {
                "name": f"in_{dt}",
                "datatype": dt,
                "shape": [1, 3],
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        payload += raw
    return binary({"inputs": inputs}, payload)


def _post(server: RunningServer, path: str, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{server.url}/v2/models/{path}/infer", data=body, headers=headers, timeout=60)


@pytest.mark.parametrize(
    ("case", "path", "body", "headers", "status", "fragment"), CASES, ids=[c[0] for c in CASES]
)
def test_malformed_request(
    v2_server: RunningServer,
    case: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    fragment: str,
) -> None:
    if case == "bytes-not-utf8-for-string-model":
        body, headers = _alltypes_non_utf8()
    started = time.monotonic()
    r = _post(v2_server, path, body, headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error, str) and fragment in error, error
    assert time.monotonic() - started < 30  # refused cheaply: no allocation from the declared shape
    good = _post(v2_server, "mlp", js(GOOD), {})
    assert good.status_code == 200, good.text
    assert requests.get(f"{v2_server.url}/v2/health/live", timeout=10).status_code == 200


def test_gzip_request_body_is_accepted(v2_server: RunningServer) -> None:
    r = _post(v2_server, "mlp", zlib.compress(js(GOOD), wbits=31), {"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text


def test_wrong_method_and_unknown_route(v2_server: RunningServer) -> None:
    r = requests.get(f"{v2_server.url}/v2/models/mlp/infer", timeout=10)
    assert r.status_code == 405 and "error" in r.json()
    r = requests.get(f"{v2_server.url}/v2/nothing-here", timeout=10)
    assert r.status_code == 404 and "error" in r.json()
    r = requests.get(f"{v2_server.url}/v2/models/nope", timeout=10)
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = requests.get(f"{v2_server.url}/v2/models/nope/ready", timeout=10)
    assert r.status_code == 404


def test_unknown_models_create_no_series(v2_server: RunningServer) -> None:
    for i in range(3):
        _post(v2_server, f"ghost-{i}", js(GOOD), {})
    text = v2_server.metrics()
    assert "ghost-" not in text
    assert "modelserve_unknown_model_requests_total" in text
    assert 'modelserve_requests_total{code="400",model="mlp",protocol="http",version="1"}' in text


def _raw_request(port: int, head: bytes, body_parts: list[bytes]) -> bytes:
    """Send a request over a raw socket (the client may never send the body) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:  # the server answered and closed early: that is the point
                break
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and b'"error"' in b"".join(chunks):
                break
        return b"".join(chunks)


def test_oversize_body_refused_before_reading(
    server_factory: ServerFactory, onnx_models: dict[str, Any]
) -> None:
    server = server_factory("--model", f"mlp={onnx_models['mlp']}", "--max-request-bytes", "100000")
    # A declared Content-Length over the limit: answered 413 while the client has sent no body at all.
    head = (
        b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000000000\r\n\r\n"
    )
    answer = _raw_request(server.http_port, head, [])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"max-request-bytes" in answer
    # The same on a route served by the FastAPI app rather than the inference fast path.
    other = head.replace(b"/v2/models/mlp/infer", b"/v2/repository/index")
    answer = _raw_request(server.http_port, other, [])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # Chunked, no Content-Length: cut off once the counted bytes pass the limit.
    head = b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"a" * 32768
    parts = [b"%x\r\n" % len(chunk) + chunk + b"\r\n"] * 8 + [b"0\r\n\r\n"]
    answer = _raw_request(server.http_port, head, parts)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # Within the limit, with requests' own client: fine; and the server is still healthy.
    assert requests.post(f"{server.url}/v2/models/mlp/infer", json=GOOD, timeout=30).status_code == 200
    big = requests.post(f"{server.url}/v2/models/mlp/infer", data=b" " * 200_000, timeout=30)
    assert big.status_code == 413
    assert requests.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200
