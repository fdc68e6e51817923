"""Strict parsing of numbers that arrive as text: headers, environment variables, flags.

Why one helper: ``str.isdigit()`` is true for characters ``int()`` refuses (``"²"``) and ``int()``
itself accepts what no header should carry (``" 12 "``, ``"1_000"``, ``"١٢"``, a sign). A value that
passes :func:`ascii_uint` is a run of ASCII digits and nothing else, so it can never raise later.
"""

from __future__ import annotations

_DIGITS = frozenset(b"0123456789")


def ascii_uint(text: str | bytes, *, max_digits: int = 19) -> int | None:
    """The value of ``text`` if it is 1 to ``max_digits`` ASCII digits, else None."""
    raw = text.encode("latin-1", "replace") if isinstance(text, str) else text
    if not raw or len(raw) > max_digits or not _DIGITS.issuperset(raw):
        return None
    return int(raw)
