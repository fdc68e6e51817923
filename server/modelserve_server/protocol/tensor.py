"""The one tensor module both transports share: shape rules and raw tensor bytes <-> numpy arrays.

Shape rules (rank, non-negative integer dims, element count) are :func:`check_shape`; REST and gRPC
call it on every declared shape, so a shape HTTP refuses is refused over gRPC with the same message.

Raw bytes follow Triton's binary tensor data extension.

Layout (also gRPC's raw contents): little-endian, row-major, unpadded; BOOL one byte per element;
BYTES elements each prefixed by their length as a 4-byte little-endian unsigned integer.

Why these rules are a module: every size is checked with Python integers *before* anything is
allocated, so a request declaring shape ``[10**12, 64]`` with 16 bytes of data is a cheap 400, and
fixed-width tensors are decoded with ``np.frombuffer`` (a zero-copy view of the request body) rather
than a per-element loop. BYTES tensors are the one place with a loop, because each element has its
own length.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from modelserve_server.datatypes import BYTES, V2_TO_NUMPY
from modelserve_server.errors import InvalidInput

_LEN = struct.Struct("<I")
#: Upper bound on the rank a request may declare (numpy's own limit is 64).
MAX_RANK = 32
#: Upper bound on the elements one tensor may declare, whatever its data says (2**40).
MAX_ELEMENTS = 1 << 40
#: Upper bound on the elements of one BYTES tensor: each becomes a Python ``bytes`` object.
MAX_BYTES_ELEMENTS = 1 << 20


def check_shape(shape: object, tensor: str, datatype: str | None = None) -> tuple[int, ...]:
    """Validate a declared shape (a sequence of non-negative ints) and return it as a tuple.

    ``bool`` is refused although Python counts it as an int; ranks above :data:`MAX_RANK` and element
    counts above :data:`MAX_ELEMENTS` are refused before anything is computed from them.
    """
    if not isinstance(shape, Sequence) or isinstance(shape, str | bytes):
        raise InvalidInput(f"input {tensor!r}: 'shape' must be a list of integers")
    if len(shape) > MAX_RANK:
        raise InvalidInput(f"input {tensor!r}: rank {len(shape)} exceeds the limit of {MAX_RANK}")
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            why = " (it has a negative dimension)" if isinstance(dim, int) and dim < 0 else ""
            raise InvalidInput(
                f"input {tensor!r}: shape {list(shape)!r} must hold non-negative integers{why}"
            )
    dims = tuple(shape)
    count = math.prod(dims)
    if count > MAX_ELEMENTS:
        size = V2_TO_NUMPY[datatype].itemsize if datatype in V2_TO_NUMPY and datatype != BYTES else 0
        needs = f" ({datatype} data of that shape needs {count * size} bytes)" if size else ""
        raise InvalidInput(
            f"input {tensor!r}: shape {list(dims)} declares {count} elements{needs}, "
            f"over the limit of {MAX_ELEMENTS}"
        )
    return dims


def check_bytes_count(count: int, tensor: str) -> None:
    """Refuse a BYTES tensor of more than :data:`MAX_BYTES_ELEMENTS` elements before decoding it."""
    if count > MAX_BYTES_ELEMENTS:
        raise InvalidInput(
            f"input {tensor!r}: {count} BYTES elements is over the limit of {MAX_BYTES_ELEMENTS}"
        )


def check_range(values: np.ndarray, datatype: str, tensor: str) -> None:
    """Refuse integer values outside ``datatype``'s range (``values``: a wide int64/uint64 array)."""
    dtype = V2_TO_NUMPY[datatype]
    if dtype.kind not in "iu" or not values.size:
        return
    info = np.iinfo(dtype.str)
    low, high = int(values.min()), int(values.max())
    if low < info.min or high > info.max:
        bad = int(np.argmax((values < info.min) | (values > info.max))) if values.dtype.kind in "iu" else 0
        raise InvalidInput(f"input {tensor!r}: element {bad} is outside the range of {datatype}")


def element_count(shape: Sequence[int]) -> int:
    """Number of elements of a validated shape (Python ints: no overflow)."""
    return math.prod(shape)


def decode_tensor(buffer: memoryview, datatype: str, shape: tuple[int, ...], tensor: str) -> np.ndarray:
    """Decode exactly ``buffer`` as a tensor of ``datatype`` and ``shape``.

    The one decoder of raw tensor bytes for both transports: Triton's binary extension over HTTP
    and ``raw_input_contents`` over gRPC share this layout (little-endian fixed-width values; BYTES
    as 4-byte-length-prefixed elements). Fixed-width types: a read-only zero-copy view when
    ``buffer`` is aligned for the dtype, else one copy; BOOL bytes other than 0 are True. BYTES: an
    ``object`` array of ``bytes``. :class:`InvalidInput` when sizes disagree.
    """
    count = element_count(shape)
    if datatype == BYTES:
        return decode_bytes_elements(buffer, count, tensor).reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidInput(
            f"input {tensor!r}: binary data has {len(buffer)} bytes, "
            f"but {datatype} shape {list(shape)} needs {expected}"
        )
    if datatype == "BOOL":  # a bool view of a byte other than 0/1 is not a valid numpy bool
        flags: np.ndarray = np.frombuffer(buffer, dtype=np.uint8, count=count) != 0
        return flags.reshape(shape)
    array = np.frombuffer(buffer, dtype=dtype, count=count)
    if not array.flags.aligned:
        array = array.copy()
    return array.reshape(shape)


def decode_bytes_elements(buffer: memoryview, count: int, tensor: str) -> np.ndarray:
    """Parse ``count`` length-prefixed elements that must fill ``buffer`` exactly."""
    size = len(buffer)
    # Each element needs at least its 4-byte length: refuse absurd counts before allocating.
    if count * 4 > size:
        raise InvalidInput(
            f"input {tensor!r}: {size} bytes of BYTES data cannot hold {count} elements "
            "(each needs a 4-byte length prefix)"
        )
    check_bytes_count(count, tensor)
    out = np.empty(count, dtype=object)
    offset = 0
    raw = bytes(buffer)
    for i in range(count):
        if offset + 4 > size:
            raise InvalidInput(f"input {tensor!r}: BYTES data truncated inside element {i}'s length prefix")
        (length,) = _LEN.unpack_from(raw, offset)
        offset += 4
        end = offset + length
        if end > size:
            raise InvalidInput(
                f"input {tensor!r}: BYTES element {i} claims {length} bytes, which runs past the data "
                f"({size - offset} remain)"
            )
        out[i] = raw[offset:end]
        offset = end
    if offset != size:
        raise InvalidInput(f"input {tensor!r}: {size - offset} bytes after its {count} BYTES elements")
    return out


def encode_tensor(array: np.ndarray, datatype: str) -> bytes | memoryview:
    """The raw bytes of an output tensor (a zero-copy view for contiguous fixed-width arrays)."""
    if datatype == BYTES:
        return encode_bytes_elements(array)
    dtype = V2_TO_NUMPY[datatype]
    if array.dtype != dtype:
        array = array.astype(dtype)
    array = np.ascontiguousarray(array)
    return array.data.cast("B") if array.size else b""


def encode_bytes_elements(array: np.ndarray) -> bytes:
    """Length-prefix every element of an ``object`` array of ``bytes`` (or ``str``) and join them."""
    parts: list[bytes] = []
    for item in array.ravel():
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)
