"""Join requests into one batch along the first dimension, and split the results back.

Only merging and splitting lives here (the *when* is :mod:`.scheduler`): pure functions over numpy
arrays, never mutating their arguments. A batch of one is passed through untouched (no copy), and
:func:`split` returns views of the batch output (no copy either), so the only copy batching adds is
the one ``np.concatenate`` that builds the batch input.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from modelserve_server.errors import InternalError


def batch_rows(feeds: Mapping[str, np.ndarray]) -> int | None:
    """The common first dimension of all inputs, or None when they disagree or an input is a scalar.

    A request whose inputs disagree on their first dimension cannot be split back by rows, so it is
    run on its own.
    """
    rows: int | None = None
    for array in feeds.values():
        if array.ndim == 0:
            return None
        if rows is None:
            rows = int(array.shape[0])
        elif array.shape[0] != rows:
            return None
    return rows


def batch_key(feeds: Mapping[str, np.ndarray]) -> Hashable:
    """Requests may share a batch only when everything but the first dimension agrees.

    The key is the input names (in request order normalised by sorting), their dtypes and their
    trailing dimensions.
    """
    return tuple(sorted((name, array.dtype.str, array.shape[1:]) for name, array in feeds.items()))


def merge(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate each input across ``parts`` along axis 0 (new arrays; inputs are not touched).

    All parts must have the same input names and :func:`batch_key`; the scheduler guarantees it.
    """
    if not parts:
        raise ValueError("merge() needs at least one request")
    if len(parts) == 1:
        return dict(parts[0])
    names = parts[0].keys()
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in names}


def split(outputs: Mapping[str, np.ndarray], rows: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Cut each batch output into per-request views by ``rows`` (the first dimension of each request).

    Raises :class:`InternalError` when an output's first dimension is not ``sum(rows)``: the model
    does not follow the batch dimension, which load-time warm-up is meant to have caught.
    """
    total = sum(rows)
    if len(rows) == 1:
        return [dict(outputs)]
    bounds = np.cumsum(rows)[:-1]
    per_request: list[dict[str, np.ndarray]] = [{} for _ in rows]
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise InternalError(
                f"output {name!r} has shape {list(array.shape)}, which does not follow the batch of {total}"
            )
        for i, piece in enumerate(np.split(array, bounds, axis=0)):
            per_request[i][name] = piece
    return per_request
