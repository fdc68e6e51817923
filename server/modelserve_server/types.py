"""Transport-independent request and response values.

The REST and gRPC front ends decode their wire formats into these dataclasses and encode them back;
the :class:`~modelserve_server.service.InferenceService` only ever sees these, so validation,
batching and metrics are written once. Tensors are numpy arrays already shaped as ``shape``;
``BYTES`` tensors are ``object`` arrays of ``bytes`` (see :mod:`modelserve_server.datatypes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class InferInput:
    """One input tensor of a request. ``data.shape == shape`` and ``data.dtype`` matches ``datatype``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for. ``binary`` is the Triton ``binary_data`` flag (None: not given)."""

    name: str
    binary: bool | None = None


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request. ``outputs`` empty means "all outputs of the model"."""

    model: str
    version: str | None
    id: str | None
    inputs: list[InferInput]
    outputs: list[RequestedOutput] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferOutput:
    """One output tensor of a response."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(slots=True)
class InferResponse:
    """The result of one request, in the order of the requested outputs (model order when all)."""

    model_name: str
    model_version: str
    id: str | None
    outputs: list[InferOutput]
    parameters: dict[str, Any] = field(default_factory=dict)
