"""TensorRT EP set-up: a keyed engine cache, the optimisation profile of the declared shapes, options.

Why: without an engine cache every pod and every restart rebuilds its TensorRT engines, which costs
minutes per model. An engine is only valid for the model bytes, the GPU model, and the ONNX Runtime
and TensorRT versions that built it (and the precision and shape profile asked for), so the cache
directory is keyed by all of them: a pod on another GPU model, or after an upgrade, gets a fresh
directory instead of a stale engine. The same directory holds TensorRT's timing cache.

The profile: with an explicit min/opt/max shape per input, TensorRT builds one engine covering batch
1..``max_batch_size`` at session warm-up, before the pod turns Ready, instead of rebuilding engines
whenever a larger batch first arrives under load. It can be explicit only when every dynamic
dimension is either the batch dimension or named in ``--trt-dim``; otherwise the EP keeps its own
on-demand behaviour and the log says so.

:func:`cache_key`, :func:`profile_shapes` and :func:`tensorrt_provider_options` are pure;
:func:`prepare` does the I/O (hashing the model, asking NVML and libnvinfer for names and versions,
reading input shapes from a CPU session).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelserve_server.runtime.options import GpuOptions

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class CacheIdentity:
    """Everything an engine depends on besides the ONNX Runtime options."""

    model_sha256: str
    gpu_name: str
    ort_version: str
    trt_version: str


def _slug(text: str) -> str:
    return _UNSAFE.sub("-", text.strip()).strip("-").lower() or "unknown"


def precision(options: GpuOptions) -> str:
    """``fp32``, ``fp16``, ``int8`` or ``fp16-int8``: part of the key (engines differ by precision)."""
    parts = [p for p, on in (("fp16", options.trt_fp16), ("int8", options.trt_int8)) if on]
    return "-".join(parts) or "fp32"


def cache_key(identity: CacheIdentity, options: GpuOptions, profile: tuple[str, str, str] | None) -> str:
    """The relative cache directory: ``<sha256>/<gpu>/ort-<v>_trt-<v>_<precision>_<profile hash>``."""
    shapes = "|".join(profile) if profile else "on-demand"
    profile_hash = hashlib.sha256(shapes.encode()).hexdigest()[:12]
    leaf = (
        f"ort-{_slug(identity.ort_version)}_trt-{_slug(identity.trt_version)}_"
        f"{precision(options)}_{profile_hash}"
    )
    return f"{identity.model_sha256}/{_slug(identity.gpu_name)}/{leaf}"


def _is_dynamic(dim: object) -> bool:
    return not (isinstance(dim, int) and dim >= 0)


def profile_shapes(
    inputs: Sequence[tuple[str, Sequence[object]]], options: GpuOptions
) -> tuple[str, str, str] | None:
    """``trt_profile_{min,opt,max}_shapes`` for ``inputs`` ``(name, raw ONNX Runtime shape)``.

    The first dimension, when dynamic, is the batch: 1 / ``max_batch_size`` / ``max_batch_size``.
    Other dynamic dimensions take their value from ``options.trt_dims`` (by symbolic name) at all
    three points. None when a dynamic dimension has no declared value (no explicit profile).
    """
    if not inputs:
        return None
    dims = options.dims()
    points: list[list[str]] = [[], [], []]
    for name, shape in inputs:
        per_point: list[list[int]] = [[], [], []]
        for index, dim in enumerate(shape):
            if not _is_dynamic(dim):
                values = [int(dim)] * 3  # type: ignore[call-overload]
            elif index == 0:
                values = [1, options.max_batch_size, options.max_batch_size]
            elif isinstance(dim, str) and dim in dims:
                values = [dims[dim]] * 3
            else:
                return None
            for point in range(3):
                per_point[point].append(values[point])
        for point in range(3):
            points[point].append(f"{name}:{'x'.join(str(v) for v in per_point[point])}")
    low, opt, high = (",".join(p) for p in points)
    return low, opt, high


def tensorrt_provider_options(
    options: GpuOptions, device_id: int, cache_dir: Path | None, profile: tuple[str, str, str] | None
) -> dict[str, Any]:
    """``TensorrtExecutionProvider`` options: cache, timing cache, precision and profile."""
    out: dict[str, Any] = {"device_id": device_id}
    if cache_dir is not None:
        out.update(
            {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_dir),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache_dir),
            }
        )
    if options.trt_fp16:
        out["trt_fp16_enable"] = True
    if options.trt_int8:
        out["trt_int8_enable"] = True
    if profile is not None:
        out["trt_profile_min_shapes"], out["trt_profile_opt_shapes"], out["trt_profile_max_shapes"] = profile
    return out


# ------------------------------------------------------------------------------------------ I/O
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def gpu_name(device_id: int = 0) -> str:
    """The GPU model as NVML names it (a MIG instance includes its profile), else ``unknown-gpu``."""
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(device_id))
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return "unknown-gpu"


def tensorrt_version() -> str:
    """The TensorRT runtime that would load (``getInferLibVersion`` of libnvinfer), else ``none``."""
    try:
        lib = ctypes.CDLL("libnvinfer.so.10")
        value = int(lib.getInferLibVersion())
    except (OSError, AttributeError):
        return "none"
    return f"{value // 10000}.{value // 100 % 100}.{value % 100}"


def input_shapes(path: Path) -> list[tuple[str, list[object]]]:
    """Input names and raw shapes (symbolic names kept), read from a CPU session without optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return [(a.name, list(a.shape or [])) for a in session.get_inputs()]


@dataclass(frozen=True, slots=True)
class TensorrtSetup:
    """What :func:`prepare` decided for one model: provider options, cache dir, profile."""

    provider_options: dict[str, Any]
    cache_dir: Path | None
    profile: tuple[str, str, str] | None


def prepare(path: Path, options: GpuOptions, device_id: int, model: str) -> TensorrtSetup:
    """Hash the model, name the GPU and versions, create the keyed cache directory, build options."""
    import onnxruntime as ort

    profile = profile_shapes(input_shapes(path), options)
    if profile is None:
        log.warning(
            "model %s: a dynamic input dimension has no declared size (--trt-dim); TensorRT builds "
            "engines on demand, at the first request of each new shape",
            model,
        )
    cache_dir: Path | None = None
    if options.trt_cache_dir is not None:
        identity = CacheIdentity(file_sha256(path), gpu_name(device_id), ort.__version__, tensorrt_version())
        cache_dir = options.trt_cache_dir / cache_key(identity, options, profile)
        cache_dir.mkdir(parents=True, exist_ok=True)
        log.info("model %s: TensorRT engine cache %s", model, cache_dir)
    provider_options = tensorrt_provider_options(options, device_id, cache_dir, profile)
    return TensorrtSetup(provider_options, cache_dir, profile)
