"""Translate between the gRPC messages of the Open Inference Protocol and the server's own types.

Why separate from the servicer: this is the part with rules worth testing on their own (raw versus
typed contents, BYTES framing, element counts, integer ranges), and it never touches the event loop
or the network.

Wire rules implemented here:
- Inputs arrive either as ``raw_input_contents`` (one entry per input, same order) or as typed
  ``contents`` per input, never both. Raw data is little-endian, row-major, unpadded; BOOL is one
  byte per element; BYTES elements are each prefixed by their length as a 4-byte little-endian
  unsigned integer. FP16 has no typed field and must be raw.
- Outputs always go back as ``raw_output_contents``: ``tritonclient.grpc`` reads numeric outputs only
  from there (typed ``contents`` come back empty to it).
- Every mismatch (datatype, shape, size, count, range) is an :class:`InvalidInput` naming the tensor,
  so it becomes INVALID_ARGUMENT and never INTERNAL. Sizes are checked before any allocation, so an
  absurd shape such as ``[10**12, 64]`` with a few bytes of data costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message

from modelserve_server.datatypes import BYTES, V2_TO_NUMPY
from modelserve_server.errors import InvalidInput
from modelserve_server.protocol.grpc.generated import grpc_service_pb2 as pb
from modelserve_server.protocol.tensor import (
    check_bytes_count,
    check_range,
    check_shape,
    decode_tensor,
    element_count,
    encode_tensor,
)
from modelserve_server.types import InferInput, InferRequest, InferResponse, RequestedOutput

#: V2 datatype -> the ``InferTensorContents`` field that carries it (FP16 has none: raw only).
TYPED_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}

_M = TypeVar("_M", bound=Message)
#: The model's signature check: (input name, datatype, shape) -> None or InvalidInput.
InputCheck = Callable[[str, str, tuple[int, ...]], None]
_INT64_MAX = (1 << 63) - 1


# ---------------------------------------------------------------------------------------------
# Requests


def decode_request(msg: pb.ModelInferRequest, check: InputCheck | None = None) -> InferRequest:
    """A ``ModelInferRequest`` as an :class:`InferRequest`; :class:`InvalidInput` when malformed.

    ``check(name, datatype, shape)`` (the model's signature) runs on each input before its data is
    decoded, so a tensor the model cannot take costs nothing to refuse.
    """
    raw = list(msg.raw_input_contents)
    if raw and len(raw) != len(msg.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but the request has {len(msg.inputs)} inputs: "
            "give one entry per input, in the order of the inputs"
        )
    inputs: list[InferInput] = []
    seen: set[str] = set()
    for index, tensor in enumerate(msg.inputs):
        if tensor.name in seen:
            raise InvalidInput(f"input {tensor.name!r} is given more than once")
        seen.add(tensor.name)
        inputs.append(_decode_input(tensor, raw[index] if raw else None, check))
    outputs = [RequestedOutput(name=out.name) for out in msg.outputs]
    return InferRequest(
        model=msg.model_name,
        version=msg.model_version or None,
        id=msg.id or None,
        inputs=inputs,
        outputs=outputs,
        parameters=decode_parameters(msg.parameters),
    )


def _decode_input(
    tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, check: InputCheck | None
) -> InferInput:
    name, datatype = tensor.name, tensor.datatype
    if datatype not in V2_TO_NUMPY:
        raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r}")
    # The same shape rules as HTTP (rank, element counts): one module decides them.
    shape = check_shape(list(tensor.shape), name, datatype)
    if check is not None:
        check(name, datatype, shape)
    count = element_count(shape)
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInput(f"input {name!r}: give either raw_input_contents or contents, not both")
        data = _from_raw(name, datatype, shape, count, raw)
    elif tensor.HasField("contents"):
        data = _from_typed(name, datatype, shape, count, tensor.contents)
    else:
        raise InvalidInput(f"input {name!r}: no data (neither raw_input_contents nor contents)")
    return InferInput(name=name, datatype=datatype, shape=shape, data=data)


def _from_raw(name: str, datatype: str, shape: tuple[int, ...], count: int, raw: bytes) -> np.ndarray:
    # raw_input_contents has the layout of Triton's HTTP binary extension: one decoder for both.
    return decode_tensor(memoryview(raw), datatype, shape, name)


def _from_typed(
    name: str, datatype: str, shape: tuple[int, ...], count: int, contents: pb.InferTensorContents
) -> np.ndarray:
    field = TYPED_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input {name!r}: {datatype} has no typed contents field; send it raw")
    for other in TYPED_FIELD.values():
        if other != field and len(getattr(contents, other)):
            raise InvalidInput(f"input {name!r}: {datatype} data goes in contents.{field}, not {other}")
    values: Sequence[Any] = getattr(contents, field)
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r}: contents.{field} has {len(values)} elements, but shape {list(shape)} "
            f"needs {count}"
        )
    if datatype == BYTES:
        check_bytes_count(count, name)
        out = np.empty(count, dtype=object)
        out[:] = list(values)
        return out.reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    if dtype.kind in "iu" and dtype.itemsize < 8 and count:
        wide = np.asarray(values, dtype=np.int64)
        check_range(wide, datatype, name)
        return wide.astype(dtype).reshape(shape)
    return np.asarray(values, dtype=dtype).reshape(shape)


def decode_parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """``map<string, InferParameter>`` as plain Python values."""
    out: dict[str, Any] = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(param, choice)
    return out


# ---------------------------------------------------------------------------------------------
# Responses


def encode_response(resp: InferResponse) -> pb.ModelInferResponse:
    """An :class:`InferResponse` as a ``ModelInferResponse`` with every output in raw form."""
    msg = pb.ModelInferResponse(
        model_name=resp.model_name,
        model_version=resp.model_version,
        id=resp.id or "",
    )
    encode_parameters(resp.parameters, msg.parameters)
    for output in resp.outputs:
        msg.outputs.add(name=output.name, datatype=output.datatype, shape=list(output.shape))
        msg.raw_output_contents.append(encode_raw(output.datatype, output.data))
    return msg


def encode_raw(datatype: str, data: np.ndarray) -> bytes:
    """A tensor as raw bytes: the same layout as the HTTP binary extension, from the same encoder."""
    return bytes(encode_tensor(data, datatype))

def encode_parameters(params: Mapping[str, Any], into: Any) -> None:
    """Write plain Python values into a ``map<string, InferParameter>``; other types are skipped."""
    for key, value in params.items():
        if isinstance(value, bool):
            into[key].bool_param = value
        elif isinstance(value, int):
            if value > _INT64_MAX:
                into[key].uint64_param = value
            else:
                into[key].int64_param = value
        elif isinstance(value, float):
            into[key].double_param = value
        elif isinstance(value, str):
            into[key].string_param = value


# ---------------------------------------------------------------------------------------------
# Triton extensions


def from_triton_json(document: Mapping[str, Any], into: _M) -> _M:
    """Fill a message from Triton's JSON form of it (``/v2/models/{m}/config`` and ``/stats``).

    Triton's JSON documents are the protobuf JSON mapping of these messages, so the REST documents
    the service builds convert field by field; fields this server's .proto does not declare are
    skipped rather than refused.
    """
    return json_format.ParseDict(dict(document), into, ignore_unknown_fields=True)
