"""One ONNX Runtime session per model version, with the metadata the server needs about it.

Why a wrapper: the rest of the server speaks V2 (datatype names, ``-1`` for dynamic dims, ``BYTES`` as
``bytes``), ONNX Runtime speaks ``tensor(float)``, symbolic dims and Python ``str``. This module is the
only place that translates, and it decides two things once at load time: whether the model can be
batched (every input and output has a dynamic first dimension, and a warm-up at batch 1 and 2
proves the outputs follow it) and which providers really became active.

``run`` is synchronous and blocking; callers run it in a thread pool (ONNX Runtime releases the GIL),
never on the event loop.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from modelserve_server.datatypes import BYTES, ONNX_TO_V2, V2_TO_NUMPY
from modelserve_server.errors import InvalidInput, StartupError, translate_runtime_error
from modelserve_server.runtime import tensorrt
from modelserve_server.runtime.providers import (
    CUDA,
    TENSORRT,
    ProviderPlan,
    ProviderReport,
    check_session_providers,
    cuda_device_id,
    probe_provider_library,
    provider_report,
)

log = logging.getLogger(__name__)

#: ONNX Runtime's intra-op threads spin while idle by default; on a small CPU that steals the cores the
#: HTTP event loop needs (field notes: ~200 % CPU at concurrency 1). Off unless this variable says "1".
ALLOW_SPINNING_ENV = "MODELSERVE_ORT_ALLOW_SPINNING"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output as V2 describes it: ``-1`` marks a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def _dims(shape: Sequence[object] | None) -> tuple[int, ...]:
    """ONNX Runtime reports dims as int, symbolic str, or None; V2 wants int with -1 for dynamic."""
    if shape is None:
        return ()
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def _spec(arg: ort.NodeArg, model: str) -> TensorSpec:
    datatype = ONNX_TO_V2.get(arg.type)
    if datatype is None:
        raise StartupError(f"model {model}: tensor {arg.name!r} has type {arg.type}, which V2 cannot carry")
    return TensorSpec(arg.name, datatype, _dims(arg.shape))


def to_ort_strings(array: np.ndarray, tensor: str) -> np.ndarray:
    """``BYTES`` (object array of ``bytes``) -> object array of ``str``, which ONNX Runtime needs."""
    try:
        flat = [b.decode("utf-8") if isinstance(b, bytes | bytearray) else str(b) for b in array.ravel()]
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"input {tensor!r}: string tensor element is not valid UTF-8 ({exc})") from None
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)


def from_ort_strings(array: np.ndarray) -> np.ndarray:
    """ONNX Runtime string output (``str`` objects) -> ``BYTES`` (object array of ``bytes``)."""
    flat = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in array.ravel()]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)


class ModelSession:
    """A loaded model version: an ``InferenceSession`` plus its V2 metadata."""

    def __init__(
        self,
        name: str,
        version: str,
        path: Path,
        plan: ProviderPlan,
        *,
        intra_op_threads: int = 0,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        opts = ort.SessionOptions()
        if intra_op_threads > 0:
            opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        spinning = "1" if os.environ.get(ALLOW_SPINNING_ENV, "0") == "1" else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        started = time.monotonic()
        self.trt_cache_dir: Path | None = None
        trt_options: dict[str, object] | None = None
        try:
            if TENSORRT in plan.names:
                setup = tensorrt.prepare(path, plan.gpu, cuda_device_id(), f"{name}/{version}")
                trt_options, self.trt_cache_dir = setup.provider_options, setup.cache_dir
            self._session = ort.InferenceSession(
                str(path), sess_options=opts, providers=plan.session_providers(trt_options)
            )
        except Exception as exc:
            raise StartupError(f"model {name} version {version}: cannot load {path}: {exc}") from exc
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        check_session_providers(plan, self.providers, f"{name}/{version}")
        probe = {n: probe_provider_library(n) for n in plan.names if n not in self.providers}
        self.report: ProviderReport = provider_report(plan, self.providers, probe)
        if self.report.fallback:
            log.warning(
                "model %s version %s: provider fallback: %s", name, version, self.report.fallback_reason
            )
        self._dims = plan.gpu.dims()
        self._max_batch = plan.gpu.max_batch_size
        self._raw_shapes = {a.name: list(a.shape or []) for a in self._session.get_inputs()}
        self.inputs: tuple[TensorSpec, ...] = tuple(_spec(a, name) for a in self._session.get_inputs())
        self.outputs: tuple[TensorSpec, ...] = tuple(_spec(a, name) for a in self._session.get_outputs())
        self.input_by_name = {t.name: t for t in self.inputs}
        self.output_by_name = {t.name: t for t in self.outputs}
        self.output_names: tuple[str, ...] = tuple(t.name for t in self.outputs)
        self._string_inputs = frozenset(t.name for t in self.inputs if t.datatype == BYTES)
        self._string_outputs = frozenset(t.name for t in self.outputs if t.datatype == BYTES)
        # Statically batchable: every tensor has a dynamic first dimension. warmup() may revoke it.
        self.batchable = bool(self.inputs) and all(
            len(t.shape) >= 1 and t.shape[0] == -1 for t in (*self.inputs, *self.outputs)
        )
        log.info(
            "loaded model %s version %s from %s in %.2fs on %s (batchable: %s)",
            name, version, path, time.monotonic() - started, ", ".join(self.providers), self.batchable,
        )

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        """Run the model synchronously. Blocking: call it from a worker thread.

        ``feeds`` hold V2 arrays (``BYTES`` as bytes); outputs come back the same way. ONNX Runtime's
        exceptions are translated to :class:`~modelserve_server.errors.ModelserveError`.
        """
        if self._string_inputs:
            feeds = {
                k: (to_ort_strings(v, k) if k in self._string_inputs else v) for k, v in feeds.items()
            }
        try:
            results = self._session.run(list(output_names), feeds)
        except Exception as exc:
            raise translate_runtime_error(exc, f"model {self.name} version {self.version}") from exc
        out: dict[str, np.ndarray] = {}
        for name, value in zip(output_names, results, strict=True):
            array = np.asarray(value)
            out[name] = from_ort_strings(array) if name in self._string_outputs else array
        return out

    def dummy_feeds(self, batch: int) -> dict[str, np.ndarray]:
        """Zero inputs for a warm-up: dynamic first dim = ``batch``, other dynamic dims their declared
        size (``--trt-dim``, by symbolic name) or 1."""
        feeds: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            raw = self._raw_shapes.get(spec.name, [])
            dims = [
                d if d >= 0 else self._dims.get(raw[i], 1) if i < len(raw) and isinstance(raw[i], str) else 1
                for i, d in enumerate(spec.shape)
            ]
            if dims and spec.shape[0] == -1:
                dims[0] = batch
            if spec.datatype == BYTES:
                arr = np.empty(dims, dtype=object)
                arr[...] = b""
            else:
                arr = np.zeros(dims, dtype=V2_TO_NUMPY[spec.datatype])
            feeds[spec.name] = arr
        return feeds

    def warmup(self) -> None:
        """Run the model once (batch 1) and, if batchable, at batch 2 to prove outputs follow the batch.

        A model whose outputs do not scale with the first input dimension (e.g. it reduces over the
        batch) is not batched, whatever its declared shapes say; neither is one that runs at batch 1
        but fails at batch 2. A model that cannot run even once, at batch 1 on zero inputs, is a
        :class:`StartupError`: a pod that would answer every request with an error must not turn
        Ready, and the operator shows the reason (the server's last log line) on the ModelDeployment.
        """
        started = time.monotonic()
        try:
            one = self.run(self.dummy_feeds(1), self.output_names)
        except Exception as exc:
            raise StartupError(
                f"model {self.name} version {self.version}: warm-up inference (batch 1, zero inputs) "
                f"failed: {exc}"
            ) from exc
        try:
            if self.batchable:
                two = self.run(self.dummy_feeds(2), self.output_names)
                if self._max_batch > 2 and any(p in (TENSORRT, CUDA) for p in self.providers):
                    # Before Ready: TensorRT builds (or loads from its cache) the engine of the whole
                    # profile, CUDA grows its arena for the largest batch the server forms.
                    self.run(self.dummy_feeds(self._max_batch), self.output_names)
                scales = all(
                    one[n].ndim >= 1 and two[n].ndim >= 1 and one[n].shape[0] == 1 and two[n].shape[0] == 2
                    for n in self.output_names
                )
                if not scales:
                    log.warning(
                        "model %s version %s: outputs do not follow the batch dimension; batching disabled",
                        self.name, self.version,
                    )
                    self.batchable = False
        except Exception as exc:
            log.warning(
                "model %s version %s: warm-up at batch 2 failed (%s); batching disabled",
                self.name, self.version, exc,
            )
            self.batchable = False
        log.info("warmed model %s version %s in %.3fs", self.name, self.version, time.monotonic() - started)
