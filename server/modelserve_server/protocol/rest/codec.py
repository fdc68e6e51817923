"""The V2 REST inference body, JSON and Triton's binary tensor data extension, both directions.

Why here and not in the FastAPI handlers: this is where every client mistake must become a precise
400 (which tensor, what is wrong), and where speed is won or lost. The rules:

* A request body is JSON, unless the ``Inference-Header-Content-Length: N`` header is present: then
  the first N bytes are the JSON header and the rest is the binary section. A *missing* Content-Type
  means JSON (``tritonclient.http`` sends none).
* An input carries either ``data`` (flat or nested JSON, BYTES as strings) or
  ``parameters.binary_data_size`` (its bytes are the next slice of the binary section, in input
  order). Leftover binary bytes are an error.
* Sizes are compared as Python integers before any allocation (see :mod:`..tensor`), JSON numbers are
  checked and converted strictly by :mod:`.numbers` (large bodies without a Python object per
  element), binary tensors are zero-copy views.
* Outputs are binary when the output asks ``binary_data: true``, or when it does not say and the
  request's ``binary_data_output`` parameter is true. JSON outputs are serialised by orjson straight
  from numpy. A response never carries ``"parameters": null`` (perf_analyzer rejects it).
* The document may nest at most :data:`MAX_JSON_DEPTH` levels outside tensor ``data``, and ``data``
  no deeper than its tensor's rank. (orjson itself refuses documents nested beyond 1024 levels.)

This module imports no web framework: the gRPC front end and tests use it without FastAPI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from modelserve_server.datatypes import BYTES, V2_TO_NUMPY
from modelserve_server.errors import InvalidInput
from modelserve_server.parsing import ascii_uint
from modelserve_server.protocol.rest.jsonload import DataSpan, load_request
from modelserve_server.protocol.rest.numbers import decode_list, decode_span
from modelserve_server.protocol.tensor import (
    check_bytes_count,
    check_shape,
    decode_tensor,
    element_count,
    encode_tensor,
)
from modelserve_server.types import InferInput, InferRequest, InferResponse, RequestedOutput

HEADER_LENGTH = "inference-header-content-length"
MAX_JSON_DEPTH = 10
_NUMPY_OPTION = orjson.OPT_SERIALIZE_NUMPY
#: The model's signature check: (input name, datatype, shape) -> None or InvalidInput.
InputCheck = Callable[[str, str, tuple[int, ...]], None]


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """The ``Inference-Header-Content-Length`` value checked against the body; None when absent."""
    if value is None:
        return None
    length = ascii_uint(value.strip(" \t"))
    if length is None:
        raise InvalidInput(f"Inference-Header-Content-Length {value!r} is not a non-negative integer")
    if length > body_length:
        raise InvalidInput(
            f"Inference-Header-Content-Length {length} exceeds the body of {body_length} bytes"
        )
    return length


def check_depth(doc: dict[str, Any]) -> None:
    """Refuse a request nested deeper than :data:`MAX_JSON_DEPTH` levels outside its tensor data.

    Tensor ``data`` is exempt here because it may legitimately nest as deep as the tensor's rank; its
    depth is checked against the declared shape when it is decoded. Iterative, so nothing recursive
    can be exhausted.
    """
    stack: list[tuple[object, int]] = []
    inputs = doc.get("inputs")
    for key, value in doc.items():
        if key != "inputs":
            stack.append((value, 2))
    if isinstance(inputs, list):
        for entry in inputs:
            if isinstance(entry, dict):
                stack.extend((v, 4) for k, v in entry.items() if k != "data")
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidInput(f"the request nests deeper than {MAX_JSON_DEPTH} levels (outside tensor data)")
        stack.extend((c, depth + 1) for c in children)


def _parameters(doc: dict[str, Any], where: str) -> dict[str, Any]:
    params = doc.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    return params


def _strings(data: object, max_depth: int, tensor: str) -> list[bytes]:
    """Flatten (possibly nested) JSON strings of a BYTES tensor into UTF-8 bytes."""
    if isinstance(data, str):
        return [data.encode("utf-8")]
    if not isinstance(data, list):
        raise InvalidInput(f"input {tensor!r}: BYTES data must be a list of strings")
    out: list[bytes] = []
    # Depth-first with explicit stacks of iterators and their depths, keeping element order.
    iters = [iter(data)]
    depths = [1]
    while iters:
        try:
            item = next(iters[-1])
        except StopIteration:
            iters.pop()
            depths.pop()
            continue
        if isinstance(item, str):
            out.append(item.encode("utf-8"))
        elif isinstance(item, list):
            if depths[-1] + 1 > max_depth:
                raise InvalidInput(f"input {tensor!r}: data nests deeper than its shape")
            iters.append(iter(item))
            depths.append(depths[-1] + 1)
        else:
            raise InvalidInput(f"input {tensor!r}: BYTES data must hold strings, got {type(item).__name__}")
    return out


def decode_json_data(data: object, datatype: str, shape: tuple[int, ...], tensor: str) -> np.ndarray:
    """A tensor from JSON ``data`` (flat or nested) that must hold exactly ``prod(shape)`` elements.

    ``data`` is a plain JSON value (small bodies) or a :class:`~.jsonload.DataSpan` (large ones);
    numeric datatypes are decoded strictly by :mod:`.numbers`.
    """
    count = element_count(shape)
    max_depth = max(1, len(shape))
    if datatype == BYTES:
        check_bytes_count(count, tensor)
        if isinstance(data, DataSpan):
            data = data.parse(max_elements=count)
        flat = _strings(data, max_depth, tensor)
        if len(flat) != count:
            raise InvalidInput(
                f"input {tensor!r}: {len(flat)} elements of data, but shape {list(shape)} needs {count}"
            )
        array = np.empty(count, dtype=object)
        array[:] = flat
        return array.reshape(shape)
    if isinstance(data, DataSpan):
        return decode_span(data, datatype, shape, tensor)
    return decode_list(data, datatype, shape, tensor)


def _outputs(doc: dict[str, Any]) -> list[RequestedOutput]:
    raw = doc.get("outputs")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidInput("'outputs' must be a list")
    outputs: list[RequestedOutput] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput(f"outputs[{i}] must be an object with a string 'name'")
        params = _parameters(entry, f"output {entry['name']!r}")
        if params.get("classification") is not None:
            raise InvalidInput(f"output {entry['name']!r}: the classification extension is not supported")
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidInput(f"output {entry['name']!r}: 'binary_data' must be true or false")
        outputs.append(RequestedOutput(entry["name"], binary))
    return outputs


def decode_infer_request(
    body: bytes,
    header_length: int | None,
    model: str,
    version: str | None,
    *,
    fast_json: bool = True,
    check: InputCheck | None = None,
) -> InferRequest:
    """Decode a REST inference body (``header_length``: see :func:`parse_header_length`).

    ``check(name, datatype, shape)`` (the model's signature) runs on each input before its data is
    decoded. ``fast_json=False`` parses with orjson only (see :mod:`.jsonload`; tests compare both).
    """
    view = memoryview(body)
    json_part = body if header_length is None else view[:header_length]  # no copy of a JSON body
    binary = None if header_length is None else view[header_length:]
    doc = load_request(json_part, fast=fast_json)
    if not isinstance(doc, dict):
        raise InvalidInput("the request body must be a JSON object")
    check_depth(doc)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    parameters = _parameters(doc, "request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list")
    inputs: list[InferInput] = []
    offset = 0
    for i, entry in enumerate(raw_inputs):
        if not isinstance(entry, dict):
            raise InvalidInput(f"inputs[{i}] must be an object")
        name = entry.get("name")
        if not isinstance(name, str):
            raise InvalidInput(f"inputs[{i}] needs a string 'name'")
        datatype = entry.get("datatype")
        if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
            raise InvalidInput(
                f"input {name!r}: unknown datatype {datatype!r} (one of {', '.join(V2_TO_NUMPY)})"
            )
        shape = check_shape(entry.get("shape"), name, datatype)
        if check is not None:
            check(name, datatype, shape)
        params = _parameters(entry, f"input {name!r}")
        size = params.get("binary_data_size")
        if size is not None:
            if "data" in entry:
                raise InvalidInput(f"input {name!r} has both 'data' and 'binary_data_size'")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer")
            if binary is None:
                raise InvalidInput(
                    f"input {name!r} has binary_data_size but the request has no "
                    "Inference-Header-Content-Length header"
                )
            if offset + size > len(binary):
                raise InvalidInput(
                    f"input {name!r}: binary_data_size {size} runs past the binary data "
                    f"({len(binary) - offset} bytes left)"
                )
            data = decode_tensor(binary[offset : offset + size], datatype, shape, name)
            offset += size
        else:
            if "data" not in entry:
                raise InvalidInput(f"input {name!r} has neither 'data' nor 'binary_data_size'")
            data = decode_json_data(entry["data"], datatype, shape, name)
        inputs.append(InferInput(name, datatype, shape, data))
    if binary is not None and offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    return InferRequest(model, version, request_id, inputs, _outputs(doc), parameters)


def _json_data(array: np.ndarray, datatype: str, name: str) -> Any:
    if datatype == BYTES:
        try:
            return [b.decode("utf-8") if isinstance(b, bytes) else str(b) for b in array.ravel()]
        except UnicodeDecodeError:
            raise InvalidInput(
                f"output {name!r} holds bytes that are not UTF-8; request it with binary_data: true"
            ) from None
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype.kind == "f" and flat.size and not bool(np.isfinite(flat).all()):
        # JSON has no NaN or infinity (orjson would write null: a plausible wrong answer). Binary
        # outputs carry them exactly, so the client is told how to get them.
        bad = int(np.argmin(np.isfinite(flat)))
        raise InvalidInput(
            f"output {name!r} holds {flat[bad]} at element {bad}, which JSON cannot carry; "
            "request it with binary_data: true"
        )
    return flat


def encode_infer_response(resp: InferResponse, req: InferRequest) -> tuple[bytes, int | None]:
    """Encode a response; returns (body, JSON header length when the body has a binary section)."""
    default_binary = req.parameters.get("binary_data_output") is True
    flags = {o.name: o.binary for o in req.outputs}
    entries: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for out in resp.outputs:
        flag = flags.get(out.name)
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        if default_binary if flag is None else flag:
            raw = encode_tensor(out.data, out.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(out.data, out.datatype, out.name)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": resp.model_name, "model_version": resp.model_version}
    if resp.id is not None:
        doc["id"] = resp.id
    if resp.parameters:
        doc["parameters"] = resp.parameters
    doc["outputs"] = entries
    header = orjson.dumps(doc, option=_NUMPY_OPTION)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
