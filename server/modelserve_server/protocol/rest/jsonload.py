"""Parse a V2 JSON request with bounded memory: tensor ``data`` becomes a lazy span, never Python numbers.

Why: a general JSON parser builds one object per element (orjson: a Python float, 24-32 bytes; simdjson:
a 16-byte tape slot plus 4 bytes per structural character), so a 64 MiB body of short numbers
(``1,1,1,...``) peaked at 18x its size. Here the document's structure (small) is parsed in Python, and
the value of every ``"data"`` key that is an array is *not* parsed: it becomes a :class:`DataSpan`, the
byte range of the array in the body. :mod:`.numbers` decodes a span straight into numpy once the
input's datatype and shape are known, with every element checked (JSON grammar, integer or not,
range) and a bad element named by its index.

The rules that keep this exact:

* The structure outside ``data`` follows the JSON grammar strictly (strings by orjson, numbers by
  the JSON number pattern, literals, nesting at most :data:`MAX_NESTING` levels); a mistake is a 400
  that says "malformed JSON" and where.
* A ``data`` array whose characters are all number characters, commas, brackets and whitespace and
  whose brackets balance is a *numeric* span; anything else (strings, booleans) is a *generic* span,
  parsed element by element only if the datatype needs it (BYTES, BOOL).
* Duplicate keys: the last one wins, as with orjson.
* Small bodies (below :data:`FAST_PATH_MIN_BYTES`) go to orjson directly; their ``data`` are plain
  lists, checked by the same element rules in :mod:`.numbers`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from modelserve_server.errors import InvalidInput

#: Bodies smaller than this are parsed by orjson alone.
FAST_PATH_MIN_BYTES = 4096
#: Deepest nesting of objects and arrays outside tensor data (the codec allows less: MAX_JSON_DEPTH).
MAX_NESTING = 64

_WS = re.compile(rb"[ \t\n\r]*")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_STRING = re.compile(rb'"(?:[^"\\\x00-\x1f]|\\.)*"')
NUMERIC_RUN = re.compile(rb"[0-9eE.+\-,\[\] \t\n\r]*")
_FLAT = b"0123456789eE.+-,[] \t\n\r"  # NUMERIC_RUN's characters, for bytes.translate
_SKIP = re.compile(rb'"(?:[^"\\\x00-\x1f]|\\.)*"|"|[\[\]]')
_LITERALS = {b"true": True, b"false": False, b"null": None}


@dataclass(slots=True)
class DataSpan:
    """The unparsed ``data`` array at ``buf[start:end]``; ``numeric`` when it can only hold numbers."""

    buf: bytes
    start: int
    end: int
    numeric: bool

    def parse(self, max_elements: int | None = None) -> list[Any]:
        """The array as Python values (for BYTES and BOOL data), refusing more than ``max_elements``."""
        scanner = _Scanner(self.buf)
        value, _ = scanner.array(self.start, 1, max_elements)
        return value

    def __len__(self) -> int:
        return self.end - self.start


def orjson_load(data: bytes | memoryview) -> Any:
    """``orjson.loads`` with its error turned into a 400."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON in request body: {exc}") from None


def load_request(data: bytes | memoryview, *, fast: bool = True) -> Any:
    """Parse a request document (see the module docstring); ``fast=False`` forces plain orjson."""
    if not fast or len(data) < FAST_PATH_MIN_BYTES:
        return orjson_load(data)
    buf = data if isinstance(data, bytes) else bytes(data)
    scanner = _Scanner(buf)
    value, pos = scanner.value(0, 0, in_data=False)
    pos = scanner.ws(pos)
    if pos != len(buf):
        scanner.fail(pos, "unexpected data after the document")
    return value


class _Scanner:
    """A strict recursive-descent JSON parser over bytes that leaves ``data`` arrays as spans."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf

    def fail(self, pos: int, what: str) -> None:
        raise InvalidInput(f"malformed JSON in request body: {what} at byte {pos}")

    def ws(self, pos: int) -> int:
        match = _WS.match(self.buf, pos)
        return match.end() if match else pos

    def value(self, pos: int, depth: int, *, in_data: bool) -> tuple[Any, int]:
        buf = self.buf
        pos = self.ws(pos)
        if pos >= len(buf):
            self.fail(pos, "unexpected end of the document")
        char = buf[pos]
        if char == 0x7B:  # {
            return self.object(pos, depth + 1)
        if char == 0x5B:  # [
            if in_data:
                return self.data(pos)
            return self.array(pos, depth + 1, None)
        if char == 0x22:  # "
            match = _STRING.match(buf, pos)
            if match is None:
                self.fail(pos, "unterminated or invalid string")
            assert match is not None
            try:
                return orjson.loads(match.group()), match.end()
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"malformed JSON in request body: {exc} at byte {pos}") from None
        number = _NUMBER.match(buf, pos)
        if number is not None:
            text = number.group()
            result: Any = float(text) if any(c in text for c in b".eE") else int(text)
            return result, number.end()
        for literal, result in _LITERALS.items():
            if buf.startswith(literal, pos):
                return result, pos + len(literal)
        self.fail(pos, "unexpected character")
        raise AssertionError  # unreachable: fail() raises

    def object(self, pos: int, depth: int) -> tuple[dict[str, Any], int]:
        if depth > MAX_NESTING:
            self.fail(pos, f"nested deeper than {MAX_NESTING} levels")
        buf = self.buf
        out: dict[str, Any] = {}
        pos = self.ws(pos + 1)
        if buf[pos : pos + 1] == b"}":
            return out, pos + 1
        while True:
            pos = self.ws(pos)
            if buf[pos : pos + 1] != b'"':
                self.fail(pos, "expected a string key")
            key, pos = self.value(pos, depth, in_data=False)
            pos = self.ws(pos)
            if buf[pos : pos + 1] != b":":
                self.fail(pos, "expected ':'")
            out[key], pos = self.value(pos + 1, depth, in_data=key == "data")
            pos = self.ws(pos)
            sep = buf[pos : pos + 1]
            if sep == b"}":
                return out, pos + 1
            if sep != b",":
                self.fail(pos, "expected ',' or '}'")
            pos += 1

    def array(self, pos: int, depth: int, max_elements: int | None) -> tuple[list[Any], int]:
        if depth > MAX_NESTING:
            self.fail(pos, f"nested deeper than {MAX_NESTING} levels")
        buf = self.buf
        out: list[Any] = []
        pos = self.ws(pos + 1)
        if buf[pos : pos + 1] == b"]":
            return out, pos + 1
        while True:
            item, pos = self.value(pos, depth, in_data=False)
            out.append(item)
            if max_elements is not None and len(out) > max_elements:
                raise InvalidInput(f"data holds more than {max_elements} elements, over the limit")
            pos = self.ws(pos)
            sep = buf[pos : pos + 1]
            if sep == b"]":
                return out, pos + 1
            if sep != b",":
                self.fail(pos, "expected ',' or ']'")
            pos += 1

    def data(self, pos: int) -> tuple[DataSpan, int]:
        """A tensor's ``data`` array as a span: numeric when it balances within a run of number text."""
        buf = self.buf
        close = buf.find(b"]", pos + 1)
        flat = close > 0 and buf.find(b"[", pos + 1, close) < 0
        if flat and not buf[pos : close + 1].translate(None, _FLAT):
            # Flat and all number text up to its first ']': the common case, found by memchr and one
            # C-speed translate (a regex over the number run costs 4x that); the same span as below.
            return DataSpan(buf, pos, close + 1, numeric=True), close + 1
        run = NUMERIC_RUN.match(buf, pos)
        run_end = run.end() if run else pos
        end = balanced_end(buf, pos, run_end)
        if end is not None:
            return DataSpan(buf, pos, end, numeric=True), end
        # Strings or literals inside: only find its end now (no values are built); the codec parses
        # it if the datatype can hold such values (BYTES, BOOL) and refuses it otherwise.
        end = self.skip_array(pos)
        return DataSpan(buf, pos, end, numeric=False), end

    def skip_array(self, pos: int) -> int:
        """The end of the array opened at ``pos``, stepping over strings and brackets only."""
        depth = 0
        for token in _SKIP.finditer(self.buf, pos):
            text = token.group()
            if text == b"[":
                depth += 1
            elif text == b"]":
                depth -= 1
                if depth == 0:
                    return token.end()
            elif text[:1] != b'"':
                self.fail(token.start(), "unterminated string")
            if depth > MAX_NESTING:
                self.fail(token.start(), f"nested deeper than {MAX_NESTING} levels")
        self.fail(len(self.buf), "unterminated array")
        raise AssertionError  # unreachable


def balanced_end(buf: bytes, start: int, limit: int) -> int | None:
    """The end of the array opened at ``start`` if its brackets close before ``limit``, else None."""
    close = buf.find(b"]", start + 1, limit)
    if close < 0:
        return None
    inner = buf.find(b"[", start + 1, close)
    if inner < 0:
        return close + 1  # flat: the common case, two memchr calls
    depth = 0
    i = start
    while True:  # nested: one step per bracket (rows, not elements)
        opened = buf.find(b"[", i, limit)
        closed = buf.find(b"]", i, limit)
        if closed < 0:
            return None
        if 0 <= opened < closed:
            depth += 1
            i = opened + 1
        else:
            depth -= 1
            i = closed + 1
            if depth == 0:
                return i
