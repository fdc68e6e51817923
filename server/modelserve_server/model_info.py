"""What the server says *about* a model: V2 metadata, Triton's model config and statistics.

Kept apart from the service so the JSON shapes that outside tools parse (tritonclient, perf_analyzer,
the gRPC front end) are in one small, readable place. perf_analyzer in particular reads
``max_batch_size`` and ``dims`` from the config to build its requests: for a batchable model the batch
dimension is implicit (``dims`` leave it out), exactly as Triton reports it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from modelserve_server.datatypes import V2_TO_TRITON_CONFIG
from modelserve_server.parsing import ascii_uint
from modelserve_server.runtime.providers import CUDA, TENSORRT
from modelserve_server.runtime.session import ModelSession, TensorSpec

PLATFORM = "onnxruntime_onnx"


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def model_metadata(session: ModelSession, versions: Sequence[str]) -> dict[str, Any]:
    """V2 model metadata (``GET /v2/models/{m}``), plus the execution providers in use.

    ``parameters`` says which provider actually runs the model, what was requested and, after a
    fallback, why (:meth:`~modelserve_server.runtime.providers.ProviderReport.parameters`): the
    operator's AcceleratorReady condition reads exactly these keys.
    """
    return {
        "name": session.name,
        "versions": list(versions),
        "platform": PLATFORM,
        "inputs": [_tensor(t) for t in session.inputs],
        "outputs": [_tensor(t) for t in session.outputs],
        "providers": list(session.providers),
        "parameters": session.report.parameters(),
    }


def _config_tensor(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    dims = list(spec.shape[1:] if batched else spec.shape)
    return {"name": spec.name, "data_type": V2_TO_TRITON_CONFIG[spec.datatype], "dims": dims}


def model_config(session: ModelSession, *, max_batch_size: int, max_queue_delay_us: int) -> dict[str, Any]:
    """Triton's model configuration (``GET /v2/models/{m}/config``) for an ONNX model.

    ``max_batch_size`` is 0 for a model without a batch dimension (static first dim); then ``dims``
    are the full shapes. ``dynamic_batching`` is present only when the server batches (max > 1).
    """
    batched = max_batch_size > 0
    gpu = any(p in (CUDA, TENSORRT) for p in session.providers)
    config: dict[str, Any] = {
        "name": session.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [number]}}
        if (number := ascii_uint(session.version)) is not None
        else {"latest": {"num_versions": 1}},
        "max_batch_size": max_batch_size,
        "input": [_config_tensor(t, batched) for t in session.inputs],
        "output": [_config_tensor(t, batched) for t in session.outputs],
        "instance_group": [{"name": session.name, "kind": "KIND_GPU" if gpu else "KIND_CPU", "count": 1}],
        "parameters": {
            "providers": {"string_value": ",".join(session.providers)},
            **{k: {"string_value": v} for k, v in session.report.parameters().items()},
        },
    }
    if max_batch_size > 1:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": max_queue_delay_us}
    return config


def _duration(count: int, seconds: float) -> dict[str, int]:
    return {"count": count, "ns": int(seconds * 1e9)}


@dataclass(slots=True)
class ModelStats:
    """Cumulative per-version counters in the shape of Triton's statistics extension."""

    success_count: int = 0
    success_s: float = 0.0
    fail_count: int = 0
    fail_s: float = 0.0
    queue_count: int = 0
    queue_s: float = 0.0
    compute_count: int = 0
    compute_s: float = 0.0
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batch_stats: dict[int, list[float]] = field(default_factory=dict)  # size -> [count, seconds]

    def record_success(self, seconds: float) -> None:
        self.success_count += 1
        self.success_s += seconds
        self.last_inference_ms = int(time.time() * 1000)

    def record_failure(self, seconds: float) -> None:
        self.fail_count += 1
        self.fail_s += seconds

    def record_execution(self, rows: int, compute_s: float, queue_s: Sequence[float]) -> None:
        self.execution_count += 1
        self.inference_count += rows
        self.compute_count += len(queue_s)
        self.compute_s += compute_s * len(queue_s)
        self.queue_count += len(queue_s)
        self.queue_s += sum(queue_s)
        entry = self.batch_stats.setdefault(rows, [0, 0.0])
        entry[0] += 1
        entry[1] += compute_s

    def as_triton(self, name: str, version: str) -> dict[str, Any]:
        zero = _duration(0, 0.0)
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": _duration(self.success_count, self.success_s),
                "fail": _duration(self.fail_count, self.fail_s),
                "queue": _duration(self.queue_count, self.queue_s),
                "compute_input": _duration(self.compute_count, 0.0),
                "compute_infer": _duration(self.compute_count, self.compute_s),
                "compute_output": _duration(self.compute_count, 0.0),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": _duration(int(count), 0.0),
                    "compute_infer": _duration(int(count), seconds),
                    "compute_output": _duration(int(count), 0.0),
                }
                for size, (count, seconds) in sorted(self.batch_stats.items())
            ],
        }
