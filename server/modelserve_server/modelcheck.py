"""Check a model file before it is served: is it ONNX, can this ONNX Runtime run its opset, are its
external-data files there, and does it have a dynamic first dimension when batching needs one.

Why before loading: ONNX Runtime's own failures are long and late (a missing external-data file is
an error deep inside session creation; a too-new opset names a kernel, not the cause), and the init
container (``modelserve fetch --check``) runs before any session exists. Each check fails with one
line, :class:`ModelInvalid`, which ``fetch`` and ``serve`` print, exit non-zero on, and write to the
container's termination message as ``ModelInvalid: <reason>`` so the operator can show it.

The file is read as protobuf wire format with a small reader (the server image carries no ``onnx``
package); it is memory-mapped and tensor payloads are skipped by length, so checking a multi-GB
model touches only its structure.
"""

from __future__ import annotations

import contextlib
import functools
import json
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import modelserve_contract as contract
from modelserve_server.errors import StartupError
from modelserve_server.parsing import ascii_uint

#: Where Kubernetes reads a container's termination message (``terminationMessagePath``).
TERMINATION_LOG_ENV = "MODELSERVE_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
#: TensorProto.DataType -> V2 datatype name (the names of ``datatypes.ONNX_TO_V2``; a test keeps
#: them equal). Types V2 cannot carry keep ONNX's own name in the signature.
ELEM_TYPE_V2: dict[int, str] = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "BYTES",
    9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64", 16: "BFLOAT16",
}
_NAME_MAX = 128  # a tensor name longer than this is cut in the signature (the check uses the whole)


class ModelInvalid(StartupError):
    """A model file that can never be served; the message is the one-line reason."""


@dataclass(slots=True)
class ModelSummary:
    """What the checks read from the file."""

    ir_version: int = 0
    opsets: dict[str, int] = field(default_factory=dict)
    inputs: list[tuple[str, tuple[int | str | None, ...]]] = field(default_factory=list)
    outputs: list[tuple[str, tuple[int | str | None, ...]]] = field(default_factory=list)
    initializers: set[str] = field(default_factory=set)
    #: TensorProto.DataType of every graph input and output, by name (0: not a tensor / unknown)
    elem_types: dict[str, int] = field(default_factory=dict)
    #: (tensor, location, offset, length) of every initializer stored outside the file
    external: list[tuple[str, str, int, int]] = field(default_factory=list)


class _Malformed(Exception):
    pass


#: A length-delimited field: its (start, end) offsets in the mapped file.
Span = tuple[int, int]


def _fields(buf: mmap.mmap, span: Span) -> Iterator[tuple[int, int | Span]]:
    """(field number, value) of the message at ``span``: varints as int, length-delimited as spans."""
    pos, end = span
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, value
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Malformed("a field runs past the end of the file")
            yield number, (pos, pos + length)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise _Malformed(f"wire type {wire}")
        if pos > end:
            raise _Malformed("a field runs past the end of the file")


def _varint(buf: mmap.mmap, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _span(value: int | Span) -> Span:
    if isinstance(value, int):
        raise _Malformed("expected a message or string")
    return value


def _text(buf: mmap.mmap, value: int | Span) -> str:
    start, end = _span(value)
    return buf[start:end].decode("utf-8", "replace")


def _value_info(
    buf: mmap.mmap, span: Span, summary: ModelSummary
) -> tuple[str, tuple[int | str | None, ...]]:
    name: str = ""
    dims: tuple[int | str | None, ...] = ()
    elem = 0
    for number, value in _fields(buf, span):
        if number == 1:
            name = _text(buf, value)
        elif number == 2:  # TypeProto
            for n2, v2 in _fields(buf, _span(value)):
                if n2 == 1:  # tensor_type
                    for n3, v3 in _fields(buf, _span(v2)):
                        if n3 == 1 and isinstance(v3, int):  # elem_type
                            elem = v3
                        elif n3 == 2:  # shape
                            dims = tuple(_dim(buf, _span(d)) for n4, d in _fields(buf, _span(v3)) if n4 == 1)
    summary.elem_types[name] = elem
    return name, dims


def _dim(buf: mmap.mmap, span: Span) -> int | str | None:
    for number, value in _fields(buf, span):
        if number == 1 and isinstance(value, int):
            return value
        if number == 2:
            return _text(buf, value)
    return None


def _tensor(buf: mmap.mmap, span: Span, summary: ModelSummary) -> None:
    name, location, entries = "", 0, {}
    for number, value in _fields(buf, span):
        if number == 8:
            name = _text(buf, value)
        elif number == 14 and isinstance(value, int):
            location = value
        elif number == 13:
            key = val = ""
            for n2, v2 in _fields(buf, _span(value)):
                if n2 == 1:
                    key = _text(buf, v2)
                elif n2 == 2:
                    val = _text(buf, v2)
            entries[key] = val
    summary.initializers.add(name)
    if location == _EXTERNAL:
        offset = ascii_uint(entries.get("offset", "0") or "0")
        length = ascii_uint(entries.get("length", "0") or "0")
        where = entries.get("location", "")
        offset, length = (-1 if offset is None else offset), (-1 if length is None else length)
        summary.external.append((name, where, offset, length))


def read_summary(path: Path) -> ModelSummary:
    """Parse the structure of ``path``; :class:`ModelInvalid` when it is not an ONNX model."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelInvalid(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if size == 0:
        raise ModelInvalid(f"{path}: not an ONNX model (the file is empty)")
    summary = ModelSummary()
    graph: Span | None = None
    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            for number, value in _fields(buf, (0, size)):
                if number == 1 and isinstance(value, int):
                    summary.ir_version = value
                elif number == 8:
                    domain, version = "", 0
                    for n2, v2 in _fields(buf, _span(value)):
                        if n2 == 1:
                            domain = _text(buf, v2)
                        elif n2 == 2 and isinstance(v2, int):
                            version = v2
                    summary.opsets[domain or "ai.onnx"] = version
                elif number == 7:
                    graph = _span(value)
            if graph is not None:
                for number, value in _fields(buf, graph):
                    if number == 5:
                        _tensor(buf, _span(value), summary)
                    elif number == 11:
                        summary.inputs.append(_value_info(buf, _span(value), summary))
                    elif number == 12:
                        summary.outputs.append(_value_info(buf, _span(value), summary))
    except (_Malformed, ValueError) as exc:
        raise ModelInvalid(f"{path}: not an ONNX model (unreadable as protobuf: {exc})") from None
    except OSError as exc:
        raise ModelInvalid(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if summary.ir_version <= 0 or graph is None or "ai.onnx" not in summary.opsets:
        raise ModelInvalid(f"{path}: not an ONNX model (no IR version, graph or default-domain opset)")
    return summary


@functools.cache
def runtime_max_opset() -> int | None:
    """The newest default-domain opset this ONNX Runtime has kernels for (None: not installed)."""
    try:
        from onnxruntime.capi import _pybind_state
    except ImportError:
        return None
    with contextlib.suppress(Exception):
        defs = _pybind_state.get_all_opkernel_def()
        return max(int(d.version_range[0]) for d in defs if d.domain in ("", "ai.onnx"))
    return None


def check_model(path: Path, *, require_batch_dim: bool = False) -> ModelSummary:
    """Run every check on ``path`` (see the module docstring); raises :class:`ModelInvalid`."""
    summary = read_summary(path)
    opset = summary.opsets["ai.onnx"]
    newest = runtime_max_opset()
    if newest is not None and opset > newest:
        raise ModelInvalid(
            f"{path}: opset {opset} is newer than this ONNX Runtime supports (up to {newest})"
        )
    base = path.parent.resolve()
    for tensor, location, offset, length in summary.external:
        relative = PurePosixPath(location)
        if not location or relative.is_absolute() or ".." in relative.parts:
            raise ModelInvalid(
                f"{path}: tensor {tensor!r} names external data {location!r} outside the model's directory"
            )
        data = base / Path(*relative.parts)
        if not data.is_file():
            raise ModelInvalid(f"{path}: external data file {location!r} of tensor {tensor!r} is missing")
        if offset < 0 or length < 0 or offset + length > data.stat().st_size:
            raise ModelInvalid(
                f"{path}: external data file {location!r} is shorter than tensor {tensor!r} needs"
            )
    if require_batch_dim:
        tensors = [(n, d) for n, d in summary.inputs if n not in summary.initializers] + summary.outputs
        for name, dims in tensors:
            if not dims or isinstance(dims[0], int):
                shape = "[" + ", ".join("?" if not isinstance(d, int) else str(d) for d in dims) + "]"
                raise ModelInvalid(
                    f"{path}: batching needs a dynamic first dimension, but tensor {name!r} has shape {shape}"
                )
    return summary


def signature(summary: ModelSummary, file: str, sha256: str) -> dict[str, Any]:
    """What is served, as the operator shows it in ``status.modelSignature``: V2 datatypes, ``-1``
    for a dynamic dimension (as ``/v2/models/{m}`` reports it); initializers listed as graph inputs
    (constants with a default, not fed by clients) are left out."""

    def tensors(values: list[tuple[str, tuple[int | str | None, ...]]]) -> list[dict[str, Any]]:
        return [
            {
                "name": name[:_NAME_MAX],
                "datatype": ELEM_TYPE_V2.get(summary.elem_types.get(name, 0), "UNKNOWN"),
                "shape": [d if isinstance(d, int) else -1 for d in dims],
            }
            for name, dims in values
        ]

    feeds = [(n, d) for n, d in summary.inputs if n not in summary.initializers]
    return {
        "file": file[:_NAME_MAX],
        "sha256": sha256,
        "opset": summary.opsets.get("ai.onnx", 0),
        "inputs": tensors(feeds),
        "outputs": tensors(summary.outputs),
    }


def _encode(obj: Any) -> str:
    # ASCII only: the kubelet's limit is in bytes, and then characters and bytes are the same.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


def signature_message(models: list[dict[str, Any]], limit: int = contract.TERMINATION_MESSAGE_LIMIT) -> str:
    """``ModelSignature: <JSON>`` of ``models`` (from :func:`signature`), at most ``limit`` bytes.

    Why cut it here: the kubelet keeps only the first ``limit`` bytes of a termination message, and
    JSON cut in the middle is unreadable. So tensors are dropped from the end of the longest list
    (the model then says ``"truncated": true`` and keeps ``inputCount``/``outputCount``, the real
    numbers), and when no tensor is left, whole models (the top level says ``"truncated": true``
    and ``modelCount``). A model with thousands of tensors (a large language model's key-value
    cache inputs) still reports its file, sha256 and opset.
    """
    prefix = f"{contract.MODEL_SIGNATURE}: "
    budget = limit - len(prefix)
    entries = [dict(m) for m in models]
    for entry in entries:
        for key in ("inputs", "outputs"):
            # Cheap first cut: tensors beyond the whole budget can never fit.
            kept, used = [], 0
            for tensor in entry[key]:
                used += len(_encode(tensor)) + 1
                if used > budget:
                    break
                kept.append(tensor)
            if len(kept) < len(entry[key]):
                _mark_cut(entry)
                entry[key] = kept
    body: dict[str, Any] = {"models": entries}
    total = len(models)
    while len(_encode(body)) > budget:
        longest = max(entries, key=lambda e: len(e["inputs"]) + len(e["outputs"]), default=None)
        if longest is not None and longest["inputs"] + longest["outputs"]:
            _mark_cut(longest)
            key = "inputs" if len(longest["inputs"]) >= len(longest["outputs"]) else "outputs"
            longest[key].pop()
        elif entries:
            entries.pop()
            body["truncated"], body["modelCount"] = True, total
        else:
            break
    return prefix + _encode(body)


def _mark_cut(entry: dict[str, Any]) -> None:
    if not entry.get("truncated"):
        entry["truncated"] = True
        entry["inputCount"], entry["outputCount"] = len(entry["inputs"]), len(entry["outputs"])


def write_termination_message(message: str) -> None:
    """Best effort: the one-line reason where Kubernetes reads it (nothing when not writable)."""
    target = os.environ.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG)
    with contextlib.suppress(OSError), open(target, "w", encoding="utf-8") as handle:
        handle.write(message[:4096])
