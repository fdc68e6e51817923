"""Check a decoded request against the model's signature before it reaches a batch.

Why before batching: one bad request must fail alone with a 400 that names the tensor, never poison
the batch it would have joined (ONNX Runtime would then fail every request in it). After these checks
a request's feeds have exactly the model's input names, dtypes, ranks and static dimensions, so the
only remaining runtime errors are the model's own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from modelserve_server.batching.merge import batch_key, batch_rows
from modelserve_server.datatypes import V2_TO_NUMPY
from modelserve_server.errors import InvalidInput
from modelserve_server.runtime.session import ModelSession
from modelserve_server.types import InferRequest


@dataclass(slots=True)
class Work:
    """A validated request as the batch runner sees it.

    ``requested`` is the response order of outputs; ``run_outputs`` what the session must compute;
    ``metric_rows`` the rows this request adds to the batch-size histogram.
    """

    feeds: dict[str, np.ndarray]
    requested: tuple[str, ...]
    run_outputs: tuple[str, ...]
    metric_rows: int


class _Alone:
    """A batching key equal only to itself: the request runs in a batch of its own."""

    __slots__ = ()


def _fmt(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_input(session: ModelSession, name: str, datatype: str, shape: tuple[int, ...]) -> None:
    """One input's name, datatype, rank and static dimensions against the model's signature.

    The transports call it (through :func:`signature_check`) before decoding the input's data, and
    :func:`prepare` again on the decoded request, so both orders give the same message.
    """
    where = f"model {session.name!r}"
    spec = session.input_by_name.get(name)
    if spec is None:
        raise InvalidInput(
            f"{where}: unknown input {name!r} (inputs are: {', '.join(sorted(session.input_by_name))})"
        )
    if datatype != spec.datatype:
        raise InvalidInput(
            f"{where}: input {name!r} has datatype {datatype}, the model expects {spec.datatype}"
        )
    if len(shape) != len(spec.shape) or any(
        want != -1 and got != want for got, want in zip(shape, spec.shape, strict=True)
    ):
        raise InvalidInput(
            f"{where}: input {name!r} has shape {_fmt(shape)}, the model expects {_fmt(spec.shape)}"
            " (-1: any size)"
        )


def signature_check(session: ModelSession) -> Callable[[str, str, tuple[int, ...]], None]:
    """:func:`check_input` bound to ``session``: what a transport's decoder calls per input."""
    return functools.partial(check_input, session)


def prepare(
    session: ModelSession, req: InferRequest, batchable: bool, max_batch_size: int
) -> tuple[Work, int, Hashable]:
    """Validate ``req`` for ``session``; return the work item, its row count and its batching key.

    Raises :class:`InvalidInput` naming the tensor for: unknown or duplicate inputs, missing inputs,
    wrong datatype, wrong rank, a static dimension that differs, data that does not match the
    declared shape, and unknown or duplicate requested outputs.
    """
    where = f"model {session.name!r}"
    feeds: dict[str, np.ndarray] = {}
    specs = session.input_by_name
    for inp in req.inputs:
        if inp.name in feeds:
            raise InvalidInput(f"{where}: input {inp.name!r} is given twice")
        check_input(session, inp.name, inp.datatype, inp.shape)
        spec = specs[inp.name]
        shape = inp.shape
        data = inp.data
        if data.shape != shape:
            raise InvalidInput(
                f"{where}: input {inp.name!r}: data has shape {_fmt(data.shape)} but the request says "
                f"{_fmt(shape)}"
            )
        if data.dtype != V2_TO_NUMPY[spec.datatype]:
            try:
                data = data.astype(V2_TO_NUMPY[spec.datatype])
            except (TypeError, ValueError) as exc:
                raise InvalidInput(
                    f"{where}: input {inp.name!r}: data is not {spec.datatype}: {exc}"
                ) from None
        feeds[inp.name] = data
    if len(feeds) != len(specs):
        missing = [n for n in specs if n not in feeds]
        raise InvalidInput(f"{where}: missing input(s) {', '.join(repr(m) for m in missing)}")

    if req.outputs:
        requested: list[str] = []
        for out in req.outputs:
            if out.name not in session.output_by_name:
                raise InvalidInput(
                    f"{where}: unknown output {out.name!r} (outputs are: {', '.join(session.output_names)})"
                )
            if out.name in requested:
                raise InvalidInput(f"{where}: output {out.name!r} is requested twice")
            requested.append(out.name)
        requested_t = tuple(requested)
        run_outputs = tuple(n for n in session.output_names if n in set(requested_t))
    else:
        requested_t = run_outputs = session.output_names

    if not batchable:
        return Work(feeds, requested_t, run_outputs, 1), 1, None
    rows = batch_rows(feeds)
    if rows is None:  # inputs disagree on the first dimension: cannot split back, run alone
        return Work(feeds, requested_t, run_outputs, 1), max_batch_size, _Alone()
    work = Work(feeds, requested_t, run_outputs, rows)
    if rows > max_batch_size:
        return work, rows, _Alone()
    return work, rows, batch_key(feeds)
