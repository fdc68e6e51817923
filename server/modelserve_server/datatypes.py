"""The V2 (Open Inference Protocol) datatype table: V2 name <-> numpy dtype <-> ONNX tensor type.

Kept in one module because three layers need the same facts: the codecs (REST JSON/binary and gRPC
raw contents) decode bytes into numpy arrays, the runtime maps ONNX Runtime's ``tensor(float)``
strings to V2 names for model metadata, and validation compares the two. ``BYTES`` tensors are numpy
``object`` arrays whose elements are ``bytes``; every other datatype is a fixed-width numpy dtype in
little-endian byte order (the wire order of both the binary extension and gRPC raw contents).
"""

from __future__ import annotations

from typing import Final

import numpy as np

BYTES: Final = "BYTES"

#: V2 datatype name -> numpy dtype (little-endian). BYTES maps to ``object`` (elements are ``bytes``).
V2_TO_NUMPY: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    BYTES: np.dtype(np.object_),
}

#: numpy dtype ``kind+itemsize`` key -> V2 name, for arrays coming back from ONNX Runtime.
_NUMPY_KEY_TO_V2: Final[dict[tuple[str, int], str]] = {
    (dt.kind, dt.itemsize): name for name, dt in V2_TO_NUMPY.items() if name != BYTES
}

#: ONNX Runtime type strings (``NodeArg.type``) -> V2 name. Types ONNX has but V2 lacks (bfloat16,
#: complex, float8) are absent: a model using them is refused at load with a clear message.
ONNX_TO_V2: Final[dict[str, str]] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": BYTES,
}

#: V2 name -> Triton model-config ``data_type`` (``TYPE_FP32`` ...), for ``/v2/models/{m}/config``.
V2_TO_TRITON_CONFIG: Final[dict[str, str]] = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    BYTES: "TYPE_STRING",
}


def numpy_dtype(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype for a V2 datatype name; ``KeyError`` for an unknown name (callers: a 400)."""
    return V2_TO_NUMPY[datatype]


def v2_datatype(array: np.ndarray) -> str:
    """The V2 datatype name of a numpy array (``object``/``str`` arrays are ``BYTES``)."""
    dt = array.dtype
    if dt.kind in ("O", "U", "S"):
        return BYTES
    try:
        return _NUMPY_KEY_TO_V2[(dt.kind, dt.itemsize)]
    except KeyError:
        raise TypeError(f"numpy dtype {dt} has no V2 datatype") from None


def element_size(datatype: str) -> int:
    """Bytes per element on the wire for fixed-width types; 0 for ``BYTES`` (length-prefixed)."""
    return 0 if datatype == BYTES else V2_TO_NUMPY[datatype].itemsize
