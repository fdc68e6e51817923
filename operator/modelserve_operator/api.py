"""The ModelDeployment API (``serving.modelserve.io/v1alpha1``): the one typed model.

Why one pydantic model: the CRD's OpenAPI schema (``crd.py``), the renderer's input
(``render/``), the reconciler's parsing and the README's reference are all derived from the
classes below, so a field cannot exist in one place and be missing in another. Every field
has a description (it becomes ``kubectl explain`` text) and, where one makes sense, a default
(it becomes the API server's default, so a stored object shows the value actually used).

Cross-field rules are written twice on purpose, in the same words: as CEL
(``x-kubernetes-validations``, enforced by the API server at ``kubectl apply``) and as pydantic
validators (enforced by :func:`parse_spec`, so objects that bypassed the API server's
validation, e.g. in kmock or from an older CRD, still fail with the same message). A test
checks that both reject the same specs.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

GROUP = "serving.modelserve.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAME = "md"
CRD_NAME = f"{PLURAL}.{GROUP}"

# URI schemes the fetcher understands (issue 2) plus pvc:// (mounted, never fetched).
URI_SCHEMES = ("file", "http", "https", "s3", "pvc")
# A plain absolute path is a file on the node image (the fetcher treats it like file://).
URI_PATTERN = r"^((file|https?|s3|pvc)://.+|/.+)$"
PVC_PATTERN = r"^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+$"
PVC_MESSAGE = "a pvc URI must read pvc://<claim>/<path inside the claim>, the claim a lower-case DNS name"
URI_MESSAGE = "model.uri must be an absolute path or a file://, http://, https://, s3:// or pvc:// URI"
# Kubernetes resource.Quantity, as controller-gen writes it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# An extended resource name such as nvidia.com/gpu or amd.com/gpu (domain-qualified).
EXTENDED_RESOURCE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)"
    r"/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
# metadata.name must be a DNS-1035 label: it names the Service (and every other child).
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 63

Quantity = int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)]
"""A Kubernetes quantity ("500m", "2Gi", 4): int-or-string in the CRD."""

IntOrPercent = Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(pattern=r"^[0-9]{1,3}%$")]
"""A pod count or a percentage ("50%"), as in a PodDisruptionBudget."""


_QUANTITY_SUFFIX: dict[str, Fraction] = {
    "": Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18), "Ki": Fraction(2**10), "Mi": Fraction(2**20),
    "Gi": Fraction(2**30), "Ti": Fraction(2**40), "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}  # fmt: skip
_QUANTITY_RE = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|([a-zA-Z]{0,2}))")


def parse_quantity(value: int | str) -> Fraction:
    """A Kubernetes quantity as an exact number ("500m" -> 1/2, "1Gi" -> 1073741824)."""
    if isinstance(value, int):
        return Fraction(value)
    match = _QUANTITY_RE.fullmatch(value)
    if not match or (match.group(3) or "") not in _QUANTITY_SUFFIX:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number = Fraction(match.group(1))
    if match.group(2):
        return number * Fraction(10) ** int(match.group(2)[1:])
    return number * _QUANTITY_SUFFIX[match.group(3) or ""]


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, JsonValue]:
    """One ``x-kubernetes-validations`` entry (``fieldPath`` points kubectl's error at a field)."""
    out: dict[str, JsonValue] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class _Model(BaseModel):
    """Base: camelCase aliases, unknown fields rejected, snake_case or camelCase accepted."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )


# --------------------------------------------------------------------------- model


class ModelSource(_Model):
    """Where the ONNX model comes from."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.uri.matches('{URI_PATTERN}')",
                    URI_MESSAGE,
                    ".uri",
                ),
                cel(
                    "!has(self.sha256) || !self.uri.startsWith('pvc://')",
                    "model.sha256 cannot be verified for a pvc:// model (it is mounted, not fetched)",
                    ".sha256",
                ),
                cel(
                    "!has(self.credentialsSecret) || self.uri.startsWith('s3://')",
                    "model.credentialsSecret is used for s3:// URIs only",
                    ".credentialsSecret",
                ),
                cel(
                    f"!self.uri.startsWith('pvc://') || self.uri.matches('{PVC_PATTERN}')",
                    PVC_MESSAGE,
                    ".uri",
                ),
            ]
        }
    )

    uri: str = Field(
        min_length=1,
        max_length=2048,
        description=(
            "Location of the .onnx file: file:///path or /path (inside the server image), "
            "http(s)://..., s3://bucket/key (credentials from credentialsSecret), or "
            "pvc://<claim>/<path> (the claim is mounted read-only instead of fetched)."
        ),
    )
    name: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Model name in the inference API (/v2/models/<name>); defaults to metadata.name.",
    )
    version: str = Field(
        default="1",
        max_length=63,
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Model version, recorded in the app.kubernetes.io/version label of the pods.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[a-f0-9]{64}$",
        description="Expected SHA-256 (hex) of the model file; a mismatch fails the fetch init container.",
    )
    credentials_secret: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description=(
            "Name of a Secret in the same namespace whose keys become environment variables of the "
            "fetch init container (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...)."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> ModelSource:
        if not re.search(URI_PATTERN, self.uri):
            raise ValueError(URI_MESSAGE)
        if self.sha256 is not None and self.uri.startswith("pvc://"):
            raise ValueError(
                "model.sha256 cannot be verified for a pvc:// model (it is mounted, not fetched)"
            )
        if self.credentials_secret is not None and not self.uri.startswith("s3://"):
            raise ValueError("model.credentialsSecret is used for s3:// URIs only")
        if self.uri.startswith("pvc://") and not re.search(PVC_PATTERN, self.uri):
            raise ValueError(PVC_MESSAGE)
        return self


# --------------------------------------------------------------------------- runtime


class EnvVar(_Model):
    """An environment variable of the server container (the Kubernetes EnvVar shape)."""

    name: str = Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class EngineCache(_Model):
    """Where the TensorRT engine and timing caches live (keyed by model, GPU and versions inside)."""

    claim_name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description=(
            "A PersistentVolumeClaim for the cache, shared by every replica and rollout (ReadWriteMany "
            "when pods run on several nodes); empty: an emptyDir, which survives container restarts "
            "but not the pod."
        ),
    )
    size_limit: Quantity = Field(default="4Gi", description="sizeLimit of the emptyDir cache.")


class Accelerator(_Model):
    """GPU execution-provider options (used when the server runs CUDA or TensorRT)."""

    fp16: bool = Field(default=False, description="Let TensorRT build FP16 kernels (opt-in).")
    int8: bool = Field(
        default=False, description="Let TensorRT build INT8 kernels (opt-in; for QDQ-quantised models)."
    )
    gpu_mem_limit: Quantity | None = Field(
        default=None,
        description=(
            "Most GPU memory the CUDA provider's arena may hold (e.g. 8Gi), so several models can share "
            "a GPU; no limit by default."
        ),
    )
    arena_strategy: Literal["NextPowerOfTwo", "SameAsRequested"] = Field(
        default="NextPowerOfTwo",
        description="How the CUDA arena grows; SameAsRequested wastes less memory on a shared GPU.",
    )
    dynamic_dims: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description=(
            "Sizes of symbolic non-batch input dimensions (name -> size): TensorRT's engines are built "
            "for batch 1..maxBatchSize at these sizes during warm-up, before the pod turns Ready."
        ),
    )
    engine_cache: EngineCache = Field(
        default_factory=EngineCache, description="TensorRT engine cache volume (an emptyDir by default)."
    )
    engine_build_seconds: int = Field(
        default=900,
        ge=0,
        le=7200,
        description=(
            "Longest a cold TensorRT engine build may take; the startup probe allows this much on top of "
            "the model load when TensorRT may be used."
        ),
    )


class Runtime(_Model):
    """How the inference server runs."""

    image: str | None = Field(
        default=None,
        description=(
            "Server image; defaults to the operator's configured CPU image, or its GPU image when "
            "resources.gpu > 0."
        ),
    )
    providers: str = Field(
        default="auto",
        pattern=r"^(auto|(tensorrt|cuda|cpu)(,(tensorrt|cuda|cpu))*)$",
        description=(
            "ONNX Runtime execution providers in preference order ('auto' takes TensorRT, CUDA, CPU "
            "as available); an explicitly named provider that cannot load keeps the pod unready."
        ),
    )
    intra_op_threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description=(
            "ONNX Runtime intra-op threads; defaults to the whole CPUs of resources.limits.cpu (at least 1), "
            "else the server's own reading of its cgroup CPU quota."
        ),
    )
    max_batch_size: int = Field(
        default=32, ge=1, le=4096, description="Largest dynamic batch the server forms."
    )
    max_batch_delay_ms: float = Field(
        default=2, ge=0, le=10000, description="Longest time a request waits for a batch to fill."
    )
    drain_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description=(
            "Seconds the server keeps serving in-flight requests after SIGTERM; the pod's "
            "termination grace period is set longer than this."
        ),
    )
    accelerator: Accelerator = Field(
        default_factory=Accelerator, description="CUDA and TensorRT options (GPU pods)."
    )
    args: list[str] = Field(
        default_factory=list, description="Extra arguments appended to `modelserve serve`."
    )
    env: list[EnvVar] = Field(
        default_factory=list, description="Extra environment variables of the server container."
    )


# --------------------------------------------------------------------------- resources


class ResourceRequests(_Model):
    """CPU and memory the scheduler reserves for the server container (Kubernetes quantities)."""

    cpu: Quantity = Field(default="500m", description="CPU request, e.g. 500m or 2.")
    memory: Quantity = Field(default="1Gi", description="Memory request, e.g. 512Mi or 4Gi.")


class ResourceLimits(_Model):
    """Upper bounds of the server container (Kubernetes quantities)."""

    cpu: Quantity | None = Field(
        default=None, description="CPU limit; none by default (throttling hurts latency)."
    )
    memory: Quantity | None = Field(
        default=None,
        description="Memory limit; defaults to the memory request (a pod that outgrows it is restarted).",
    )


class Resources(_Model):
    """Compute resources of each server pod."""

    gpu: int = Field(
        default=0,
        ge=0,
        le=64,
        description=(
            "GPUs per pod (0 = CPU only). Set as a limit on gpuResource, with a toleration of the "
            "GPU nodes' NoSchedule taint added automatically."
        ),
    )
    gpu_resource: str | None = Field(
        default=None,
        pattern=EXTENDED_RESOURCE_PATTERN,
        description=(
            "Extended resource name of the GPU (nvidia.com/gpu, amd.com/gpu, a MIG profile such as "
            "nvidia.com/mig-1g.10gb); defaults to the operator's configured GPU resource (nvidia.com/gpu)."
        ),
    )
    requests: ResourceRequests = Field(
        default_factory=ResourceRequests, description="CPU and memory requests of the server container."
    )
    limits: ResourceLimits = Field(
        default_factory=ResourceLimits,
        description="CPU and memory limits of the server container (no CPU limit by default).",
    )

    @model_validator(mode="after")
    def _check(self) -> Resources:
        for name in ("cpu", "memory"):
            request, limit = getattr(self.requests, name), getattr(self.limits, name)
            if limit is not None and parse_quantity(request) > parse_quantity(limit):
                raise ValueError(
                    f"resources.requests.{name} ({request}) must not exceed resources.limits.{name} ({limit})"
                )
        return self


# --------------------------------------------------------------------------- scaling

ScalingMetric = Literal["inflight", "rps", "cpu", "gpu"]


class Scaling(_Model):
    """Replica count and autoscaling. minReplicas == maxReplicas means a fixed size and no HPA."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "scaling.minReplicas must be less than or equal to scaling.maxReplicas "
                    "(kubectl scale sets minReplicas: raise maxReplicas first)",
                    ".minReplicas",
                ),
                cel(
                    "self.metric != 'cpu' || !has(self.target) || self.target <= 1000.0",
                    "scaling.target for metric cpu is a utilisation percentage (1-1000)",
                    ".target",
                ),
            ]
        }
    )

    min_replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description=(
            "Fewest replicas (the scale subresource's replicas: `kubectl scale` sets it). "
            "0 scales the model to zero: no pods, no HPA."
        ),
    )
    max_replicas: int = Field(default=1, ge=1, le=1000, description="Most replicas the HPA may create.")
    metric: ScalingMetric = Field(
        default="inflight",
        description=(
            "Autoscaling signal: inflight (average modelserve_inflight_requests per pod), rps "
            "(average requests per second per pod), cpu (utilisation % of the request), gpu "
            "(average GPU utilisation % per pod). The custom metrics come from prometheus-adapter."
        ),
    )
    target: float | None = Field(
        default=None,
        gt=0,
        description=("Target per pod for the metric; defaults: inflight 4, rps 20, cpu 70 (%), gpu 70 (%)."),
    )
    scale_down_stabilization_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="HPA scale-down stabilisation window: how long load must stay low before pods go.",
    )

    @model_validator(mode="after")
    def _check(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                "scaling.minReplicas must be less than or equal to scaling.maxReplicas "
                "(kubectl scale sets minReplicas: raise maxReplicas first)"
            )
        if self.metric == "cpu" and self.target is not None and self.target > 1000:
            raise ValueError("scaling.target for metric cpu is a utilisation percentage (1-1000)")
        return self

    @property
    def autoscaled(self) -> bool:
        """An HPA owns the replica count (a range, and not scaled to zero)."""
        return self.min_replicas >= 1 and self.max_replicas > self.min_replicas


# --------------------------------------------------------------------------- scheduling


class Toleration(_Model):
    """A Kubernetes toleration."""

    key: str | None = Field(default=None, description="Taint key; empty with operator Exists matches all.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated before eviction."
    )


class TopologySpread(_Model):
    """Spread of the pods across a topology domain (by default: across nodes)."""

    enabled: bool = Field(default=True, description="Add a topologySpreadConstraint for the pods.")
    topology_key: str = Field(
        default="kubernetes.io/hostname",
        min_length=1,
        description="Node label that defines the domains (e.g. kubernetes.io/hostname or a zone label).",
    )
    max_skew: int = Field(
        default=1, ge=1, description="Largest allowed difference in pod count between domains."
    )
    when_unsatisfiable: Literal["ScheduleAnyway", "DoNotSchedule"] = Field(
        default="ScheduleAnyway",
        description="ScheduleAnyway (a preference) or DoNotSchedule (a hard rule).",
    )


class Scheduling(_Model):
    """Where the pods may run."""

    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods require.")
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description=(
            "Tolerations; for GPU pods the operator adds '<GPU taint key> Exists NoSchedule' (the taint key "
            "is the operator's gpuTaintKey, nvidia.com/gpu by default, whatever gpuResource is requested)."
        ),
    )
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="A Kubernetes Affinity (nodeAffinity, podAffinity, podAntiAffinity), passed through.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: str | None = Field(default=None, description="PriorityClass of the pods.")
    runtime_class_name: str | None = Field(
        default=None, description="RuntimeClass of the pods (e.g. nvidia on clusters that need it)."
    )
    topology_spread: TopologySpread = Field(
        default_factory=TopologySpread, description="Spread of the pods across nodes (on by default)."
    )


# --------------------------------------------------------------------------- service


class Ingress(_Model):
    """An Ingress in front of the HTTP port."""

    host: str = Field(
        min_length=1,
        pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="Host name routed to the model.",
    )
    path: str = Field(default="/", pattern=r"^/.*$", description="Path prefix routed to the model.")
    class_name: str | None = Field(default=None, description="IngressClass; the cluster default when empty.")
    tls_secret: str | None = Field(
        default=None, description="Secret with the TLS certificate for host; plain HTTP when empty."
    )


class ServiceSpec(_Model):
    """The Service in front of the pods (and an optional Ingress)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.grpcPort == 0 || self.grpcPort != self.httpPort",
                    "service.httpPort and service.grpcPort must differ",
                    ".grpcPort",
                ),
            ]
        }
    )

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type."
    )
    http_port: int = Field(
        default=8080, ge=1, le=65535, description="Service port for HTTP (inference REST API and /metrics)."
    )
    grpc_port: int = Field(
        default=8081, ge=0, le=65535, description="Service port for gRPC; 0 disables gRPC."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations of the Service (e.g. for a load balancer)."
    )
    ingress: Ingress | None = Field(default=None, description="Optional Ingress for the HTTP port.")

    @model_validator(mode="after")
    def _check(self) -> ServiceSpec:
        if self.grpc_port != 0 and self.grpc_port == self.http_port:
            raise ValueError("service.httpPort and service.grpcPort must differ")
        return self


class Disruption(_Model):
    """Voluntary disruption budget (a PodDisruptionBudget exists when replicas can exceed 1)."""

    min_available: IntOrPercent = Field(
        default=1, description="Pods that must stay available during voluntary disruptions (count or %)."
    )


class Monitoring(_Model):
    """Prometheus scraping."""

    pod_monitor: bool = Field(
        default=True,
        description="Create a PodMonitor when the monitoring.coreos.com API exists in the cluster.",
    )


class PodTemplate(_Model):
    """Small overrides of the pod template."""

    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra pod annotations.")
    service_account_name: str | None = Field(
        default=None, description="ServiceAccount of the pods (e.g. for workload identity to S3)."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Names of Secrets used to pull the server image."
    )


# --------------------------------------------------------------------------- spec / status


class ModelDeploymentSpec(_Model):
    """Desired state of a ModelDeployment: one model served by a scaled set of server pods."""

    model: ModelSource = Field(description="The model to serve.")
    runtime: Runtime = Field(default_factory=Runtime, description="Server image and runtime options.")
    resources: Resources = Field(default_factory=Resources, description="CPU, memory and GPU of each pod.")
    scaling: Scaling = Field(default_factory=Scaling, description="Replica count and autoscaling.")
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Placement of the pods.")
    service: ServiceSpec = Field(default_factory=ServiceSpec, description="Service and optional Ingress.")
    disruption: Disruption = Field(default_factory=Disruption, description="PodDisruptionBudget settings.")
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Prometheus scraping.")
    pod_template: PodTemplate = Field(default_factory=PodTemplate, description="Pod template overrides.")


ConditionType = Literal["Ready", "Progressing", "Degraded", "AcceleratorReady"]


class Condition(_Model):
    """A status condition (the metav1.Condition shape)."""

    type: str = Field(min_length=1, description="Ready, Progressing, Degraded or AcceleratorReady.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str | None = Field(
        default=None,
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this condition was computed for."
    )


class ModelDeploymentStatus(_Model):
    """Observed state, written by the operator from the children."""

    observed_generation: int | None = Field(
        default=None, description="The metadata.generation the operator last reconciled."
    )
    model: str | None = Field(default=None, description="Name of the served model (the MODEL column).")
    replicas: int = Field(default=0, description="Pods of the current Deployment (scale subresource).")
    ready_replicas: int = Field(default=0, description="Pods that pass the readiness probe.")
    url: str | None = Field(default=None, description="Cluster-local inference URL of the model.")
    selector: str | None = Field(default=None, description="Label selector of the pods (scale subresource).")
    provider: str | None = Field(
        default=None,
        description=(
            "Execution provider the ready pods actually run (tensorrt, cuda, cpu; several joined by ',' "
            "when pods differ), from each pod's model metadata (the PROVIDER column)."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Progressing, Degraded and AcceleratorReady conditions."
    )


class ModelDeployment(_Model):
    """A ModelDeployment as typed data (metadata kept loose; the API server owns it)."""

    api_version: str = Field(default=API_VERSION, description="serving.modelserve.io/v1alpha1")
    kind: str = Field(default=KIND, description="ModelDeployment")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Object metadata.")
    spec: ModelDeploymentSpec = Field(description="Desired state.")
    status: ModelDeploymentStatus | None = Field(default=None, description="Observed state.")


def parse_spec(spec: Any) -> ModelDeploymentSpec:
    """Validate a ``spec`` mapping (camelCase, as stored) into the typed model.

    Raises ``pydantic.ValidationError`` with the same messages the API server's CEL rules use.
    """
    return ModelDeploymentSpec.model_validate(dict(spec or {}))


def dump_spec(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """The spec as the API server would store it (camelCase, None fields left out)."""
    return spec.model_dump(by_alias=True, exclude_none=True, mode="json")
