"""Operator configuration, shared by the renderer and the reconciler.

Why a separate module: rendering is a pure function of (ModelDeployment, configuration), and
the configuration must come from one place (environment variables set by the chart, or flags
that override them) so that the reconciler and the tests render the same objects.

Environment variables (all optional):

======================================  ===============================================
``MODELSERVE_WATCH_NAMESPACES``         comma-separated namespaces; empty = all namespaces
``MODELSERVE_SERVER_IMAGE``             default server image (CPU)
``MODELSERVE_SERVER_GPU_IMAGE``         default server image when ``resources.gpu > 0``
``MODELSERVE_FETCH_IMAGE``              image of the fetch init container (default: server image)
``MODELSERVE_GPU_RESOURCE``             default GPU resource name (``nvidia.com/gpu``)
``MODELSERVE_GPU_TAINT_KEY``            taint key of the GPU nodes GPU pods tolerate (``nvidia.com/gpu``)
``MODELSERVE_PROBE_PROVIDERS``          ``false``: do not read ready pods' model metadata (AcceleratorReady)
``MODELSERVE_LOG_FORMAT``               ``json`` or ``text`` (operator and server logs)
``MODELSERVE_IMAGE_PULL_POLICY``        pull policy of the server and fetch containers
======================================  ===============================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

DEFAULT_SERVER_IMAGE = "ghcr.io/modelserve/server:0.1.0"
DEFAULT_SERVER_GPU_IMAGE = "ghcr.io/modelserve/server-gpu:0.1.0"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
# The taint the NVIDIA GPU operator and most clusters put on GPU nodes: the same key for every
# extended resource of the node (nvidia.com/gpu, nvidia.com/mig-1g.10gb, time-sliced replicas...).
DEFAULT_GPU_TAINT_KEY = "nvidia.com/gpu"

LogFormat = Literal["json", "text"]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]

ENV_PREFIX = "MODELSERVE_"


@dataclass(frozen=True)
class OperatorConfig:
    """Everything the operator needs besides the ModelDeployment itself."""

    watch_namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means cluster-wide."""
    server_image: str = DEFAULT_SERVER_IMAGE
    """Server image for CPU models (``runtime.image`` overrides it)."""
    server_gpu_image: str = DEFAULT_SERVER_GPU_IMAGE
    """Server image for models with ``resources.gpu > 0``."""
    fetch_image: str | None = None
    """Image of the fetch init container; ``None`` = the pod's server image (it has ``modelserve``)."""
    gpu_resource: str = DEFAULT_GPU_RESOURCE
    """GPU resource used when a spec leaves ``resources.gpuResource`` at its default."""
    gpu_taint_key: str = DEFAULT_GPU_TAINT_KEY
    """Key of the NoSchedule taint on GPU nodes, tolerated by every pod with ``resources.gpu > 0``."""
    probe_providers: bool = True
    """Read each ready pod's model metadata for the provider it runs (the AcceleratorReady condition)."""
    log_format: LogFormat = "json"
    """Log format of the operator and of the server pods it creates."""
    image_pull_policy: PullPolicy = "IfNotPresent"
    """Pull policy of the containers the operator creates."""
    extra_pod_labels: Mapping[str, str] = field(default_factory=dict)
    """Labels added to every server pod (e.g. for network policies); empty by default."""

    @property
    def cluster_wide(self) -> bool:
        return not self.watch_namespaces

    def image_for(self, gpu: int, override: str | None = None) -> str:
        """The server image for a pod with ``gpu`` GPUs, unless the spec names one."""
        if override:
            return override
        return self.server_gpu_image if gpu > 0 else self.server_image

    def with_overrides(self, **changes: object) -> OperatorConfig:
        """A copy with some fields changed (flags over environment)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read ``MODELSERVE_*`` variables; unknown values fail loudly (a typo is not a default)."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name)
            return value.strip() if value is not None and value.strip() else None

        namespaces = tuple(ns.strip() for ns in (get("WATCH_NAMESPACES") or "").split(",") if ns.strip())
        log_format = get("LOG_FORMAT") or "json"
        if log_format not in ("json", "text"):
            raise ValueError(f"{ENV_PREFIX}LOG_FORMAT must be json or text, not {log_format!r}")
        pull = get("IMAGE_PULL_POLICY") or "IfNotPresent"
        if pull not in ("Always", "IfNotPresent", "Never"):
            raise ValueError(
                f"{ENV_PREFIX}IMAGE_PULL_POLICY must be Always, IfNotPresent or Never, not {pull!r}"
            )
        return cls(
            watch_namespaces=namespaces,
            server_image=get("SERVER_IMAGE") or DEFAULT_SERVER_IMAGE,
            server_gpu_image=get("SERVER_GPU_IMAGE") or DEFAULT_SERVER_GPU_IMAGE,
            fetch_image=get("FETCH_IMAGE"),
            gpu_resource=get("GPU_RESOURCE") or DEFAULT_GPU_RESOURCE,
            gpu_taint_key=get("GPU_TAINT_KEY") or DEFAULT_GPU_TAINT_KEY,
            probe_providers=(get("PROBE_PROVIDERS") or "true").lower() not in ("false", "0", "no"),
            log_format=log_format,  # type: ignore[arg-type]
            image_pull_policy=pull,  # type: ignore[arg-type]
        )
