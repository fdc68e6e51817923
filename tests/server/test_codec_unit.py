"""Property tests of the REST codec: binary and JSON tensors round-trip for every datatype, and
malformed input is an InvalidInput (never another exception)."""

from __future__ import annotations

import contextlib
import json
import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelserve_server.datatypes import V2_TO_NUMPY, v2_datatype
from modelserve_server.errors import InvalidInput
from modelserve_server.protocol.rest.codec import decode_infer_request, encode_infer_response
from modelserve_server.protocol.rest.jsonload import FAST_PATH_MIN_BYTES
from modelserve_server.protocol.tensor import decode_tensor, encode_tensor
from modelserve_server.types import InferOutput, InferRequest, InferResponse, RequestedOutput

FIXED = [dt for dt in V2_TO_NUMPY if dt != "BYTES"]
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4)


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    datatype = draw(st.sampled_from([*FIXED, "BYTES"]))
    shape = draw(shapes)
    if datatype == "BYTES":
        count = int(np.prod(shape))
        items = draw(st.lists(st.binary(max_size=8), min_size=count, max_size=count))
        array = np.empty(count, dtype=object)
        array[:] = items
        return datatype, array.reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    elements = (
        st.floats(width=16 * (dtype.itemsize // 2), allow_nan=False, allow_infinity=False)
        if dtype.kind == "f"
        else None
    )
    return datatype, draw(hnp.arrays(dtype, shape, elements=elements))


@given(tensors())
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_binary_round_trip(tensor: tuple[str, np.ndarray]) -> None:
    datatype, array = tensor
    raw = bytes(encode_tensor(array, datatype))
    back = decode_tensor(memoryview(raw), datatype, array.shape, "t")
    assert back.shape == array.shape
    if datatype == "BYTES":
        assert back.tolist() == array.tolist()
    else:
        assert back.dtype == array.dtype
        np.testing.assert_array_equal(back, array)


@given(tensors(), st.booleans(), st.booleans())
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_request_and_response_round_trip(
    tensor: tuple[str, np.ndarray], as_binary: bool, nested: bool
) -> None:
    datatype, array = tensor
    if datatype == "BYTES":
        array = np.vectorize(lambda b: b.hex().encode(), otypes=[object])(array) if array.size else array
    entry: dict[str, Any] = {"name": "t", "datatype": datatype, "shape": list(array.shape)}
    payload = b""
    if as_binary:
        payload = bytes(encode_tensor(array, datatype))
        entry["parameters"] = {"binary_data_size": len(payload)}
    else:
        values = [v.decode() for v in array.ravel()] if datatype == "BYTES" else array.ravel().tolist()
        if nested and datatype != "BYTES" and array.ndim > 1 and array.size:
            values = array.tolist()
        entry["data"] = values
    header = json.dumps({"id": "r", "inputs": [entry], "outputs": [{"name": "t"}]}).encode()
    req = decode_infer_request(header + payload, len(header) if as_binary else None, "m", None)
    got = req.inputs[0].data
    assert req.inputs[0].shape == array.shape and got.shape == array.shape
    if datatype == "BYTES":
        assert got.tolist() == array.tolist()
    else:
        np.testing.assert_array_equal(got, array)
        assert v2_datatype(got) == datatype

    for binary_out in (False, True):
        req.outputs = [RequestedOutput("t", binary_out)]
        resp = InferResponse("m", "1", "r", [InferOutput("t", datatype, array.shape, got)])
        body, json_length = encode_infer_response(resp, req)
        doc = orjson.loads(body if json_length is None else body[:json_length])
        assert "parameters" not in doc and doc["id"] == "r"
        out = doc["outputs"][0]
        if binary_out:
            assert json_length is not None and "data" not in out
            back = decode_tensor(memoryview(body)[json_length:], datatype, array.shape, "t")
        else:
            assert json_length is None and "parameters" not in out
            back = np.array(out["data"], dtype=object if datatype == "BYTES" else V2_TO_NUMPY[datatype])
            if datatype == "BYTES":
                back = np.array([s.encode() for s in out["data"]], dtype=object)
            back = back.reshape(array.shape)
        if datatype == "BYTES":
            assert back.tolist() == array.tolist()
        else:
            np.testing.assert_array_equal(back, array)


@given(st.binary(max_size=300), st.one_of(st.none(), st.integers(min_value=0, max_value=400)))
@settings(max_examples=300)
def test_garbage_is_invalid_input(body: bytes, header_length: int | None) -> None:
    if header_length is not None:
        header_length = min(header_length, len(body))
    with contextlib.suppress(InvalidInput):
        decode_infer_request(body, header_length, "m", None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(
    st.sampled_from([*FIXED, "BYTES", "NOPE", 3]),
    st.one_of(st.lists(st.integers(min_value=-3, max_value=2**65), max_size=4), json_values),
    json_values,
    st.one_of(st.none(), json_values),
)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_structurally_odd_json_is_invalid_input(datatype: Any, shape: Any, data: Any, params: Any) -> None:
    entry: dict[str, Any] = {"name": "t", "datatype": datatype, "shape": shape, "data": data}
    if params is not None:
        entry["parameters"] = params
    body = json.dumps({"inputs": [entry]}).encode()
    try:
        req = decode_infer_request(body, None, "m", None)
    except InvalidInput:
        return
    tensor = req.inputs[0]
    assert tensor.data.shape == tensor.shape


def test_bytes_binary_layout() -> None:
    array = np.array([b"ab", b"", b"xyz"], dtype=object)
    raw = bytes(encode_tensor(array, "BYTES"))
    assert raw == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0) + struct.pack("<I", 3) + b"xyz"


def test_output_with_non_utf8_bytes_needs_binary() -> None:
    req = InferRequest("m", None, None, [], [RequestedOutput("s", False)])
    resp = InferResponse("m", "1", None, [InferOutput("s", "BYTES", (1,), np.array([b"\xff"], dtype=object))])
    with pytest.raises(InvalidInput, match="binary_data"):
        encode_infer_response(resp, req)
    req.outputs = [RequestedOutput("s", True)]
    body, length = encode_infer_response(resp, req)
    assert length is not None and body[length:] == struct.pack("<I", 1) + b"\xff"


# -- the large-body JSON path must accept and refuse exactly what orjson does ----------------------------

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
json_data = st.one_of(
    st.lists(numbers, max_size=6),
    st.lists(st.lists(numbers, min_size=1, max_size=3), max_size=3),
    st.lists(st.text(max_size=3), max_size=3),
    numbers,
    st.none(),
)


@given(
    st.sampled_from([*FIXED, "BYTES", "NOPE"]),
    st.lists(st.integers(min_value=0, max_value=4), max_size=3),
    json_data,
    st.booleans(),
)
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_fast_json_path_agrees_with_orjson(
    datatype: str, shape: list[int], data: Any, duplicate: bool
) -> None:
    entry = json.dumps({"name": "t", "datatype": datatype, "shape": shape, "data": data})
    if duplicate:
        entry = entry[:-1] + ', "data": [1]}'
    padding = "p" * FAST_PATH_MIN_BYTES  # a long id: large enough for the fast path
    body = ('{"id": "' + padding + '", "inputs": [' + entry + "]}").encode()
    outcomes = []
    for fast in (True, False):
        try:
            req = decode_infer_request(body, None, "m", None, fast_json=fast)
            tensor = req.inputs[0].data
            outcomes.append(("ok", tensor.dtype.str, tensor.shape, tensor.tolist()))
        except InvalidInput:
            outcomes.append(("invalid",))
    assert outcomes[0] == outcomes[1], body


def test_fast_json_path_is_used_for_large_tensors() -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3, 32, 32],
                                   "data": x.ravel().tolist()}]}).encode()  # fmt: skip
    from modelserve_server.protocol.rest import jsonload

    assert len(body) > jsonload.FAST_PATH_MIN_BYTES
    doc = jsonload.load_request(body)
    data = doc["inputs"][0]["data"]
    assert isinstance(data, jsonload.DataSpan) and data.numeric  # no Python floats were built
    fast = decode_infer_request(body, None, "m", None).inputs[0].data
    slow = decode_infer_request(body, None, "m", None, fast_json=False).inputs[0].data
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(fast, x)


def test_raw_bool_bytes_other_than_zero_are_true_on_both_transports() -> None:
    """HTTP's binary extension and gRPC's raw contents share one decoder: a BOOL byte of 2 is a
    valid True (not an invalid numpy bool), and the gRPC encoder writes what HTTP's writes."""
    from modelserve_server.protocol.grpc.codec import encode_raw
    from modelserve_server.protocol.tensor import decode_tensor, encode_tensor

    decoded = decode_tensor(memoryview(b"\x00\x02\x01"), "BOOL", (3,), "b")
    assert decoded.dtype == np.bool_
    assert decoded.tolist() == [False, True, True]
    strings = np.array([b"ab", b""], dtype=object)
    expected = b"\x02\x00\x00\x00ab\x00\x00\x00\x00"
    assert encode_raw("BYTES", strings) == bytes(encode_tensor(strings, "BYTES")) == expected


@pytest.mark.parametrize(
    "data",
    [
        "[1, 2.5, -3e2]",
        '[1, 2]], "x": ["]"]',  # a ']' later in the body must not end the span
        '[1, "a]", 3]',  # a string: not numeric, found by the element-by-element skip
        "[[1, 2], [3, 4]]",  # nested: the number-run path
        "[1, 2",  # unterminated
    ],
)
def test_flat_data_shortcut_finds_the_same_span_as_the_number_run(data: str) -> None:
    """jsonload's flat shortcut (memchr + translate) must give the span the NUMERIC_RUN regex gives."""
    from modelserve_server.protocol.rest import jsonload

    buf = b'{"data": ' + data.encode() + b"}"
    pos = buf.index(b"[")
    run = jsonload.NUMERIC_RUN.match(buf, pos)
    end = jsonload.balanced_end(buf, pos, run.end() if run else pos)
    try:
        span, _ = jsonload._Scanner(buf).data(pos)
    except InvalidInput:
        assert end is None
        return
    if end is not None:
        assert (span.start, span.end, span.numeric) == (pos, end, True)
    else:
        assert not span.numeric


def test_kept_simdjson_parser_decodes_each_body_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread's kept parser serves bodies one after another (and a larger one gets its own)."""
    from modelserve_server.protocol.rest import numbers as numbers_module

    monkeypatch.setattr(numbers_module, "_REUSE_BYTES", 40_000)
    rng = np.random.default_rng(1)
    for size in (2000, 500, 3000, 2000):  # 3000 floats exceed the patched cap
        x = rng.standard_normal((1, size)).astype(np.float32)
        body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, size],
                                       "data": x.ravel().tolist()}]}).encode()  # fmt: skip
        np.testing.assert_array_equal(decode_infer_request(body, None, "m", None).inputs[0].data, x)
