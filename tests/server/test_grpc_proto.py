"""The gRPC contract without a server: the .proto agrees with the published protocol (as shipped in
tritonclient), the committed stubs are what ``make generate`` produces, and the codec reads what
tritonclient writes and writes what tritonclient reads - including every malformed-input rule.
"""

from __future__ import annotations

import importlib.util
import math
import struct
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from tritonclient.grpc import _utils as tutils
from tritonclient.grpc import model_config_pb2 as triton_config_pb
from tritonclient.grpc import service_pb2 as triton_pb

from modelserve_server.errors import InvalidInput
from modelserve_server.protocol.grpc import codec
from modelserve_server.protocol.grpc.generated import grpc_service_pb2 as pb
from modelserve_server.types import InferOutput, InferResponse

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_generate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_hack_generate", REPO_ROOT / "hack" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# The contract: field numbers and generated files


def _messages(*descriptors: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def walk(message: Any) -> None:
        found[message.full_name] = message
        for nested in message.nested_types:
            walk(nested)

    for descriptor in descriptors:
        for message in descriptor.message_types_by_name.values():
            walk(message)
    return found


def test_proto_matches_published_protocol() -> None:
    # Triton splits the protocol in two files; the extension messages live in model_config.proto.
    ours, theirs = _messages(pb.DESCRIPTOR), _messages(triton_pb.DESCRIPTOR, triton_config_pb.DESCRIPTOR)
    assert pb.DESCRIPTOR.package == "inference"
    assert len(ours) >= 20
    for full_name, message in ours.items():
        assert full_name in theirs, f"{full_name} is not in the published protocol"
        other = theirs[full_name]
        for field in message.fields:
            twin = other.fields_by_name.get(field.name)
            assert twin is not None, f"{full_name}.{field.name} is not in the published protocol"
            ours_kind = (field.number, field.type, field.is_repeated)
            assert ours_kind == (twin.number, twin.type, twin.is_repeated), (
                f"{full_name}.{field.name} differs from the published protocol"
            )
            if field.message_type is not None:
                assert field.message_type.full_name == twin.message_type.full_name
            if field.enum_type is not None:
                assert field.enum_type.full_name == twin.enum_type.full_name
        assert [o.name for o in message.oneofs] == [o.name for o in other.oneofs]
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        published_enum = triton_config_pb.DESCRIPTOR.enum_types_by_name[enum.name]
        assert {v.name: v.number for v in enum.values} == {v.name: v.number for v in published_enum.values}
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    published = triton_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    required = {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"}
    assert required <= set(service.methods_by_name)
    for method in service.methods:
        twin = published.methods_by_name[method.name]
        assert method.input_type.full_name == twin.input_type.full_name
        assert method.output_type.full_name == twin.output_type.full_name


def test_generated_stubs_have_no_drift(tmp_path: Path) -> None:
    generate = _load_generate()
    written = generate.grpc_stubs(tmp_path)
    committed = generate.GRPC_GENERATED
    assert sorted(p.name for p in written) == sorted(
        p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi")
    )
    for path in written:
        assert path.read_text() == (committed / path.name).read_text(), (
            f"{committed / path.name} is stale: run `make generate`"
        )


# ---------------------------------------------------------------------------------------------
# Requests as tritonclient writes them


def _triton_request(arrays: dict[str, np.ndarray], **kwargs: Any) -> pb.ModelInferRequest:
    inputs = []
    for name, array in arrays.items():
        datatype = tutils.np_to_triton_dtype(array.dtype)
        item = tgrpc.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    request = tutils._get_inference_request(
        model_name=kwargs.get("model", "m"),
        inputs=inputs,
        model_version=kwargs.get("version", ""),
        request_id=kwargs.get("request_id", ""),
        outputs=[tgrpc.InferRequestedOutput(n) for n in kwargs.get("outputs", [])],
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        parameters=kwargs.get("parameters"),
    )
    return pb.ModelInferRequest.FromString(request.SerializeToString())


ARRAYS = {
    "f32": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    "f16": np.array([[0.5, -1.25]], dtype=np.float16),
    "f64": np.array([1e300, -2.5]),
    "i8": np.array([-128, 127], dtype=np.int8),
    "i32": np.array([[-(2**31), 2**31 - 1]], dtype=np.int32),
    "i64": np.array([2**62, -(2**62)], dtype=np.int64),
    "u16": np.array([65535, 0], dtype=np.uint16),
    "u64": np.array([2**64 - 1], dtype=np.uint64),
    "flag": np.array([[True, False, True]]),
    "text": np.array([["héllo".encode(), b""], [b"\x00\xff", b"x" * 300]], dtype=object),
}


def test_decode_tritonclient_request() -> None:
    msg = _triton_request(
        ARRAYS, model="mlp", version="2", request_id="r-1", outputs=["y"], parameters={"k": 3, "s": "v"}
    )
    req = codec.decode_request(msg)
    assert (req.model, req.version, req.id) == ("mlp", "2", "r-1")
    assert [o.name for o in req.outputs] == ["y"]
    assert req.parameters == {"k": 3, "s": "v"}
    for item in req.inputs:
        expected = ARRAYS[item.name]
        assert item.shape == expected.shape
        assert item.data.shape == expected.shape
        assert item.datatype == tutils.np_to_triton_dtype(expected.dtype)
        if expected.dtype == object:
            assert item.data.tolist() == expected.tolist()
        else:
            assert item.data.dtype == expected.dtype
            np.testing.assert_array_equal(item.data, expected)


def test_decode_typed_contents() -> None:
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name="a", datatype="FP32", shape=[2, 2]).contents.fp32_contents.extend([1, 2, 3, 4])
    msg.inputs.add(name="b", datatype="INT16", shape=[3]).contents.int_contents.extend([-5, 0, 7])
    msg.inputs.add(name="c", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"abc")
    msg.inputs.add(name="d", datatype="BOOL", shape=[2]).contents.bool_contents.extend([True, False])
    msg.inputs.add(name="e", datatype="UINT64", shape=[1]).contents.uint64_contents.append(2**64 - 1)
    req = codec.decode_request(msg)
    data = {i.name: i.data for i in req.inputs}
    np.testing.assert_array_equal(data["a"], np.array([[1, 2], [3, 4]], dtype=np.float32))
    assert data["b"].dtype == np.int16 and data["b"].tolist() == [-5, 0, 7]
    assert data["c"].tolist() == [b"abc"]
    assert data["d"].dtype == np.bool_ and data["d"].tolist() == [True, False]
    assert data["e"].dtype == np.uint64 and int(data["e"][0]) == 2**64 - 1


def _raw(name: str, datatype: str, shape: list[int], raw: bytes) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m", raw_input_contents=[raw])
    msg.inputs.add(name=name, datatype=datatype, shape=shape)
    return msg


def _typed(datatype: str, shape: list[int], field: str, values: list[Any]) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m")
    getattr(msg.inputs.add(name="x", datatype=datatype, shape=shape).contents, field).extend(values)
    return msg


def _both() -> pb.ModelInferRequest:
    msg = _raw("x", "FP32", [1], b"\0" * 4)
    msg.inputs[0].contents.fp32_contents.append(1.0)
    return msg


def _two_raw_one_input() -> pb.ModelInferRequest:
    msg = _raw("x", "FP32", [1], b"\0" * 4)
    msg.raw_input_contents.append(b"\0" * 4)
    return msg


def _duplicate() -> pb.ModelInferRequest:
    msg = _raw("x", "FP32", [1], b"\0" * 4)
    msg.inputs.add(name="x", datatype="FP32", shape=[1])
    msg.raw_input_contents.append(b"\0" * 4)
    return msg


MALFORMED = {
    "unknown datatype": (_raw("x", "FP128", [1], b"\0" * 16), "unknown datatype 'FP128'"),
    "negative dim": (_raw("x", "FP32", [-1, 2], b""), "negative dimension"),
    "raw too short": (_raw("x", "FP32", [2, 3], b"\0" * 20), "has 20 bytes, but FP32 shape [2, 3] needs 24"),
    "raw too long": (_raw("x", "INT64", [1], b"\0" * 9), "needs 8"),
    "absurd shape": (_raw("x", "FP32", [10**12, 64], b"\0" * 256), "needs 256000000000000"),
    "absurd bytes": (_raw("x", "BYTES", [10**12], b"\0" * 8), "cannot hold 1000000000000 elements"),
    "bytes truncated": (_raw("x", "BYTES", [1], struct.pack("<I", 10) + b"abc"), "claims 10 bytes"),
    "bytes trailing": (_raw("x", "BYTES", [1], struct.pack("<I", 1) + b"ab"), "1 bytes after"),
    "bytes cut prefix": (_raw("x", "BYTES", [2], struct.pack("<I", 1) + b"a" + b"\0\0\0"), "length prefix"),
    "no data": (pb.ModelInferRequest(model_name="m", inputs=[{"name": "x", "datatype": "FP32"}]), "no data"),
    "both": (_both(), "not both"),
    "raw count": (_two_raw_one_input(), "raw_input_contents has 2 entries"),
    "duplicate": (_duplicate(), "more than once"),
    "typed count": (_typed("FP32", [3], "fp32_contents", [1.0]), "has 1 elements, but shape [3] needs 3"),
    "typed fp16": (_typed("FP16", [1], "fp32_contents", [1.0]), "FP16 has no typed contents"),
    "typed wrong field": (_typed("INT64", [1], "int_contents", [1]), "goes in contents.int64_contents"),
    "typed overflow": (_typed("INT8", [2], "int_contents", [1, 300]), "outside the range of INT8"),
    "typed uint overflow": (_typed("UINT16", [1], "uint_contents", [70000]), "outside the range of UINT16"),
    # Shape rules shared with HTTP (protocol/tensor.py): INTERNAL with a traceback before they were.
    "rank 65": (_raw("x", "FP32", [1] * 65, b"\0" * 4), "rank 65 exceeds the limit"),
    "too many elements": (_raw("x", "FP32", [2**31, 2**31], b""), "over the limit"),
}


@pytest.mark.parametrize("shape", [[1] * 65, [-3], [2**31, 2**31], [10**12, 64]])
def test_grpc_and_http_refuse_a_shape_with_the_same_words(shape: list[int]) -> None:
    """One tensor module decides shapes for both transports: the messages cannot drift apart."""
    from modelserve_server.protocol.tensor import check_shape

    with pytest.raises(InvalidInput) as http:
        check_shape(shape, "x", "FP32")
    with pytest.raises(InvalidInput) as grpc_error:
        codec.decode_request(_raw("x", "FP32", shape, b"\0" * 4))
    assert str(grpc_error.value) == str(http.value)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_requests_are_invalid_input(case: str) -> None:
    msg, message = MALFORMED[case]
    with pytest.raises(InvalidInput) as info:
        codec.decode_request(msg)
    assert message in str(info.value)
    assert "'x'" in str(info.value) or case in ("raw count",)


def test_zero_sized_tensors() -> None:
    req = codec.decode_request(_raw("x", "FP32", [0, 4], b""))
    assert req.inputs[0].data.shape == (0, 4)
    req = codec.decode_request(_raw("x", "BYTES", [0], b""))
    assert req.inputs[0].data.shape == (0,)
    assert math.prod(req.inputs[0].shape) == 0


# ---------------------------------------------------------------------------------------------
# Responses as tritonclient reads them


def test_encode_response_read_by_tritonclient() -> None:
    outputs = [
        InferOutput(name, tutils.np_to_triton_dtype(array.dtype), array.shape, array)
        for name, array in ARRAYS.items()
    ]
    outputs.append(InferOutput("str", "BYTES", (2,), np.array(["ünï", "b"], dtype=object)))
    outputs.append(InferOutput("strided", "FP32", (2,), np.arange(4, dtype=np.float32)[::2]))
    parameters = {"flag": True, "n": 2**64 - 1, "x": 0.5}
    response = InferResponse("mlp", "3", "req-9", outputs, parameters=parameters)
    wire = codec.encode_response(response).SerializeToString()
    result = tgrpc.InferResult(triton_pb.ModelInferResponse.FromString(wire))
    got = result.get_response()
    assert (got.model_name, got.model_version, got.id) == ("mlp", "3", "req-9")
    assert got.parameters["flag"].bool_param is True
    assert got.parameters["n"].uint64_param == 2**64 - 1
    assert got.parameters["x"].double_param == 0.5
    for name, array in ARRAYS.items():
        value = result.as_numpy(name)
        assert value is not None, name
        if array.dtype == object:
            assert value.tolist() == array.tolist()
        else:
            assert value.dtype == array.dtype
            np.testing.assert_array_equal(value, array)
    assert result.as_numpy("str").tolist() == ["ünï".encode(), b"b"]
    np.testing.assert_array_equal(result.as_numpy("strided"), np.array([0, 2], dtype=np.float32))
