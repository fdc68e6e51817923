"""Execution-provider selection: ``--providers auto|cuda,cpu|tensorrt,cuda,cpu|cpu``.

Why a module of its own: the rule "an explicitly named provider that cannot load is a start-up
error, never a silent CPU fallback" has two halves. ONNX Runtime lists what its build *has*
(``get_available_providers``), but a CUDA build still falls back to CPU at session creation when the
CUDA libraries or the device are missing, logging only an error. So we check both before (here:
:func:`resolve_providers`) and after session creation (:func:`check_session_providers`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from modelserve_server.errors import StartupError

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

#: short names accepted on the command line -> ONNX Runtime provider names.
SHORT_NAMES: dict[str, str] = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}
#: the preference order that ``auto`` walks.
AUTO_ORDER: tuple[str, ...] = (TENSORRT, CUDA, CPU)


@dataclass(frozen=True, slots=True)
class ProviderPlan:
    """What to ask ONNX Runtime for, and whether a shortfall is fatal.

    ``explicit`` is True when the user named the providers: then every one of them must be active
    in each session. With ``auto`` we take what loads and log it.
    """

    names: tuple[str, ...]
    explicit: bool

    def session_providers(self) -> list[str | tuple[str, dict[str, Any]]]:
        """The ``providers=`` argument for ``InferenceSession``, with per-provider options."""
        out: list[str | tuple[str, dict[str, Any]]] = []
        for name in self.names:
            if name in (CUDA, TENSORRT):
                out.append((name, {"device_id": cuda_device_id()}))
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


def resolve_providers(spec: str, available: Sequence[str] | None = None) -> ProviderPlan:
    """Turn ``--providers`` into a :class:`ProviderPlan` checked against this ONNX Runtime build.

    Explicit names that this build lacks raise :class:`StartupError`; ``auto`` keeps the available
    ones in preference order (CPU is always available).
    """
    wanted, explicit = parse_providers(spec)
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
        return ProviderPlan(wanted, True)
    chosen = [n for n in wanted if n in have and (n == CPU or cuda_visible())]
    if CPU not in chosen:
        chosen.append(CPU)
    log.info("providers: auto selected %s (available in this build: %s)", ", ".join(chosen), ", ".join(have))
    return ProviderPlan(tuple(chosen), False)


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
