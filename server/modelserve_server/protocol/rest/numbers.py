"""JSON tensor ``data`` -> numpy, exactly: no silent coercion, bounded memory, the bad element named.

Why strict: ``1.7`` sent as INT64 used to become ``1`` and ``"0.5"`` or ``true`` were accepted as FP32,
so a client got a plausible wrong answer. The rules: only JSON integers are valid for integer
datatypes (and must fit the type), JSON numbers for floating-point ones (a value that overflows the
type is refused, never turned into infinity), and only ``true``/``false`` for BOOL. A refusal names
the element by its index in row-major order.

Why bounded: a large body's ``data`` arrives as a :class:`~.jsonload.DataSpan` (its bytes, unparsed).
A numeric span is decoded without a Python object per element:

1. its bracket-and-comma skeleton must equal that of the declared shape (flat, or nested exactly
   like the shape), which also proves the element count;
2. brackets become spaces (one copy of the span) and the number grammar is checked in chunks with
   numpy (a few temporaries of :data:`_CHUNK` bytes), integers refused where integers are required;
3. ``np.fromstring`` parses the text straight into the target dtype (it releases the GIL); float data
   of at least :data:`_DENSE_BYTES` bytes per element goes to simdjson instead (its 16-byte tape
   slot per number is then at most twice the text, and it is 4-5x faster; each thread keeps one
   parser for texts up to :data:`_REUSE_BYTES`, so its buffers are not allocated per request).

A flat span (the common case: tritonclient sends flat ``data``) skips the skeleton copy of step 1: its
skeleton is ``[`` + commas + ``]`` by construction, so counting commas proves the element count.

So one request peaks at about its body, one copy of the span and the decoded array (plus an int64
staging array for integer types narrower than 64 bits): the README states the bound and a test
holds it on a large body of short numbers, the worst case.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np
import orjson
import simdjson

from modelserve_server.datatypes import V2_TO_NUMPY
from modelserve_server.errors import InvalidInput
from modelserve_server.protocol.rest.jsonload import NUMERIC_RUN, DataSpan, balanced_end
from modelserve_server.protocol.tensor import check_range, element_count

#: Bytes per element from which float data is parsed by simdjson (see _dense_floats).
_DENSE_BYTES = 8
#: Largest text a thread's kept simdjson parser handles (see _parser); larger ones get a fresh parser.
_REUSE_BYTES = 8 << 20
_local = threading.local()
_CHUNK = 1 << 18  # grammar checks hold ~15 temporaries of this size
_BRACKETS_TO_SPACE = bytes.maketrans(b"[]", b"  ")
_NUMBER_TEXT = b"0123456789eE.+- \t\n\r"
#: Integer datatypes: (dtype numpy parses the text into, longest digit run that cannot overflow it).
_INT_PARSE: dict[str, tuple[np.dtype[Any], int]] = {
    **{dt: (np.dtype("<i4"), 9) for dt in ("INT8", "INT16", "UINT8", "UINT16")},
    **{dt: (np.dtype("<i8"), 18) for dt in ("INT32", "UINT32", "INT64")},
    "UINT64": (np.dtype("<u8"), 19),
}


def _kind(datatype: str) -> str:
    if datatype == "BOOL":
        return "b"
    return V2_TO_NUMPY[datatype].kind  # "i", "u" or "f"


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value!r}"[:80]
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"[:80]


def _wants(datatype: str) -> str:
    kind = _kind(datatype)
    if kind == "b":
        return "BOOL takes true or false only"
    if kind == "f":
        return f"{datatype} takes JSON numbers only"
    return f"{datatype} takes JSON integers only"


def check_elements(data: object, datatype: str, max_depth: int, tensor: str) -> None:
    """Check the type of every element of (possibly nested) list ``data`` (see the module docstring)."""
    kind = _kind(datatype)
    index = 0
    stack: list[tuple[Any, int]] = [(iter(data if isinstance(data, list) else [data]), 1)]
    while stack:
        items, depth = stack[-1]
        try:
            item = next(items)
        except StopIteration:
            stack.pop()
            continue
        if isinstance(item, list):
            if depth + 1 > max_depth:
                raise InvalidInput(f"input {tensor!r}: data nests deeper than its shape")
            stack.append((iter(item), depth + 1))
            continue
        kind_ok = (
            type(item) is bool if kind == "b"
            else type(item) is int if kind in "iu"
            else type(item) in (int, float)
        )  # fmt: skip
        if not kind_ok:
            raise InvalidInput(
                f"input {tensor!r}: element {index} is {_describe(item)}, not valid: {_wants(datatype)}"
            )
        index += 1


def decode_span(span: DataSpan, datatype: str, shape: tuple[int, ...], tensor: str) -> np.ndarray:
    """A tensor from a ``data`` span of a large body (see the module docstring)."""
    count = element_count(shape)
    if datatype == "BOOL":
        digit = _first_digit(span)
        if digit is not None:  # numbers for BOOL: refused before any value is built
            index = span.buf.count(b",", span.start, digit)
            raise InvalidInput(
                f"input {tensor!r}: element {index} is a number, not valid: {_wants(datatype)}"
            )
        return _from_list(span.parse(), datatype, shape, tensor)
    if not span.numeric:
        first = _first_not_number(span)
        index = span.buf.count(b",", span.start, first)
        raise InvalidInput(f"input {tensor!r}: element {index} is not a number: {_wants(datatype)}")
    text = span.buf[span.start : span.end]
    if text.find(b"[", 1) < 0 and text.find(b"]") == len(text) - 1:
        # Flat: its skeleton is '[' + commas + ']', always regular, so counting commas is enough.
        commas = text.count(b",")
        dims = [0 if commas == 0 and count == 0 else commas + 1]
    else:
        skeleton = text.translate(None, _NUMBER_TEXT)
        nested = _nested_dims(skeleton, empty=count == 0)
        if nested is None or skeleton != _skeleton(tuple(nested)):  # the expected one is freed at once
            raise InvalidInput(f"input {tensor!r}: data is not a regular (rectangular) array")
        dims = nested
        del skeleton
    if len(dims) > max(1, len(shape)):
        raise InvalidInput(f"input {tensor!r}: data nests deeper than its shape {list(shape)}")
    if element_count(dims) != count:
        raise InvalidInput(
            f"input {tensor!r}: {element_count(dims)} elements of data, but shape {list(shape)} needs {count}"
        )
    # peak: the body, this span's text and its flattened copy, then the decoded array
    kind = _kind(datatype)
    if kind == "f" and len(text) >= _DENSE_BYTES * count:
        array = _dense_floats(text, datatype, count, shape, tensor)
        if array is not None:
            return array
    flat = text.translate(_BRACKETS_TO_SPACE)
    del text
    _check_grammar(flat, kind, datatype, tensor)
    dtype = V2_TO_NUMPY[datatype]
    if kind == "f":
        array = _sized(_fromstring(flat, dtype, tensor, datatype), count, shape, tensor)
        if array.size and not bool(np.isfinite(array).all()):
            bad = int(np.argmin(np.isfinite(array)))
            raise InvalidInput(f"input {tensor!r}: element {bad} is outside the range of {datatype}")
        return array.reshape(shape)
    parse_dtype, max_digits = _INT_PARSE[datatype]
    long_run = _digit_run_at_least(flat, max_digits + 1)
    if long_run is not None:
        if max_digits < 18:
            index = flat.count(b",", 0, long_run)
            raise InvalidInput(f"input {tensor!r}: element {index} is outside the range of {datatype}")
        # 19-20 digit integers: numpy's parser would clamp them; Python ints are exact (and the
        # digits make each value's text as long as its Python int, so the memory bound holds).
        return _from_list(orjson.loads(span.buf[span.start : span.end]), datatype, shape, tensor)
    array = _sized(_fromstring(flat, parse_dtype, tensor, datatype), count, shape, tensor)
    if (dtype.kind == "u" and parse_dtype.kind == "i") or dtype != parse_dtype:
        check_range(array, datatype, tensor)
    if datatype == "UINT64" and flat.find(b"-") >= 0:
        index = flat.count(b",", 0, flat.find(b"-"))
        raise InvalidInput(f"input {tensor!r}: element {index} is outside the range of {datatype}")
    return array.astype(dtype, copy=False).reshape(shape)


def decode_list(data: object, datatype: str, shape: tuple[int, ...], tensor: str) -> np.ndarray:
    """A tensor from plain JSON values (a small body, or a BOOL span), strictly typed."""
    return _from_list(data, datatype, shape, tensor)


def _from_list(data: object, datatype: str, shape: tuple[int, ...], tensor: str) -> np.ndarray:
    count = element_count(shape)
    max_depth = max(1, len(shape))
    if not isinstance(data, list):
        if isinstance(data, bool | int | float):
            data = [data]
        else:
            raise InvalidInput(f"input {tensor!r}: 'data' must be a list of numbers")
    check_elements(data, datatype, max_depth, tensor)
    dtype = V2_TO_NUMPY[datatype]
    try:
        if dtype.kind in "iu":
            wide = np.array(data, dtype=np.uint64 if datatype == "UINT64" else np.int64)
            check_range(wide, datatype, tensor)
            array = wide.astype(dtype)
        else:
            with np.errstate(over="raise"):  # 1e300 as FP16 is a client error, not a silent inf
                array = np.array(data, dtype=dtype)
    except InvalidInput:
        raise
    except (ValueError, TypeError, OverflowError, FloatingPointError) as exc:
        raise InvalidInput(f"input {tensor!r}: data is not valid {datatype}: {exc}") from None
    if array.ndim > max_depth:
        raise InvalidInput(f"input {tensor!r}: data nests deeper than its shape {list(shape)}")
    if array.size != count:
        raise InvalidInput(
            f"input {tensor!r}: {array.size} elements of data, but shape {list(shape)} needs {count}"
        )
    return array.reshape(shape)


def _skeleton(dims: tuple[int, ...]) -> bytes:
    """The brackets and commas of a regular JSON array nested as ``dims``."""
    if not dims:
        return b""
    inner = b"[" + b"," * max(0, dims[-1] - 1) + b"]"
    for dim in reversed(dims[:-1]):
        inner = b"[" + b",".join([inner] * dim) + b"]"
    return inner


def _nested_dims(skeleton: bytes, *, empty: bool) -> list[int] | None:
    """The dims of a regular array from its skeleton, following its first element at each level.

    An innermost ``[]`` counts one element unless the tensor is ``empty``; the caller compares the
    skeleton of the result with the whole skeleton, which proves the array regular.
    """
    dims: list[int] = []
    start, end = 0, len(skeleton)
    while True:
        if end - start < 2 or skeleton[start : start + 1] != b"[" or skeleton[end - 1 : end] != b"]":
            return None
        if skeleton[start + 1 : start + 2] == b"[":
            child_end = balanced_end(skeleton, start + 1, end - 1)
            if child_end is None:
                return None
            child = child_end - (start + 1)
            inner = end - start - 2
            if (inner + 1) % (child + 1):
                return None
            dims.append((inner + 1) // (child + 1))
            start, end = start + 1, child_end
            continue
        inner_text = skeleton[start + 1 : end - 1]
        dims.append(0 if not inner_text and empty else inner_text.count(b",") + 1)
        return dims


def _sized(array: np.ndarray, count: int, shape: tuple[int, ...], tensor: str) -> np.ndarray:
    if array.size != count:
        raise InvalidInput(
            f"input {tensor!r}: {array.size} elements of data, but shape {list(shape)} needs {count}"
        )
    return array


def _dense_floats(
    text: bytes, datatype: str, count: int, shape: tuple[int, ...], tensor: str
) -> np.ndarray | None:
    """Long floats (8+ bytes each) through simdjson: 4-5x faster than ``np.fromstring``, and its tape
    (16 bytes per number) then costs at most twice the text. None when simdjson refuses the text
    (the caller's grammar check then names the element)."""
    try:
        parser = _parser(len(text))
        parsed: Any = parser.parse(text)
        values = np.frombuffer(parsed.as_buffer(of_type="d"), dtype="<f8")
    except (ValueError, TypeError, RuntimeError):
        return None
    del parsed, parser  # no simdjson object outlives the parse: the thread's parser can be reused
    values = _sized(values, count, shape, tensor)
    with np.errstate(over="ignore"):
        array = values.astype(V2_TO_NUMPY[datatype])
    if array.size and not bool(np.isfinite(array).all()):
        bad = int(np.argmin(np.isfinite(array)))
        raise InvalidInput(f"input {tensor!r}: element {bad} is outside the range of {datatype}")
    return array.reshape(shape)


def _parser(size: int) -> Any:
    """This thread's simdjson parser for texts up to :data:`_REUSE_BYTES`, a fresh one for larger ones.

    Why: allocating a parser's buffers costs as much as a third of the parse of a 3 MB body; a kept
    parser holds buffers for its largest text, so only texts up to the cap reuse it (the memory a
    thread keeps stays bounded) and a larger body gets its own, freed with it.
    """
    if size > _REUSE_BYTES:
        return simdjson.Parser()
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    return parser


def _first_digit(span: DataSpan) -> int | None:
    found = (span.buf.find(bytes([d]), span.start, span.end) for d in b"0123456789")
    positions = [p for p in found if p >= 0]
    return min(positions) if positions else None


def _first_not_number(span: DataSpan) -> int:
    run = NUMERIC_RUN.match(span.buf, span.start)
    return min(run.end(), span.end) if run else span.start


def _fromstring(flat: bytes, dtype: np.dtype[Any], tensor: str, datatype: str) -> np.ndarray:
    if not flat.strip():
        return np.empty(0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return np.fromstring(flat, dtype=dtype, sep=",")
        except (ValueError, DeprecationWarning) as exc:
            raise InvalidInput(f"input {tensor!r}: data is not valid {datatype}: {exc}") from None


def _check_grammar(flat: bytes, kind: str, datatype: str, tensor: str) -> None:
    """JSON's number grammar on comma-separated text, in chunks; integers only for integer kinds."""
    size = len(flat)
    for start in range(0, size, _CHUNK):
        lo = max(0, start - 2)
        a = np.frombuffer(flat, dtype=np.uint8, count=min(size, start + _CHUNK + 1) - lo, offset=lo)
        bad = _bad_positions(a, kind)
        bad[: start - lo] = False  # context bytes belong to the previous chunk
        if start + _CHUNK < size:
            bad[-1] = False  # the lookahead byte belongs to the next chunk
        if bad.any():
            pos = lo + int(np.argmax(bad))
            index = flat.count(b",", 0, pos)
            what = "not an integer" if kind in "iu" and flat[pos : pos + 1] in (b".", b"e", b"E") else (
                "not a valid JSON number"
            )
            raise InvalidInput(f"input {tensor!r}: element {index} is {what}: {_wants(datatype)}")


def _bad_positions(a: np.ndarray, kind: str) -> np.ndarray:
    n = a.size
    digit = (a >= 48) & (a <= 57)
    sep = (a == 44) | (a == 32) | (a == 9) | (a == 10) | (a == 13)
    e = (a == 101) | (a == 69)
    sign = (a == 43) | (a == 45)
    dot = a == 46

    def prev(x: np.ndarray, fill: bool = True) -> np.ndarray:
        out = np.empty(n, dtype=bool)
        out[0] = fill
        out[1:] = x[:-1]
        return out

    def nxt(x: np.ndarray, fill: bool = False) -> np.ndarray:
        out = np.empty(n, dtype=bool)
        out[-1] = fill
        out[:-1] = x[1:]
        return out

    prev_digit, next_digit, prev_e, prev_sep = prev(digit, False), nxt(digit), prev(e, False), prev(sep)
    bad = (a == 43) & ~prev_e  # '+' only in an exponent
    bad |= (a == 45) & ~(prev_e | prev_sep)  # '-' starts a number or an exponent
    bad |= sign & ~next_digit
    bad |= dot & ~(prev_digit & next_digit)
    bad |= e & ~(prev_digit & (next_digit | nxt(sign)))
    minus_start = prev(a == 45, False) & prev(prev_sep)
    bad |= (a == 48) & next_digit & (prev_sep | minus_start)  # leading zeros
    if kind in "iu":
        bad |= dot | e
    result: np.ndarray = bad
    return result


def _digit_run_at_least(flat: bytes, length: int) -> int | None:
    """The position of the first run of ``length`` or more digits, or None."""
    size = len(flat)
    for start in range(0, size, _CHUNK):
        stop = min(size, start + _CHUNK + length)
        a = np.frombuffer(flat, dtype=np.uint8, count=stop - start, offset=start)
        digit = (a >= 48) & (a <= 57)
        if digit.size < length:
            return None
        run = digit[: digit.size - length + 1].copy()
        for k in range(1, length):
            run &= digit[k : digit.size - length + 1 + k]
        if run.any():
            return start + int(np.argmax(run))
    return None
