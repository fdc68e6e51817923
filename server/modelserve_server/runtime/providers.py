"""Execution-provider selection: ``--providers auto|cuda,cpu|tensorrt,cuda,cpu|cpu``.

Why a module of its own: the rule "an explicitly named provider that cannot load is a start-up
error, never a silent CPU fallback" has two halves. ONNX Runtime lists what its build *has*
(``get_available_providers``), but a CUDA build still falls back to CPU at session creation when the
CUDA libraries or the device are missing, logging only an error. So we check both before (here:
:func:`resolve_providers`) and after session creation (:func:`check_session_providers`).
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

from modelserve_server.errors import StartupError
from modelserve_server.runtime.options import GpuOptions, cuda_provider_options

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

#: short names accepted on the command line -> ONNX Runtime provider names.
SHORT_NAMES: dict[str, str] = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}
#: the preference order that ``auto`` walks.
AUTO_ORDER: tuple[str, ...] = (TENSORRT, CUDA, CPU)
#: ONNX Runtime provider names -> the short name the command line and the metadata use.
SHORT_OF: dict[str, str] = {TENSORRT: "tensorrt", CUDA: "cuda", CPU: "cpu"}
#: why ``auto`` skipped a provider that this ONNX Runtime build does not have (not a fallback).
NOT_IN_BUILD = "not in this ONNX Runtime build"


@dataclass(frozen=True, slots=True)
class ProviderPlan:
    """What to ask ONNX Runtime for, and whether a shortfall is fatal.

    ``explicit`` is True when the user named the providers: then every one of them must be active
    in each session. With ``auto`` we take what loads and log it.
    """

    names: tuple[str, ...]
    explicit: bool
    spec: str = "auto"
    """The ``--providers`` value as given (normalised), reported in the model metadata."""
    skipped: tuple[tuple[str, str], ...] = ()
    """Providers ``auto`` left out, with why (``not in this ONNX Runtime build``, hidden GPUs)."""
    gpu: GpuOptions = field(default_factory=GpuOptions)

    def session_providers(
        self, tensorrt_options: dict[str, Any] | None = None
    ) -> list[str | tuple[str, dict[str, Any]]]:
        """The ``providers=`` argument for ``InferenceSession``, with per-provider options.

        ``tensorrt_options`` are the model's own (cache directory, profile: see ``runtime.tensorrt``).
        """
        out: list[str | tuple[str, dict[str, Any]]] = []
        for name in self.names:
            if name == CUDA:
                out.append((name, cuda_provider_options(self.gpu, cuda_device_id())))
            elif name == TENSORRT:
                out.append((name, {"device_id": cuda_device_id(), **(tensorrt_options or {})}))
            else:
                out.append(name)
        return out


def cuda_device_id() -> int:
    """The CUDA device ordinal to use.

    ``CUDA_VISIBLE_DEVICES`` (set by the Kubernetes device plugin) already restricts and renumbers
    the devices this process sees, so the assigned GPU is always ordinal 0 inside the process.
    """
    return 0


def cuda_visible() -> bool:
    """False when ``CUDA_VISIBLE_DEVICES`` explicitly hides every device ("" or "-1")."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return value is None or value.strip() not in ("", "-1")


def parse_providers(spec: str) -> tuple[tuple[str, ...], bool]:
    """Parse the ``--providers`` value into (ONNX Runtime names, explicit?). Raises StartupError."""
    spec = spec.strip().lower()
    if spec in ("", "auto"):
        return AUTO_ORDER, False
    names: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if part not in SHORT_NAMES:
            raise StartupError(
                f"--providers: unknown provider {part!r} (choose from auto, {', '.join(sorted(SHORT_NAMES))})"
            )
        if SHORT_NAMES[part] not in names:
            names.append(SHORT_NAMES[part])
    return tuple(names), True


def resolve_providers(
    spec: str, available: Sequence[str] | None = None, gpu: GpuOptions | None = None
) -> ProviderPlan:
    """Turn ``--providers`` into a :class:`ProviderPlan` checked against this ONNX Runtime build.

    Explicit names that this build lacks raise :class:`StartupError`; ``auto`` keeps the available
    ones in preference order (CPU is always available).
    """
    wanted, explicit = parse_providers(spec)
    normalised = "auto" if not explicit else ",".join(SHORT_OF[n] for n in wanted)
    gpu = gpu if gpu is not None else GpuOptions()
    have = list(ort.get_available_providers() if available is None else available)
    if explicit:
        missing = [n for n in wanted if n not in have]
        if missing:
            raise StartupError(
                f"--providers {spec}: {', '.join(missing)} not available in this ONNX Runtime build "
                f"(available: {', '.join(have)}); refusing to fall back silently"
            )
        if any(n in (CUDA, TENSORRT) for n in wanted) and not cuda_visible():
            raise StartupError(f"--providers {spec}: CUDA_VISIBLE_DEVICES hides every GPU")
        return ProviderPlan(wanted, True, normalised, (), gpu)
    chosen = [n for n in wanted if n in have and (n == CPU or cuda_visible())]
    skipped = tuple(
        (n, NOT_IN_BUILD if n not in have else "CUDA_VISIBLE_DEVICES hides every GPU")
        for n in wanted
        if n not in chosen
    )
    if CPU not in chosen:
        chosen.append(CPU)
    log.info("providers: auto selected %s (available in this build: %s)", ", ".join(chosen), ", ".join(have))
    return ProviderPlan(tuple(chosen), False, normalised, skipped, gpu)


def check_session_providers(plan: ProviderPlan, active: Sequence[str], model: str) -> None:
    """After creating a session: an explicit provider that did not activate is a start-up error.

    ONNX Runtime silently drops CUDA/TensorRT when their libraries fail to load; this is where that
    fallback is caught.
    """
    if not plan.explicit:
        return
    dropped = [n for n in plan.names if n not in active]
    if dropped:
        raise StartupError(
            f"model {model}: provider(s) {', '.join(dropped)} failed to load "
            f"(session runs on {', '.join(active)}); see ONNX Runtime's log above"
        )


# ------------------------------------------------------------------------------ what actually loaded
#: Keys of the model metadata ``parameters`` that say which provider runs the model. A contract with
#: the operator (its AcceleratorReady condition reads them) and with operators reading it by hand:
#: values are plain strings, the keys never change meaning.
PARAM_PROVIDER = "execution_provider"
PARAM_PROVIDERS = "execution_providers"
PARAM_REQUESTED = "requested_providers"
PARAM_FALLBACK = "provider_fallback"
PARAM_FALLBACK_REASON = "provider_fallback_reason"


@dataclass(frozen=True, slots=True)
class ProviderReport:
    """Which provider a session runs on, what was asked for, and why it is not the preferred one.

    A *fallback* is a provider this build has and the plan preferred that is not active: it failed to
    load (libraries missing, no device) or ``auto`` skipped it because every GPU is hidden. A provider
    the build simply lacks (``auto`` on the CPU image) is not a fallback.
    """

    requested: str
    active: tuple[str, ...]
    fallback_reason: str = ""

    @property
    def provider(self) -> str:
        """The provider that runs the model's nodes first (the others take what it cannot)."""
        return self.active[0] if self.active else CPU

    @property
    def fallback(self) -> bool:
        return bool(self.fallback_reason)

    def parameters(self) -> dict[str, str]:
        """The model metadata ``parameters`` (all five keys always present, strings only)."""
        return {
            PARAM_PROVIDER: self.provider,
            PARAM_PROVIDERS: ",".join(self.active),
            PARAM_REQUESTED: self.requested,
            PARAM_FALLBACK: "true" if self.fallback else "false",
            PARAM_FALLBACK_REASON: self.fallback_reason,
        }


def provider_report(plan: ProviderPlan, active: Sequence[str], probe: dict[str, str]) -> ProviderReport:
    """Compare what the plan preferred with what became active (pure; ``probe`` maps a provider to
    the load error found for it, see :func:`probe_provider_library`)."""
    active = tuple(active)
    reasons: list[str] = [f"{name}: {why}" for name, why in plan.skipped if why != NOT_IN_BUILD]
    preferred = plan.names[0] if plan.names else CPU
    for name in plan.names:
        if name == (active[0] if active else CPU):
            break
        if name not in active:
            reasons.append(
                f"{name} did not load: {probe.get(name) or 'see ONNX Runtime log (no library error found)'}"
            )
    if not reasons and active and preferred != active[0] and preferred not in active:
        reasons.append(f"{preferred} is not active")
    return ProviderReport(plan.spec, active, "; ".join(reasons))


#: the shared library of each provider inside onnxruntime/capi (CPU is built in).
PROVIDER_LIBRARY = {
    TENSORRT: "libonnxruntime_providers_tensorrt.so",
    CUDA: "libonnxruntime_providers_cuda.so",
}


def probe_provider_library(name: str) -> str:
    """Why ONNX Runtime could not load ``name``'s library: the dynamic loader's message, or "".

    Called only after a provider failed to activate, to put the real reason (for example
    ``libnvinfer.so.10: cannot open shared object file``) into the model metadata.
    """
    library = PROVIDER_LIBRARY.get(name)
    if library is None:
        return ""
    path = Path(ort.__file__).parent / "capi" / library
    if not path.exists():
        return f"{library} is not part of this ONNX Runtime build"
    try:
        ctypes.CDLL(str(path))
    except OSError as exc:
        return str(exc)
    return ""
