"""The ``AcceleratorReady`` condition: which execution provider each ready pod actually runs.

Why: the provider that loaded is visible only inside a pod, and a silent GPU -> CPU fallback (a
missing library, a hidden device, the CPU image on a GPU node) looks healthy from outside while
running an order of magnitude slower. The server is the source of truth: its V2 model metadata
(``GET /v2/models/<model>``) carries ``parameters`` naming the provider in use, what was requested
and, after a fallback, why (modelserve_server.runtime.providers.ProviderReport). The reconciler reads
it from every ready pod (:mod:`modelserve_operator.provider_probe`); this module turns those
observations into the condition, the ``status.provider`` summary and nothing else. Pure: the same
observations always give the same condition, so a steady state writes nothing.

Rules, in order:

* no ready pod, or probing is off: ``Unknown`` (``NoReadyPods`` / ``NotObserved``);
* a ready pod whose metadata could not be read: ``Unknown`` (``MetadataUnavailable``), unless
  another pod already shows a fallback (a known problem beats an unknown); one not answered yet:
  ``Unknown`` (``Probing``);
* a GPU pod (``resources.gpu > 0``) that runs on the CPU provider: ``False`` (``FellBackToCPU``);
* a pod that reports a fallback (e.g. TensorRT -> CUDA, with the loader's message): ``False``
  (``ProviderFallback``);
* otherwise ``True`` (``ProviderActive``), the message naming the provider and pod count.

The Warning event: the reconciler posts one when this condition turns ``False`` (status.py's
:class:`~modelserve_operator.status.Transition` treats ``AcceleratorReady=False`` as a warning).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

CONDITION = "AcceleratorReady"

# The server's metadata parameter keys (modelserve_server.runtime.providers.PARAM_*); the operator
# and server packages stay independent, tests/operator/test_accelerator.py checks the two agree.
PARAM_PROVIDER = "execution_provider"
PARAM_REQUESTED = "requested_providers"
PARAM_FALLBACK = "provider_fallback"
PARAM_FALLBACK_REASON = "provider_fallback_reason"

CPU = "CPUExecutionProvider"
SHORT: dict[str, str] = {
    "TensorrtExecutionProvider": "tensorrt",
    "CUDAExecutionProvider": "cuda",
    CPU: "cpu",
}


@dataclasses.dataclass(frozen=True)
class Observation:
    """What one ready pod's model metadata said (or why it could not be read)."""

    pod: str
    provider: str | None = None
    requested: str = ""
    fallback_reason: str = ""
    error: str = ""
    pending: bool = False
    """Asked, no answer yet (the reconciler runs again when it comes)."""

    @property
    def fell_back(self) -> bool:
        return bool(self.fallback_reason)


@dataclasses.dataclass(frozen=True)
class AcceleratorStatus:
    """The condition (status, reason, message) and the ``status.provider`` summary."""

    status: str
    reason: str
    message: str
    provider: str | None


def parse_metadata(pod: str, metadata: Mapping[str, Any]) -> Observation:
    """An :class:`Observation` from a V2 model metadata document (older servers: ``providers`` only)."""
    params = metadata.get("parameters") or {}
    if not isinstance(params, Mapping):
        params = {}
    provider = params.get(PARAM_PROVIDER)
    if not provider:
        listed = metadata.get("providers") or []
        provider = listed[0] if isinstance(listed, list) and listed else None
    if not provider:
        return Observation(pod, error="the model metadata names no execution provider")
    reason = str(params.get(PARAM_FALLBACK_REASON) or "")
    if str(params.get(PARAM_FALLBACK, "false")).lower() == "true" and not reason:
        reason = "the server reports a fallback without a reason"
    return Observation(pod, str(provider), str(params.get(PARAM_REQUESTED) or ""), reason)


def short_name(provider: str) -> str:
    return SHORT.get(provider, provider)


def summary(observations: Sequence[Observation]) -> str | None:
    """``status.provider``: the short provider names the ready pods run, most common first."""
    counts = Counter(short_name(o.provider) for o in observations if o.provider)
    if not counts:
        return None
    return ",".join(name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _pods(observations: Sequence[Observation], limit: int = 3) -> str:
    names = sorted(o.pod for o in observations)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def compute(
    observations: Sequence[Observation] | None,
    *,
    gpu: int,
    ready_pods: int,
    previous: Mapping[str, Any] | None = None,
) -> AcceleratorStatus:
    """The AcceleratorReady condition from the observations of the ready pods.

    ``observations`` is None when the operator does not probe (``MODELSERVE_PROBE_PROVIDERS=false``).
    ``previous`` is the ModelDeployment's current status: while the only news is "still asking"
    (an operator restart empties the probe's cache), the condition already written stands, so a
    restart rewrites nothing.
    """
    result = _compute(observations, gpu=gpu, ready_pods=ready_pods)
    if result.reason == "Probing" and previous:
        for cond in previous.get("conditions") or []:
            if isinstance(cond, Mapping) and cond.get("type") == CONDITION and cond.get("reason") not in (
                None, "", "NoReadyPods", "NotObserved"
            ):
                provider = previous.get("provider")
                return AcceleratorStatus(
                    str(cond.get("status")), str(cond.get("reason")), str(cond.get("message") or ""),
                    str(provider) if provider else None,
                )
    return result


def _compute(
    observations: Sequence[Observation] | None, *, gpu: int, ready_pods: int
) -> AcceleratorStatus:
    if observations is None:
        return AcceleratorStatus("Unknown", "NotObserved", "the operator does not read pod metadata", None)
    if ready_pods == 0 or not observations:
        return AcceleratorStatus("Unknown", "NoReadyPods", "no ready pod to ask for its provider", None)
    seen = [o for o in observations if o.provider]
    provider = summary(seen)
    on_cpu = [o for o in seen if o.provider == CPU] if gpu > 0 else []
    if on_cpu:
        first = sorted(on_cpu, key=lambda o: o.pod)[0]
        why = f": {first.fallback_reason}" if first.fallback_reason else ""
        return AcceleratorStatus(
            "False", "FellBackToCPU",
            f"{len(on_cpu)}/{len(observations)} ready pod(s) asked for a GPU but run on the CPU provider "
            f"({_pods(on_cpu)}){why}",
            provider,
        )
    fallen = [o for o in seen if o.fell_back]
    if fallen:
        first = sorted(fallen, key=lambda o: o.pod)[0]
        return AcceleratorStatus(
            "False", "ProviderFallback",
            f"{len(fallen)}/{len(observations)} ready pod(s) fell back to "
            f"{short_name(first.provider or CPU)} "
            f"({_pods(fallen)}): {first.fallback_reason}",
            provider,
        )
    failed = [o for o in observations if not o.provider and not o.pending]
    if failed:
        first = sorted(failed, key=lambda o: o.pod)[0]
        return AcceleratorStatus(
            "Unknown", "MetadataUnavailable",
            f"cannot read the model metadata of {_pods(failed)}: {first.error}",
            provider,
        )
    pending = [o for o in observations if o.pending]
    if pending:
        return AcceleratorStatus(
            "Unknown", "Probing", f"asking {_pods(pending)} for the execution provider it runs", provider
        )
    return AcceleratorStatus(
        "True", "ProviderActive",
        f"{len(seen)}/{len(seen)} ready pod(s) run {', '.join(sorted({o.provider or '' for o in seen}))}",
        provider,
    )
