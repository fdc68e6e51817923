"""Kubernetes quantities ("500m", "1Gi", 4) as exact numbers: the one parser of the operator.

Why one module: the API's cross-field rules (a request must not exceed its limit, a memory
floor), the fetch container's memory request and the drift check (the API server stores
``"1000m"`` as ``"1"``) all compare quantities; two parsers would sooner or later disagree
about what ``"1e3"`` or ``"0.5Gi"`` means. The grammar is the API server's
(``resource.Quantity``): a signed decimal, then a binary suffix (Ki..Ei), a decimal suffix
(n, u, m, k, M..E) or a decimal exponent (``e3``).
"""

from __future__ import annotations

import re
from fractions import Fraction

# Kubernetes resource.Quantity, as controller-gen writes it (the CRD's OpenAPI pattern).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

_SUFFIX: dict[str, Fraction] = {
    "": Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18), "Ki": Fraction(2**10), "Mi": Fraction(2**20),
    "Gi": Fraction(2**30), "Ti": Fraction(2**40), "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}  # fmt: skip
_RE = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|([a-zA-Z]{0,2}))")


def parse_quantity(value: object) -> Fraction:
    """A quantity as an exact number ("500m" -> 1/2, "1Gi" -> 1073741824); ValueError otherwise.

    Integers and floats are taken as plain numbers (a JSON quantity may be written 4 or 0.5).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(str(value))
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    match = _RE.fullmatch(value)
    if not match or (match.group(3) or "") not in _SUFFIX:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number = Fraction(match.group(1))
    if match.group(2):
        return number * Fraction(10) ** int(match.group(2)[1:])
    return number * _SUFFIX[match.group(3) or ""]


def try_parse_quantity(value: object) -> Fraction | None:
    """:func:`parse_quantity`, or None when ``value`` is not a quantity (e.g. an image name)."""
    try:
        return parse_quantity(value)
    except ValueError:
        return None
