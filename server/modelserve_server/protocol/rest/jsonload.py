"""Parse a V2 JSON request, landing large numeric tensor ``data`` in numpy without Python floats.

Why: for a [1,3,224,224] FP32 tensor sent as JSON, ``orjson.loads`` builds 150 528 Python floats
(about 7 ms) and numpy then converts them (2 ms more); that is longer than the CNN's own compute and
it runs on the event loop. pysimdjson parses the same document and copies a flat numeric array
straight into a buffer (``as_buffer``) in about 3 ms.

The rules that keep this safe:

* Only ``inputs[i].data`` gets the fast treatment, only when it is a *flat* array and the input's
  datatype is a float or integer type; everything else in the document becomes plain Python values,
  exactly what orjson would have produced.
* A ``data`` array the fast path cannot take (nested, mixed types, booleans, out of int64 range) is
  converted with ``as_list()`` and decoded the ordinary way.
* Any document simdjson refuses (malformed, too deep, invalid UTF-8, numbers it cannot represent) is
  re-parsed by orjson, which then either accepts it or produces the error message. So what is
  accepted never depends on which parser ran, only how fast.
* Small bodies (the MLP case) go to orjson directly: there the difference is microseconds.

Fast-path ``data`` values are 1-D ``float64``/``int64``/``uint64`` arrays; :func:`.codec.decode_json_data`
converts them to the tensor's dtype with range checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from modelserve_server.errors import InvalidInput

try:  # optional at import time; a dependency of the "server" extra
    import simdjson
except ImportError:  # pragma: no cover - exercised only on installs without pysimdjson
    simdjson = None  # type: ignore[assignment]

#: Bodies smaller than this are parsed by orjson alone.
FAST_PATH_MIN_BYTES = 4096

#: V2 datatype -> pysimdjson ``as_buffer`` element kind (double, int64, uint64).
_BUFFER_KIND: dict[str, str] = {
    **dict.fromkeys(("FP16", "FP32", "FP64"), "d"),
    **dict.fromkeys(("INT8", "INT16", "INT32", "INT64"), "i"),
    **dict.fromkeys(("UINT8", "UINT16", "UINT32", "UINT64"), "u"),
}
_BUFFER_DTYPE: dict[str, np.dtype[Any]] = {"d": np.dtype("<f8"), "i": np.dtype("<i8"), "u": np.dtype("<u8")}


def orjson_load(data: bytes | memoryview) -> Any:
    """``orjson.loads`` with its error turned into a 400."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON in request body: {exc}") from None


def load_request(data: bytes | memoryview, *, fast: bool = True) -> Any:
    """Parse a request document (see the module docstring); ``fast=False`` forces plain orjson."""
    if not fast or simdjson is None or len(data) < FAST_PATH_MIN_BYTES:
        return orjson_load(data)
    try:
        root = simdjson.Parser().parse(bytes(data))
    except (ValueError, RuntimeError, UnicodeDecodeError):
        return orjson_load(data)
    if not isinstance(root, simdjson.Object):
        return orjson_load(data)
    keys = list(root.keys())
    if len(keys) != len(set(keys)):  # duplicate keys: let orjson decide (the last one wins there)
        return orjson_load(data)
    doc: dict[str, Any] = {}
    for key in keys:
        value = root[key]
        if key == "inputs" and isinstance(value, simdjson.Array):
            doc[key] = [_input(entry) for entry in value]
        else:
            doc[key] = _plain(value)
    return doc


def _plain(value: Any) -> Any:
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _input(entry: Any) -> Any:
    if not isinstance(entry, simdjson.Object):
        return _plain(entry)
    keys = list(entry.keys())
    if len(keys) != len(set(keys)):
        return entry.as_dict()  # duplicate keys: as_dict() keeps the last, like orjson
    datatype = entry.get("datatype")
    out: dict[str, Any] = {}
    for key in keys:
        value = entry[key]
        if key == "data" and isinstance(value, simdjson.Array) and isinstance(datatype, str):
            out[key] = _numeric(value, datatype)
        else:
            out[key] = _plain(value)
    return out


def _numeric(array: Any, datatype: str) -> Any:
    """A flat numeric array as a 1-D numpy array, or the plain list when it is anything else."""
    if len(array) and isinstance(array[0], simdjson.Array | simdjson.Object):
        return array.as_list()  # nested: the ordinary path checks its structure
    kind = _BUFFER_KIND.get(datatype)
    if kind is None:
        return array.as_list()
    try:
        return np.frombuffer(array.as_buffer(of_type=kind), dtype=_BUFFER_DTYPE[kind])
    except (TypeError, ValueError):  # mixed types, booleans, out of range: decode it the ordinary way
        return array.as_list()
