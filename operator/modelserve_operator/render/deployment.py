"""The Deployment that runs the inference server pods.

Pod shape (issue 3):
- an init container ``modelserve fetch <uri> /models --check`` downloads the model into an
  emptyDir and checks it (``--sha256`` when given; ``envFrom`` the credentials Secret for s3; see
  :func:`fetch_args`); a ``pvc://`` model mounts the claim read-only at ``/models`` instead and
  has no init container;
- the server container runs ``modelserve serve --model <name>=/models/<file>`` with the spec's
  flags on fixed container ports (8080 HTTP, 8081 gRPC);
- GPUs are a limit on the GPU resource, with ``Exists NoSchedule`` tolerations of the GPU nodes'
  taint key (the operator's ``gpuTaintKey``, whatever resource is requested: MIG profiles and
  time-sliced replicas sit on nodes tainted ``nvidia.com/gpu``) and of the resource name;
- GPU pods get a TensorRT engine cache volume (emptyDir, or the PVC the spec names) and the
  accelerator flags; the startup probe allows the cold engine build on top of the model load;
- intra-op threads follow the CPU limit when the spec does not set them;
- startup/readiness/liveness probes on the V2 health endpoints, a ``preStop`` sleep so endpoints
  drop the pod before SIGTERM, and a grace period longer than preStop + drain;
- the Pod Security "restricted" profile, with a read-only root and emptyDirs for /tmp and cache.

``spec.replicas`` is set only when the replica count is fixed (or zero); when an HPA owns
scaling it is left out, so the operator's server-side apply never fights the HPA.
"""

from __future__ import annotations

import math
from typing import Any

import modelserve_contract as contract
from modelserve_operator.quantity import parse_quantity
from modelserve_operator.render.common import (
    GRPC_CONTAINER_PORT,
    HTTP_CONTAINER_PORT,
    LIVE_PATH,
    METRICS_PATH,
    MODELS_DIR,
    READY_PATH,
    Obj,
    RenderContext,
)
from modelserve_operator.render.labels import pod_labels

# The image's user (Dockerfile USER): the pods run as it, so files it owns stay readable.
RUN_AS_USER = contract.SERVER_UID
PRE_STOP_SECONDS = 5
# Extra grace beyond preStop + drain, for the process to exit after draining.
GRACE_MARGIN_SECONDS = 15
CACHE_DIR = "/var/cache/modelserve"
ENGINE_CACHE_DIR = "/var/cache/modelserve-engines"
ENGINE_CACHE_VOLUME = "engine-cache"
# Model load and warm-up without TensorRT: 180 x 5 s.
STARTUP_PERIOD_SECONDS = 5
STARTUP_BASE_SECONDS = 900
SERVER_CONTAINER = "server"
FETCH_CONTAINER = "fetch"

def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def termination_grace_seconds(ctx: RenderContext) -> int:
    return PRE_STOP_SECONDS + ctx.spec.runtime.drain_seconds + GRACE_MARGIN_SECONDS


def server_args(ctx: RenderContext) -> list[str]:
    """Arguments of ``modelserve`` in the server container (the CLI contract of issue 2)."""
    rt = ctx.spec.runtime
    args = [
        "serve",
        "--model",
        f"{ctx.model_name}={ctx.model_path}",
        "--host",
        "0.0.0.0",
        "--http-port",
        str(HTTP_CONTAINER_PORT),
        "--grpc-port",
        str(GRPC_CONTAINER_PORT if ctx.spec.service.grpc_port else 0),
        "--max-batch-size",
        str(rt.max_batch_size),
        "--max-batch-delay-ms",
        _number(rt.max_batch_delay_ms),
        "--providers",
        rt.providers,
    ]
    threads = intra_op_threads(ctx)
    if threads is not None:
        args += ["--intra-op-threads", str(threads)]
    args += ["--drain-seconds", str(rt.drain_seconds), "--log-format", ctx.config.log_format]
    if ctx.spec.resources.gpu > 0:
        args += accelerator_args(ctx)
    return args + list(rt.args)


def intra_op_threads(ctx: RenderContext) -> int | None:
    """``runtime.intraOpThreads``, else the whole CPUs of ``resources.limits.cpu`` (at least 1).

    None without either: the server then reads its cgroup quota (none without a limit) and leaves
    the choice to ONNX Runtime.
    """
    if ctx.spec.runtime.intra_op_threads is not None:
        return ctx.spec.runtime.intra_op_threads
    limit = ctx.spec.resources.limits.cpu
    if limit is None:
        return None
    return max(1, math.floor(parse_quantity(limit)))


def tensorrt_possible(ctx: RenderContext) -> bool:
    """A GPU pod whose providers may include TensorRT (``auto`` or named)."""
    providers = ctx.spec.runtime.providers
    return ctx.spec.resources.gpu > 0 and (providers == "auto" or "tensorrt" in providers.split(","))


def accelerator_args(ctx: RenderContext) -> list[str]:
    """The server's CUDA/TensorRT flags for a GPU pod (only what differs from the server's defaults)."""
    acc = ctx.spec.runtime.accelerator
    args = ["--trt-cache-dir", ENGINE_CACHE_DIR]
    if acc.fp16:
        args.append("--trt-fp16")
    if acc.int8:
        args.append("--trt-int8")
    for name, size in sorted(acc.dynamic_dims.items()):
        args += ["--trt-dim", f"{name}={size}"]
    if acc.gpu_mem_limit is not None:
        args += ["--cuda-mem-limit", str(int(parse_quantity(acc.gpu_mem_limit)))]
    if acc.arena_strategy == "SameAsRequested":
        args += ["--cuda-arena-strategy", "same-as-requested"]
    return args


def startup_failure_threshold(ctx: RenderContext) -> int:
    """Startup probe budget: the model load, plus the cold engine build when TensorRT may be used."""
    budget = STARTUP_BASE_SECONDS
    if tensorrt_possible(ctx):
        budget += ctx.spec.runtime.accelerator.engine_build_seconds
    return math.ceil(budget / STARTUP_PERIOD_SECONDS)


def _container_security() -> Obj:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _amounts(amounts: Any) -> Obj:
    out: Obj = {}
    if amounts.cpu is not None:
        out["cpu"] = str(amounts.cpu)
    if amounts.memory is not None:
        out["memory"] = str(amounts.memory)
    return out


def _server_resources(ctx: RenderContext) -> Obj:
    res = ctx.spec.resources
    requests = _amounts(res.requests)
    limits = _amounts(res.limits)
    limits.setdefault("memory", requests["memory"])
    if res.gpu > 0:
        # Extended resources cannot be overcommitted: the request equals the limit.
        limits[ctx.gpu_resource] = str(res.gpu)
        requests[ctx.gpu_resource] = str(res.gpu)
    out: Obj = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _env(ctx: RenderContext) -> list[Obj]:
    base: list[Obj] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": CACHE_DIR},
    ]
    user = [_clean(e.model_dump(by_alias=True, exclude_none=True)) for e in ctx.spec.runtime.env]
    names = {e["name"] for e in user}
    return [e for e in base if e["name"] not in names] + user


def _mounts(*, models_read_only: bool, engine_cache: bool = False) -> list[Obj]:
    # readOnly only when true: the API server drops a false one, and a field that never comes
    # back would look like drift to the reconciler's subset comparison.
    models: Obj = {"name": "models", "mountPath": MODELS_DIR}
    if models_read_only:
        models["readOnly"] = True
    mounts = [models, {"name": "tmp", "mountPath": "/tmp"}, {"name": "cache", "mountPath": CACHE_DIR}]
    if engine_cache:
        mounts.append({"name": ENGINE_CACHE_VOLUME, "mountPath": ENGINE_CACHE_DIR})
    return mounts


def _clean(obj: Obj) -> Obj:
    """A user-given object without None or "" values (the API server omits them when stored)."""
    return {k: v for k, v in obj.items() if v is not None and v != ""}


def fetch_args(ctx: RenderContext) -> list[str] | None:
    """Arguments of ``modelserve`` in the fetch init container; None for a pvc:// model (no fetch).

    ``--check`` always: a model that can never be served fails here with a one-line reason
    (``ModelInvalid`` in the status) instead of a crash-looping server, and on success the init
    container reports the signature that ``status.modelSignature`` shows. ``--require-batch-dim``
    only when ``runtime.requireBatching`` asks for it, not whenever ``maxBatchSize > 1``: the API
    server defaults maxBatchSize to 32, so every spec "asks" for batching, and the server serves a
    model without a dynamic first dimension correctly, one request at a time (batching there is
    opportunistic, and its warm-up at batch 2 is a stronger test than the declared shapes). Refusing
    such models by default would break every fixed-shape model. A pvc:// model is mounted, not
    fetched: the server runs the same checks at load and reports ``ModelInvalid:`` itself.
    """
    if ctx.pvc_claim:
        return None
    model = ctx.spec.model
    args = ["fetch", model.uri, MODELS_DIR]
    if model.sha256:
        args += ["--sha256", model.sha256]
    args.append("--check")
    if ctx.spec.runtime.require_batching:
        args.append("--require-batch-dim")
    return args


def _fetch_container(ctx: RenderContext) -> Obj:
    model = ctx.spec.model
    args = fetch_args(ctx) or []
    container: Obj = {
        "name": FETCH_CONTAINER,
        "image": ctx.fetch_image,
        "imagePullPolicy": ctx.config.image_pull_policy,
        "command": ["modelserve"],
        "args": args,
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "XDG_CACHE_HOME", "value": CACHE_DIR},
        ],
    }
    if model.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": model.credentials_secret}}]
    # Downloads stream to disk: a small request, but the same memory ceiling as the server.
    res = ctx.spec.resources
    memory_limit = res.limits.memory if res.limits.memory is not None else res.requests.memory
    request = "256Mi" if parse_quantity(memory_limit) >= parse_quantity("256Mi") else str(memory_limit)
    container["resources"] = {
        "requests": {"cpu": "100m", "memory": request},
        "limits": {"memory": str(memory_limit)},
    }
    container["securityContext"] = _container_security()
    container["volumeMounts"] = _mounts(models_read_only=False)
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return container


def _probe(path: str, *, period: int, failures: int, timeout: int = 3) -> Obj:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _server_container(ctx: RenderContext) -> Obj:
    ports: list[Obj] = [{"name": "http", "containerPort": HTTP_CONTAINER_PORT, "protocol": "TCP"}]
    if ctx.spec.service.grpc_port:
        ports.append({"name": "grpc", "containerPort": GRPC_CONTAINER_PORT, "protocol": "TCP"})
    return {
        "name": SERVER_CONTAINER,
        "image": ctx.server_image,
        "imagePullPolicy": ctx.config.image_pull_policy,
        "command": ["modelserve"],
        "args": server_args(ctx),
        "ports": ports,
        "env": _env(ctx),
        "resources": _server_resources(ctx),
        # Model load and warm-up may take minutes (large downloads happen in the init container),
        # TensorRT's cold engine build more.
        "startupProbe": _probe(
            LIVE_PATH, period=STARTUP_PERIOD_SECONDS, failures=startup_failure_threshold(ctx)
        ),
        "readinessProbe": _probe(READY_PATH, period=5, failures=2),
        "livenessProbe": _probe(LIVE_PATH, period=10, failures=3, timeout=5),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "securityContext": _container_security(),
        "volumeMounts": _mounts(models_read_only=True, engine_cache=ctx.spec.resources.gpu > 0),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _tolerations(ctx: RenderContext) -> list[Obj]:
    tolerations = [
        _clean(t.model_dump(by_alias=True, exclude_none=True)) for t in ctx.spec.scheduling.tolerations
    ]
    if ctx.spec.resources.gpu > 0:
        for key in gpu_toleration_keys(ctx.config.gpu_taint_key, ctx.gpu_resource):
            gpu = {"key": key, "operator": "Exists", "effect": "NoSchedule"}
            if gpu not in tolerations:
                tolerations.append(gpu)
    return tolerations


def gpu_toleration_keys(taint_key: str, resource: str) -> list[str]:
    """Taint keys a GPU pod tolerates: the GPU nodes' taint key, then the resource name.

    The node taint (``nvidia.com/gpu`` by default) is the same whatever extended resource the pod
    requests: a MIG profile (``nvidia.com/mig-1g.10gb``) or a time-sliced replica lives on a node
    tainted ``nvidia.com/gpu``, so tolerating only the resource name left MIG pods unschedulable.
    The taint key applies to resources of its own vendor domain (or to every resource when it has
    no domain); another vendor's resource (``amd.com/gpu``) keeps its own name as the key.
    """
    taint_domain, has_domain, _ = taint_key.rpartition("/")
    resource_domain = resource.rpartition("/")[0]
    keys = [taint_key] if (not has_domain or taint_domain == resource_domain) else []
    return list(dict.fromkeys([*keys, resource]))


def _volumes(ctx: RenderContext) -> list[Obj]:
    claim = ctx.pvc_claim
    models: Obj = (
        {"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        if claim
        else {"name": "models", "emptyDir": {}}
    )
    volumes = [
        models,
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    if ctx.spec.resources.gpu > 0:
        cache = ctx.spec.runtime.accelerator.engine_cache
        volumes.append(
            {"name": ENGINE_CACHE_VOLUME, "persistentVolumeClaim": {"claimName": cache.claim_name}}
            if cache.claim_name
            else {"name": ENGINE_CACHE_VOLUME, "emptyDir": {"sizeLimit": str(cache.size_limit)}}
        )
    return volumes


def _pod_annotations(ctx: RenderContext) -> dict[str, str]:
    return {
        **ctx.spec.pod_template.annotations,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(HTTP_CONTAINER_PORT),
        "prometheus.io/path": METRICS_PATH,
        "kubectl.kubernetes.io/default-container": SERVER_CONTAINER,
    }


def _pod_spec(ctx: RenderContext) -> Obj:
    sched = ctx.spec.scheduling
    pod: Obj = {}
    if ctx.spec.pod_template.service_account_name:
        pod["serviceAccountName"] = ctx.spec.pod_template.service_account_name
    # The server never talks to the API server.
    pod["automountServiceAccountToken"] = False
    pod["enableServiceLinks"] = False
    pod["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod["terminationGracePeriodSeconds"] = termination_grace_seconds(ctx)
    if not ctx.pvc_claim:
        pod["initContainers"] = [_fetch_container(ctx)]
    pod["containers"] = [_server_container(ctx)]
    pod["volumes"] = _volumes(ctx)
    if sched.node_selector:
        pod["nodeSelector"] = dict(sched.node_selector)
    tolerations = _tolerations(ctx)
    if tolerations:
        pod["tolerations"] = tolerations
    if sched.affinity:
        pod["affinity"] = dict(sched.affinity)
    if sched.priority_class_name:
        pod["priorityClassName"] = sched.priority_class_name
    if sched.runtime_class_name:
        pod["runtimeClassName"] = sched.runtime_class_name
    spread = sched.topology_spread
    if spread.enabled:
        pod["topologySpreadConstraints"] = [
            {
                "maxSkew": spread.max_skew,
                "topologyKey": spread.topology_key,
                "whenUnsatisfiable": spread.when_unsatisfiable,
                "labelSelector": {"matchLabels": ctx.selector},
            }
        ]
    if ctx.spec.pod_template.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in ctx.spec.pod_template.image_pull_secrets]
    return pod


def desired_replicas(ctx: RenderContext) -> int | None:
    """The Deployment's ``spec.replicas``: fixed count, 0 when scaled to zero, None under an HPA."""
    scaling = ctx.spec.scaling
    return None if scaling.autoscaled else scaling.min_replicas


def render_deployment(ctx: RenderContext) -> Obj:
    spec: Obj = {}
    replicas = desired_replicas(ctx)
    if replicas is not None:
        spec["replicas"] = replicas
    spec.update(
        {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": ctx.selector},
            # Never drop below the wanted capacity during a rollout (a GPU pod may take a while).
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": pod_labels(
                        ctx.name,
                        ctx.spec.model.version,
                        {**ctx.config.extra_pod_labels, **ctx.spec.pod_template.labels},
                    ),
                    "annotations": _pod_annotations(ctx),
                },
                "spec": _pod_spec(ctx),
            },
        }
    )
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": ctx.metadata(), "spec": spec}
