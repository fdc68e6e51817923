"""GPU execution-provider options from the command line, and the CUDA EP's provider options.

Why a module of its own: the same settings reach ONNX Runtime through two providers (CUDA's memory
limit and arena strategy; TensorRT's engine cache, precision and shape profile), and the operator
passes them as flags. Keeping them in one frozen value makes "what did this pod ask for" a single
object that the provider plan carries to every session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: ``--cuda-arena-strategy`` values -> ONNX Runtime's ``arena_extend_strategy``.
ARENA_STRATEGIES: dict[str, str] = {
    "next-power-of-two": "kNextPowerOfTwo",
    "same-as-requested": "kSameAsRequested",
}


@dataclass(frozen=True, slots=True)
class GpuOptions:
    """What the CUDA and TensorRT providers are told (defaults: ONNX Runtime's, plus a cache)."""

    trt_cache_dir: Path | None = None
    """Root of the TensorRT engine and timing caches; each model gets a keyed subdirectory."""
    trt_fp16: bool = False
    trt_int8: bool = False
    trt_dims: tuple[tuple[str, int], ...] = ()
    """Values for symbolic (non-batch) input dimensions, ``(dim name, size)``: the declared shapes
    that TensorRT's optimisation profile and the warm-up use."""
    cuda_mem_limit: int = 0
    """Bytes the CUDA EP's arena may hold; 0 = no limit (ONNX Runtime's default)."""
    cuda_arena_strategy: str = "next-power-of-two"
    max_batch_size: int = 32
    """The largest batch the server forms: the top of TensorRT's profile, and a warm-up size."""

    def dims(self) -> dict[str, int]:
        return dict(self.trt_dims)


def cuda_provider_options(options: GpuOptions, device_id: int) -> dict[str, Any]:
    """``CUDAExecutionProvider`` options: device, and the memory limit / arena strategy when set."""
    out: dict[str, Any] = {"device_id": device_id}
    if options.cuda_mem_limit > 0:
        out["gpu_mem_limit"] = options.cuda_mem_limit
    out["arena_extend_strategy"] = ARENA_STRATEGIES[options.cuda_arena_strategy]
    return out
